"""What every ``landfall`` command group shares: the --config option and error exits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from landfall.config import Settings, load_settings
from landfall.errors import LandfallError

__all__ = ["ConfigOption", "cli_settings", "fail"]

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default: $LANDFALL_CONFIG, else the demo's)"),
]


def cli_settings(config: Path | None) -> Settings:
    """The settings a command runs with: --config, else $LANDFALL_CONFIG, else the demo's."""
    from landfall.demo import DEMO_CONFIG

    return load_settings(config or os.environ.get("LANDFALL_CONFIG") or DEMO_CONFIG)


def fail(exc: LandfallError) -> NoReturn:
    """Print a landfall error for a person and exit with status 2."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
