"""The ``landfall`` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
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
from landfall.dlq_cli import app as dlq_app
from landfall.errors import LandfallError
from landfall.model_cli import app as model_app

app = typer.Typer(
    help="landfall: event-driven batch prediction on Kafka, Spark and MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _configure_logging(name: str) -> None:
    from landfall.redact import install_redaction

    # Every log line and traceback of the process, whoever's handler writes it.
    install_redaction()
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


JsonOption = Annotated[
    bool, typer.Option("--json", help="JSON Lines for scripts: one object per step, then a summary")
]

ServicesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="run only this service (repeatable): validator, featurizer, predictor, reporter, api",
    ),
]


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
    from landfall.jaeger import LocalJaeger, jaeger_for_stack, with_local_jaeger
    from landfall.stack import ALL_SERVICES, LocalStack

    _configure_logging("up")
    jaeger_ui: str | None = None
    # Stopped after the services, so their last spans reach it (and at exit if `up` fails).
    started_jaeger: LocalJaeger | None = None
    # Until the supervision loop runs, SIGTERM interrupts like Ctrl-C does, so that a
    # stack stopped while starting stops what it started (see LocalStack.start).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
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
    code = 0
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
        code = 1
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


def _data_format(value: str | None) -> str | None:
    """Refuse a format the validator cannot read, before anything is published."""
    from landfall.contracts import DATA_FORMATS

    if value is not None and value not in DATA_FORMATS:
        raise typer.BadParameter(f"takes one of {', '.join(DATA_FORMATS)}, got {value!r}")
    return value


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


@app.command()
def publish(
    dataset: DatasetArgument,
    partition: Annotated[str, typer.Argument(help="YYYY-MM-DD or YYYY-MM-DDTHH")],
    path: Annotated[
        str | None, typer.Option(help="raw files, relative to the lake root (default: raw zone)")
    ] = None,
    data_format: Annotated[
        str | None,
        typer.Option(
            "--format", help="csv | parquet | json (default: config)", callback=_data_format
        ),
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
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Publish a data-landed event for every landed partition of a date range.

    Each partition is shown as it is published (a progress bar on a terminal, one line
    each otherwise, JSON Lines with --json), then a summary. The first partition that
    cannot be published stops the backfill; those before it stay published and counted.
    """
    from landfall.operations import BackfillStopped, plan_backfill
    from landfall.operations import backfill as publish_backfill
    from landfall.progress import Progress, progress_mode
    from landfall.telemetry import init_telemetry

    shown = Progress(progress_mode(as_json))
    try:
        settings = cli_settings(config)
        plan = plan_backfill(
            settings, dataset, first, last, hourly=hourly, missing_only=missing_only
        )
    except LandfallError as exc:
        fail(exc)
    skipped = len(plan.not_landed) + len(plan.already_scored)
    if plan.not_landed:
        shown.note(
            f"not landed, skipped: {', '.join(plan.not_landed)}",
            event="skipped", reason="not landed", partitions=plan.not_landed,
        )  # fmt: skip
    if plan.already_scored:
        shown.note(
            f"already scored, skipped: {', '.join(plan.already_scored)}",
            event="skipped", reason="already scored", partitions=plan.already_scored,
        )  # fmt: skip
    if dry_run or not plan.publish:
        shown.note(
            f"would publish {len(plan.publish)}: {', '.join(plan.publish) or '-'}",
            event="plan", publish=plan.publish,
        )  # fmt: skip
        shown.summary(
            f"would publish {len(plan.publish)}, skipped {skipped}",
            dry_run=True, published=0, would_publish=len(plan.publish), skipped=skipped, failed=0,
        )  # fmt: skip
        return
    total = len(plan.publish)

    def published_one(record: dict[str, object]) -> None:
        done = shown.counts["published"] + 1
        shown.step(
            "published",
            f"published data-landed {dataset}/{record['partition']}: run {record['run_id']} "
            f"({done}/{total})",
            partition=record["partition"], run_id=record["run_id"],
            batch_id=record["batch_id"],
        )  # fmt: skip

    stopped: BackfillStopped | None = None
    try:
        settings = publishing_settings(config, "backfill")
        init_telemetry(settings, "cli", metrics=False)
        with shown.running(total, f"backfill {dataset}"):
            publish_backfill(
                settings, plan, model_version=model_version, on_published=published_one
            )
    except BackfillStopped as exc:
        stopped = exc
        shown.step("failed", f"failed {dataset}/{exc.partition}: {exc.reason}",
                   partition=exc.partition, reason=exc.reason)  # fmt: skip
    except LandfallError as exc:
        fail(exc)
    published = shown.counts["published"]
    failed = 1 if stopped else 0
    remaining = stopped.remaining if stopped else []
    shown.summary(
        f"published {published}, skipped {skipped}, failed {failed}"
        + (f", not attempted {len(remaining)}" if remaining else ""),
        published=published, skipped=skipped, failed=failed, not_attempted=remaining,
    )  # fmt: skip
    if stopped is not None:
        fail(stopped)


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
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Move a stopped service's consumer group back so it processes those events again.

    One line per topic partition moved (JSON Lines with --json), then a summary. Every
    event the service had handled is redone as a new run of its batch.
    """
    from landfall.operations import replay as move_group
    from landfall.progress import Progress
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
    # The moves are made in one request: there is no partial state to show as it goes.
    shown = Progress("json" if as_json else "lines")
    verb = "would move" if dry_run else "moved"
    for move in moves:
        before = "nothing committed" if move.before is None else f"offset {move.before}"
        shown.step(
            "would_move" if dry_run else "moved",
            f"{verb} {move.topic}/{move.partition}: {before} -> offset {move.after}",
            topic=move.topic, partition=move.partition, before=move.before,
            after=move.after, end=move.end,
        )  # fmt: skip
    redo = sum(move.end - move.after for move in moves)
    shown.summary(
        f"{verb} {len(moves)} partition(s) of {service}; {redo} event(s) to "
        f"{'be redone' if dry_run else 'redo'}",
        service=service, dry_run=dry_run, partitions=len(moves), events_to_redo=redo,
    )  # fmt: skip


@app.command()
def groups(
    service: Annotated[
        list[str] | None, typer.Argument(help="the services to show (default: all four)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Show each service's consumer group: state, members, their partitions, and lag."""
    from landfall.consumer_groups import describe_service_groups
    from landfall.serve import SERVICE_NAMES

    try:
        settings = publishing_settings(config, "groups")
        unknown = set(service or []) - set(SERVICE_NAMES)
        if unknown:
            raise LandfallError(
                f"unknown service {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(SERVICE_NAMES)}"
            )
        statuses = describe_service_groups(settings, list(service or SERVICE_NAMES))
    except LandfallError as exc:
        fail(exc)
    for status in statuses:
        typer.echo(
            f"{status.service}: group {status.group} {status.state}, "
            f"{len(status.members)} member(s), lag {status.lag}"
        )
        for member in status.members:
            owned = ", ".join(member.partitions) or "no partitions"
            typer.echo(f"  {member.client_id} on {member.host}: {owned}")
        for lag in status.partitions:
            if lag.lag:
                typer.echo(
                    f"  {lag.topic}/{lag.partition}: committed {lag.committed}, "
                    f"end {lag.end}, lag {lag.lag}"
                )


@app.command()
def reconcile(
    dataset: DatasetArgument,
    first: Annotated[str, typer.Argument(help="the first partition, YYYY-MM-DD")],
    last: Annotated[str, typer.Argument(help="the last partition, included")],
    hourly: Annotated[
        bool, typer.Option(help="hourly partitions: YYYY-MM-DDTHH to YYYY-MM-DDTHH")
    ] = False,
    stuck_after: Annotated[
        float, typer.Option(help="minutes without progress after which a run is stuck")
    ] = 60.0,
    dry_run: Annotated[bool, typer.Option(help="show the plan, publish nothing")] = False,
    config: ConfigOption = None,
) -> None:
    """Re-drive every landed partition whose batch never finished, from where it stopped."""
    from datetime import timedelta

    from landfall.reconcile import plan_reconcile
    from landfall.reconcile import reconcile as publish_repairs
    from landfall.telemetry import init_telemetry

    try:
        settings = cli_settings(config)
        repairs = plan_reconcile(
            settings,
            dataset,
            first,
            last,
            hourly=hourly,
            stuck_after=timedelta(minutes=stuck_after),
        )
        for repair in repairs:
            typer.echo(f"{dataset}/{repair.partition}: {repair.found} -> {repair.action}")
        if dry_run or not repairs:
            done = f"would re-drive {len(repairs)} partition(s)" if dry_run else "nothing to do"
            typer.echo(done)
            return
        settings = publishing_settings(config, "reconcile")
        init_telemetry(settings, "cli", metrics=False)
        publish_repairs(settings, repairs)
    except LandfallError as exc:
        fail(exc)
    typer.echo(f"re-drove {len(repairs)} partition(s)")


@app.command()
def gc(
    keep_days: Annotated[
        float, typer.Option(help="keep every run committed within this many days")
    ] = 7.0,
    staging_hours: Annotated[
        float,
        typer.Option(help="remove uncommitted outputs nothing wrote to for this many hours"),
    ] = 24.0,
    dry_run: Annotated[
        bool, typer.Option(help="say what would be removed, remove nothing")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Remove old runs' outputs and what crashed writers left in the lake.

    Each partition keeps its committed output and its newest attempt, whatever their age.
    """
    from landfall.lake import Lake
    from landfall.lake_gc import collect_garbage

    try:
        settings = cli_settings(config)
        plan = collect_garbage(
            Lake.from_settings(settings),
            sorted(settings.datasets),
            keep_days=keep_days,
            staging_grace_hours=staging_hours,
            dry_run=dry_run,
        )
    except LandfallError as exc:
        fail(exc)
    except OSError as exc:  # the store: unreachable, refused
        fail(LandfallError(f"cannot sweep the lake {settings.lake_uri}: {exc}"))
    verb = "would remove" if dry_run else "removed"
    for rel in plan.old_runs:
        typer.echo(f"{verb} old run {rel}")
    for rel in plan.abandoned:
        typer.echo(f"{verb} abandoned {rel}")
    typer.echo(
        f"{verb} {len(plan.old_runs)} old run(s) and {len(plan.abandoned)} abandoned "
        f"output(s); kept {plan.kept}"
    )


app.add_typer(model_app, name="model")
app.add_typer(dlq_app, name="dlq")


def main() -> None:
    """Entry point of the ``landfall`` script."""
    app()


if __name__ == "__main__":
    main()
