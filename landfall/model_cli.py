"""``landfall model ...``: register, promote and list versions in the configured registry.

The registry is the one the config names (``mlflow.tracking_uri``/``registry_uri``,
by default the SQLite store under ``home``). Metrics given at registration are
recorded on the version's logged model, where the datasets' quality gates read them.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from landfall.cli_common import ConfigOption, cli_settings, fail
from landfall.errors import LandfallError

app = typer.Typer(
    help="Register, promote and list model versions in the configured MLflow registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _parse_metrics(pairs: list[str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            metrics[name.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(
                f"{pair!r} is not name=number", param_hint="--metric"
            ) from None
    return metrics


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(metrics.items())) or "-"


@app.command()
def register(
    source: Annotated[
        str,
        typer.Argument(help="runs:/<run_id>/<path>, models:/m-<model_id> or a local model dir"),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="the registered model's name")],
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="name=value, recorded on the version (repeatable)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Register a logged model or a local MLflow model directory as a new version."""
    from landfall.registry import register_model

    metrics = _parse_metrics(metric or [])
    try:
        summary = register_model(cli_settings(config), source, name, metrics=metrics)
    except LandfallError as exc:
        fail(exc)
    typer.echo(
        f"registered {summary.name} version {summary.version} "
        f"(metrics: {_format_metrics(summary.metrics)})"
    )


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="the registered model's name")],
    version: Annotated[str, typer.Argument(help="the version to point the alias at")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="e.g. champion, challenger")],
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            "-d",
            help="check this dataset's gate (repeatable); default: every dataset using "
            "NAME at ALIAS",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="move the alias even if the version fails a gate")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Point an alias at a version, if it passes the quality gate of the datasets using it."""
    from landfall.registry import promote_version

    try:
        summary, checks = promote_version(
            cli_settings(config), name, version, alias, force=force, datasets=dataset
        )
    except LandfallError as exc:
        fail(exc)
    for dataset_name, results in checks.items():
        verdict = "passes" if all(c.passed for c in results) else "FAILS (forced)"
        detail = "; ".join(c.explain() for c in results) or "no gate configured"
        typer.echo(f"gate of dataset {dataset_name}: {verdict}: {detail}")
    if not checks:
        typer.echo(f"no configured dataset uses {name}@{alias}: no gate checked")
    typer.echo(f"{name}@{alias} -> version {summary.version}")


@app.command("list")
def list_command(
    name: Annotated[str, typer.Argument(help="the registered model's name")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    config: ConfigOption = None,
) -> None:
    """Every version of a model: aliases, registered metrics, when it was registered."""
    from landfall.registry import list_versions

    try:
        versions = list_versions(cli_settings(config), name)
    except LandfallError as exc:
        fail(exc)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": v.name,
                        "version": v.version,
                        "aliases": list(v.aliases),
                        "metrics": v.metrics,
                        "registered_at": v.registered_at.isoformat(),
                        "run_id": v.run_id,
                        "source": v.source,
                        "status": v.status,
                    }
                    for v in versions
                ],
                indent=2,
            )
        )
        return
    typer.echo(f"{'version':>7}  {'aliases':<22} {'registered (UTC)':<19}  metrics")
    for v in versions:
        aliases = ",".join(v.aliases) or "-"
        registered = v.registered_at.strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{v.version:>7}  {aliases:<22} {registered:<19}  {_format_metrics(v.metrics)}")
