"""The ``landfall`` command line."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from landfall.cli_common import (
    ConfigOption,
    DatasetArgument,
    cli_settings,
    fail,
)
from landfall.dlq_cli import app as dlq_app
from landfall.errors import LandfallError

if TYPE_CHECKING:
    from landfall.config import Settings
    from landfall.stack import LocalStack
from landfall.model_cli import app as model_app
from landfall.operate_cli import app as operate_app
from landfall.schemas_cli import app as schemas_app

app = typer.Typer(
    help="landfall: event-driven batch prediction on Kafka, Spark and MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _configure_logging(name: str) -> None:
    from landfall.logs import configure_logging

    try:
        configure_logging(name)
    except LandfallError as exc:
        fail(exc)


@app.command()
def demo(
    config: ConfigOption = None,
    partition: Annotated[str, typer.Option(help="the date partition to land")] = "2026-11-01",
    timeout: Annotated[float, typer.Option(help="seconds to wait for the report")] = 600.0,
    on_running_stack: Annotated[
        bool,
        typer.Option(
            "--on-running-stack",
            help="the services already run on the configured broker (compose's seed): "
            "land, register and publish there, and wait for the report",
        ),
    ] = False,
) -> None:
    """Run one batch end to end on the local stack (Apache Kafka + services), then stop it."""
    from landfall.demo import run_demo

    _configure_logging("demo")
    try:
        settings = cli_settings(config)
        reported = run_demo(
            settings, partition=partition, timeout=timeout, on_running_stack=on_running_stack
        )
    except LandfallError as exc:
        fail(exc)
    if reported["status"] != "SUCCEEDED":
        raise typer.Exit(code=1)


def _stop_on_signal() -> threading.Event:
    """An event set by the first SIGTERM or SIGINT: a foreground loop's cue to stop in order."""
    requested = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return requested


def _scale(values: list[str] | None) -> dict[str, int]:
    scale = {}
    for value in values or []:
        name, sep, count = value.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise typer.BadParameter(f"takes SERVICE=N with N >= 1, got {value!r}")
        scale[name] = int(count)
    return scale


ServicesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="run only this service (repeatable): validator, featurizer, predictor, reporter, api",
    ),
]


def _chosen_services(only: list[str] | None, without: list[str] | None) -> tuple[str, ...]:
    """The services `up` runs: --only these, or every one --without those."""
    from landfall.stack import ALL_SERVICES

    if only and without:
        raise LandfallError("say --only or --without, not both")
    unknown = sorted(set(without or []) - set(ALL_SERVICES))
    if unknown:
        raise LandfallError(
            f"unknown service {', '.join(unknown)}; choose from {', '.join(ALL_SERVICES)}"
        )
    services = tuple(only or [s for s in ALL_SERVICES if s not in (without or [])])
    if not services:
        raise LandfallError("--without leaves no service to run")
    return services


def _say_where_everything_is(stack: LocalStack, live: Settings, jaeger_ui: str | None) -> None:
    where = f"broker {live.kafka.bootstrap}"
    if stack.broker is not None:
        where += f" (Apache Kafka, log in {stack.broker.data_dir})"
    typer.echo(f"landfall is up: {where}; services {', '.join(stack.processes)}")
    typer.echo(f"logs in {stack.log_dir}")
    if stack.api_url:
        typer.echo(f"status page and job API: {stack.api_url}/ (OpenAPI at /docs)")
        if stack.api_token_file is not None:
            typer.echo(
                f"API operator token: in {stack.api_token_file} (`landfall api-token` prints it)"
            )
    for name, url in stack.metrics_urls().items():
        typer.echo(f"metrics of {name}: {url}")
    if live.telemetry.trace_dir is not None:
        typer.echo(f"traces: {live.telemetry.trace_dir}/<service>.jsonl")
    if jaeger_ui:
        typer.echo(f"Jaeger: {jaeger_ui}/ (query API at {jaeger_ui}/api/traces)")
    if live.telemetry.otlp_endpoint:
        typer.echo(f"spans exported over OTLP to {live.telemetry.otlp_endpoint}")
    typer.echo("stop one service with: landfall stop SERVICE; start it again with: "
               "landfall up --only SERVICE")  # fmt: skip


def _supervise_until_stopped(stack: LocalStack, stop_requested: threading.Event) -> int:
    """Restart crashed services until asked to stop; 1 if `up` gave up on one."""
    try:
        while not stop_requested.is_set():
            for line in stack.supervise():
                typer.echo(line)
            if not stack.running and stack.broker is None:
                typer.echo("every service has stopped")
                break
            time.sleep(0.5)
    except LandfallError as exc:
        # Only a service that kept crashing ends up here: `up` gave up on it.
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        return 1
    return 0


@app.command()
def up(
    only: ServicesOption = None,
    without: Annotated[
        list[str] | None, typer.Option("--without", help="run every service but this (repeatable)")
    ] = None,
    scale: Annotated[
        list[str] | None,
        typer.Option(help="run N instances of a service in its consumer group: SERVICE=N"),
    ] = None,
    config: ConfigOption = None,
    jaeger: Annotated[
        bool,
        typer.Option(
            "--jaeger",
            help="run a local Jaeger (`make jaeger` builds it); every service sends spans to it",
        ),
    ] = False,
) -> None:
    """Run the services (and Apache Kafka, unless one runs) in the foreground until Ctrl-C.

    A service stopped with `landfall stop` stays stopped while the others keep running;
    a service that crashes is restarted with a growing delay, and `up` gives up (exit 1)
    on one that keeps crashing. Ctrl-C or SIGTERM stops every service, each stage in
    flight getting runner.shutdown_grace_s to finish; a second one abandons them at once.
    """
    # Long: its typer options take a third of its lines.
    from landfall.jaeger import LocalJaeger, jaeger_for_stack, with_local_jaeger
    from landfall.stack import LocalStack

    _configure_logging("up")
    jaeger_ui: str | None = None
    # Stopped after the services, so their last spans reach it (and at exit if `up` fails).
    started_jaeger: LocalJaeger | None = None
    # Until the supervision loop runs, SIGTERM interrupts like Ctrl-C does, so that a
    # stack stopped while starting stops what it started (see LocalStack.start).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        services = _chosen_services(only, without)
        settings = cli_settings(config)
        if jaeger:
            settings, jaeger_ui, started_jaeger = jaeger_for_stack(settings)
        else:  # a Jaeger that `up --jaeger` runs for this home gets these services' spans too
            settings = with_local_jaeger(settings)
        stack = LocalStack(settings, services=services, scale=_scale(scale))
        live = stack.start()
    except LandfallError as exc:
        fail(exc)
    except KeyboardInterrupt:
        typer.echo("interrupted while starting; what had started is stopped", err=True)
        raise typer.Exit(code=130) from None
    # From here on a signal asks the loop to stop the stack in order.
    stop_requested = _stop_on_signal()
    _say_where_everything_is(stack, live, jaeger_ui)
    code = 0
    try:
        code = _supervise_until_stopped(stack, stop_requested)
    finally:
        typer.echo("stopping...")
        # A second Ctrl-C or SIGTERM: the services abandon their stages in flight now.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stack.hurry())
        stack.stop()
        if started_jaeger is not None:
            started_jaeger.stop()
    if code:
        raise typer.Exit(code=code)


@app.command()
def broker(config: ConfigOption = None) -> None:
    """Run the local Apache Kafka alone, in the foreground until Ctrl-C."""
    from landfall.broker import LocalKafka, broker_dir

    _configure_logging("broker")
    try:
        settings = cli_settings(config)
        if settings.kafka.bootstrap:
            raise LandfallError(
                f"kafka.bootstrap is set ({settings.kafka.bootstrap}): that broker is used, "
                "none is started here"
            )
        local = settings.kafka.local
        kafka = LocalKafka(
            broker_dir(settings.home), preferred_port=local.port, heap_mb=local.heap_mb
        )
    except LandfallError as exc:
        fail(exc)
    started = time.monotonic()
    # SIGTERM while the broker starts: stop it as Ctrl-C would, not leave it running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        kafka.start()
    except LandfallError as exc:
        fail(exc)
    except KeyboardInterrupt:
        kafka.stop()
        typer.echo("interrupted while starting; the broker is stopped", err=True)
        raise typer.Exit(code=130) from None
    stop_requested = _stop_on_signal()
    typer.echo(
        f"Apache Kafka on {kafka.bootstrap} (pid {kafka.pid}, ready in "
        f"{time.monotonic() - started:.1f}s), log in {kafka.data_dir}"
    )
    typer.echo("landfall commands with the same config find it; Ctrl-C stops it")
    try:
        while not stop_requested.is_set() and kafka.pid is not None and kafka.running:
            time.sleep(0.5)
    finally:
        code = kafka.exit_code
        kafka.stop()
    if code not in (None, 0):
        typer.secho(f"Kafka exited with code {code}:\n{kafka.log_tail()}", err=True)
        raise typer.Exit(code=1)


@app.command()
def stop(
    services: Annotated[
        list[str], typer.Argument(help="validator | featurizer | predictor | reporter | api")
    ],
    config: ConfigOption = None,
) -> None:
    """Stop the named services started by `landfall up`; the others keep running."""
    from landfall.stack import stop_services

    try:
        stopped = stop_services(cli_settings(config), services)
    except LandfallError as exc:
        fail(exc)
    if not stopped:
        typer.echo(f"none of {', '.join(services)} is running")
    for name in stopped:
        typer.echo(f"stopped {name}")


@app.command()
def ps(config: ConfigOption = None) -> None:
    """Show the local broker and the services running for this home."""
    from landfall.broker import broker_dir, running_broker
    from landfall.stack import running_services

    try:
        settings = cli_settings(config)
    except LandfallError as exc:
        fail(exc)
    if settings.kafka.bootstrap:
        typer.echo(f"broker   {settings.kafka.bootstrap} (configured)")
    else:
        local = running_broker(broker_dir(settings.home))
        state = f"{local.bootstrap} pid {local.pid}" if local else "not running"
        typer.echo(f"broker   {state}")
    running = running_services(settings)
    for name, pid in running.items():
        typer.echo(f"{name:<12} pid {pid}")
    if not running:
        typer.echo("no service is running for this home")


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


@app.command("api-token")
def api_token(config: ConfigOption = None) -> None:
    """Print the job API's generated operator token (made now if it does not exist yet).

    For scripts: curl -H "Authorization: Bearer $(landfall api-token)" .../batches.
    Only when no token is configured (api.tokens, api.token_file): then yours are used.
    """
    from landfall.api_tokens import ensure_generated_token, read_token_file

    try:
        settings = cli_settings(config)
        path = ensure_generated_token(settings)
        if path is None:
            raise LandfallError(
                "API tokens are configured (api.tokens or api.token_file); landfall generates none"
            )
        typer.echo(read_token_file(path)[0].token.get_secret_value())
    except LandfallError as exc:
        fail(exc)


@app.command()
def check(
    dataset: DatasetArgument,
    partition: Annotated[
        str | None, typer.Option(help="a landed partition to sample (YYYY-MM-DD[THH])")
    ] = None,
    sample: Annotated[
        Path | None, typer.Option(help="a sample file instead (.csv, .parquet, .json)")
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="at most this many rows are checked")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="the findings as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Check a dataset before its first event: data, rules, features, model, signature."""
    import json

    from rich.console import Console
    from rich.table import Table

    from landfall.check import check_dataset
    from landfall.redact import redact, redact_tree

    _configure_logging("check")
    if (partition is None) == (sample is None):
        raise typer.BadParameter("give --partition or --sample (one of them)")
    try:
        settings = cli_settings(config)
        report = check_dataset(settings, dataset, partition=partition, sample=sample, rows=rows)
    except LandfallError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(redact_tree(report.as_dict()), indent=2, default=str))
        raise typer.Exit(code=0 if report.ok else 1)
    console = Console(highlight=False)
    table = Table(title=f"landfall check {dataset}: {report.source}")
    for heading in ("step", "", "what would happen"):
        table.add_column(heading, overflow="fold")
    for finding in report.findings:
        mark = "[green]ok[/]" if finding.ok else "[red]PROBLEM[/]"
        table.add_row(finding.step, mark, redact(finding.detail))
    console.print(table)
    if report.failures_by_rule:
        console.print(
            "rows failing each rule: "
            + ", ".join(f"{rule} {count}" for rule, count in report.failures_by_rule.items())
        )
    if report.features:
        console.print(f"features: {', '.join(report.features)}")
    for row in report.scored:
        console.print(f"scored: {redact(str(row))}")
    console.print("[green]ready[/]" if report.ok else "[red]not ready: see the problems above[/]")
    raise typer.Exit(code=0 if report.ok else 1)


# The operators' commands (publish, backfill, replay, groups, reconcile, gc), at the top level.
app.add_typer(operate_app)
app.add_typer(model_app, name="model")
app.add_typer(dlq_app, name="dlq")
app.add_typer(schemas_app, name="schemas")


def main() -> None:
    """Entry point of the ``landfall`` script."""
    app()


if __name__ == "__main__":
    main()
