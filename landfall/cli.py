"""The ``landfall`` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from landfall.cli_common import (
    ConfigOption,
    DatasetArgument,
    ModelVersionOption,
    cli_settings,
    fail,
    publishing_settings,
)
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
    dataset: DatasetArgument,
    partition: Annotated[str, typer.Argument(help="YYYY-MM-DD or YYYY-MM-DDTHH")],
    path: Annotated[
        str | None, typer.Option(help="raw files, relative to the lake root (default: raw zone)")
    ] = None,
    data_format: Annotated[
        str | None, typer.Option("--format", help="csv | parquet | json (default: config)")
    ] = None,
    model_version: ModelVersionOption = None,
    config: ConfigOption = None,
) -> None:
    """Publish a data-landed event for a dataset partition, as an upstream system would."""
    from landfall.events import publish_data_landed
    from landfall.telemetry import init_telemetry

    try:
        settings = publishing_settings(config, "publish")
        settings.dataset(dataset)
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


@app.command()
def backfill(
    dataset: DatasetArgument,
    first: Annotated[str, typer.Argument(help="the first partition, YYYY-MM-DD")],
    last: Annotated[str, typer.Argument(help="the last partition, included")],
    hourly: Annotated[
        bool, typer.Option(help="hourly partitions: YYYY-MM-DDTHH to YYYY-MM-DDTHH")
    ] = False,
    missing_only: Annotated[
        bool, typer.Option(help="skip partitions whose predictions are already committed")
    ] = False,
    model_version: ModelVersionOption = None,
    dry_run: Annotated[
        bool, typer.Option(help="say what would be published, publish nothing")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Publish a data-landed event for every landed partition of a date range."""
    from landfall.operations import backfill as publish_backfill
    from landfall.operations import plan_backfill
    from landfall.telemetry import init_telemetry

    try:
        settings = cli_settings(config)
        plan = plan_backfill(
            settings, dataset, first, last, hourly=hourly, missing_only=missing_only
        )
        if plan.not_landed:
            typer.echo(f"not landed, skipped: {', '.join(plan.not_landed)}")
        if plan.already_scored:
            typer.echo(f"already scored, skipped: {', '.join(plan.already_scored)}")
        if dry_run or not plan.publish:
            typer.echo(f"would publish {len(plan.publish)}: {', '.join(plan.publish) or '-'}")
            return
        settings = publishing_settings(config, "backfill")
        init_telemetry(settings, "cli", metrics=False)
        published = publish_backfill(settings, plan, model_version=model_version)
    except LandfallError as exc:
        fail(exc)
    for record in published:
        typer.echo(f"published data-landed {dataset}/{record['partition']}: run {record['run_id']}")


@app.command()
def replay(
    service: Annotated[str, typer.Argument(help="validator | featurizer | predictor | reporter")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="go back to the start of each topic")
    ] = False,
    offset: Annotated[
        int | None, typer.Option(help="go back to this offset in every partition")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(help="go back to the first event at or after this time (UTC if no zone)"),
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option(help="only this topic (repeatable; default: all it read)")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="show the moves, make none")] = False,
    config: ConfigOption = None,
) -> None:
    """Move a stopped service's consumer group back so it processes those events again."""
    from landfall.operations import replay as move_group
    from landfall.serve import SERVICE_NAMES

    try:
        settings = publishing_settings(config, "replay")
        if service not in SERVICE_NAMES:
            raise LandfallError(
                f"unknown service {service!r}; choose from {', '.join(SERVICE_NAMES)}"
            )
        if sum(x is not None and x is not False for x in (from_beginning, offset, since)) != 1:
            raise LandfallError("say where to go back to: --from-beginning, --offset or --since")
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        moves = move_group(
            settings,
            service,
            offset=0 if from_beginning else offset,
            since=since,
            topics=topic or None,
            dry_run=dry_run,
        )
    except LandfallError as exc:
        fail(exc)
    verb = "would move" if dry_run else "moved"
    for move in moves:
        before = "nothing committed" if move.before is None else f"offset {move.before}"
        typer.echo(f"{verb} {move.topic}/{move.partition}: {before} -> offset {move.after}")


app.add_typer(model_app, name="model")


def main() -> None:
    """Entry point of the ``landfall`` script."""
    app()


if __name__ == "__main__":
    main()
