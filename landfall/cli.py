"""The ``landfall`` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Annotated

import typer

from landfall.cli_common import ConfigOption, cli_settings, fail
from landfall.errors import LandfallError
from landfall.model_cli import app as model_app

app = typer.Typer(
    help="landfall: event-driven batch prediction on Kafka, Spark and MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _configure_logging(name: str) -> None:
    logging.basicConfig(
        level=os.environ.get("LANDFALL_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def demo(
    config: ConfigOption = None,
    partition: Annotated[str, typer.Option(help="the date partition to land")] = "2026-11-01",
    timeout: Annotated[float, typer.Option(help="seconds to wait for the report")] = 600.0,
) -> None:
    """Run one batch end to end on the embedded stack, print what happened, stop everything."""
    from landfall.demo import run_demo

    _configure_logging("demo")
    try:
        settings = cli_settings(config)
        reported = run_demo(settings, partition=partition, timeout=timeout)
    except LandfallError as exc:
        fail(exc)
    if reported["status"] != "SUCCEEDED":
        raise typer.Exit(code=1)


@app.command()
def up(config: ConfigOption = None) -> None:
    """Run the embedded stack (broker + four services) in the foreground until Ctrl-C."""
    from landfall.stack import LocalStack

    _configure_logging("up")
    try:
        settings = cli_settings(config)
        stack = LocalStack(settings)
        live = stack.start()
    except LandfallError as exc:
        fail(exc)
    typer.echo(f"landfall is up: broker {live.kafka.bootstrap}, logs in {stack.log_dir}")
    if stack.api_url:
        typer.echo(f"status page and job API: {stack.api_url}/ (OpenAPI at /docs)")
    for name, url in stack.metrics_urls().items():
        typer.echo(f"metrics of {name}: {url}")
    if live.telemetry.trace_dir is not None:
        typer.echo(f"traces: {live.telemetry.trace_dir}/<service>.jsonl")
    typer.echo(
        f"publish with: LANDFALL_KAFKA_BOOTSTRAP={live.kafka.bootstrap} landfall publish ..."
    )
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stopping:
            stack.check_alive()
            time.sleep(1)
    except LandfallError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
    finally:
        typer.echo("stopping...")
        stack.stop()


@app.command()
def serve(
    service: Annotated[
        str, typer.Argument(help="validator | featurizer | predictor | reporter | api")
    ],
    config: ConfigOption = None,
) -> None:
    """Run one stage service against the configured broker until SIGTERM."""
    from landfall.serve import serve as serve_service

    _configure_logging(service)
    try:
        settings = cli_settings(config)
        serve_service(service, settings)
    except LandfallError as exc:
        fail(exc)


@app.command()
def publish(
    dataset: Annotated[str, typer.Argument(help="the dataset, as named in the config")],
    partition: Annotated[str, typer.Argument(help="YYYY-MM-DD or YYYY-MM-DDTHH")],
    path: Annotated[
        str | None, typer.Option(help="raw files, relative to the lake root (default: raw zone)")
    ] = None,
    data_format: Annotated[
        str | None, typer.Option("--format", help="csv | parquet | json (default: config)")
    ] = None,
    model_version: Annotated[
        str | None,
        typer.Option(
            "--model-version",
            help="score this batch with this version number of the dataset's model "
            "(replays, backfills; the quality gate still applies)",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Publish a data-landed event for a dataset partition, as an upstream system would."""
    from landfall.events import publish_data_landed
    from landfall.telemetry import init_telemetry

    try:
        settings = cli_settings(config)
        settings.dataset(dataset)
        if not settings.kafka.bootstrap:
            raise LandfallError("publish needs a broker: set LANDFALL_KAFKA_BOOTSTRAP")
        if model_version is not None and not model_version.isdigit():
            raise LandfallError(f"--model-version takes a version number, got {model_version!r}")
        init_telemetry(settings, "cli", metrics=False)  # the run's trace starts here
        record = publish_data_landed(
            settings,
            dataset,
            partition,
            path=path,
            data_format=data_format,
            model_version=model_version,
        )
    except LandfallError as exc:
        fail(exc)
    typer.echo(
        f"published data-landed {dataset}/{partition}: batch {record['batch_id']} "
        f"run {record['run_id']}"
    )


app.add_typer(model_app, name="model")


def main() -> None:
    """Entry point of the ``landfall`` script."""
    app()


if __name__ == "__main__":
    main()
