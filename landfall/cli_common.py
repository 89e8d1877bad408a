"""What every ``landfall`` command group shares: the --config option and error exits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from landfall.config import Settings, load_settings
from landfall.errors import LandfallError
from landfall.redact import install_redaction, redact

__all__ = [
    "ConfigOption",
    "DatasetArgument",
    "ModelVersionOption",
    "cli_settings",
    "fail",
    "publishing_settings",
]

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config (default: $LANDFALL_CONFIG, else the demo's)"),
]
DatasetArgument = Annotated[str, typer.Argument(help="the dataset, as named in the config")]


def _version_number(value: str | None) -> str | None:
    if value is not None and not value.isdigit():
        raise typer.BadParameter(f"takes a version number, got {value!r}")
    return value


ModelVersionOption = Annotated[
    str | None,
    typer.Option(
        "--model-version",
        help="score with this version number of the dataset's model "
        "(replays, backfills; the quality gate still applies)",
        callback=_version_number,
    ),
]


def cli_settings(config: Path | None) -> Settings:
    """The settings a command runs with: --config, else $LANDFALL_CONFIG, else the demo's."""
    from landfall.demo import DEMO_CONFIG

    # Whatever the command logs or dies of from here on is redacted (the secrets are
    # registered as the settings load).
    install_redaction()
    return load_settings(config or os.environ.get("LANDFALL_CONFIG") or DEMO_CONFIG)


def publishing_settings(config: Path | None, command: str) -> Settings:
    """The settings of a command that talks to the broker: the configured one or the local one."""
    from landfall.jaeger import with_local_jaeger
    from landfall.stack import with_local_broker

    # Its spans (the root of a run's trace) go where the stack's go: a local Jaeger too.
    settings = with_local_jaeger(cli_settings(config))
    found = with_local_broker(settings)
    if found is None:
        raise LandfallError(
            f"{command} needs a broker: none is configured (kafka.bootstrap, "
            "LANDFALL_KAFKA_BOOTSTRAP) and no local one runs for this home "
            "(start it with `landfall up` or `landfall broker`)"
        )
    return found


def fail(exc: LandfallError) -> NoReturn:
    """Print a landfall error for a person and exit with status 2."""
    typer.secho(f"error: {redact(str(exc))}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
