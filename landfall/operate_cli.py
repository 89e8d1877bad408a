"""The operators' commands: publish, backfill, replay, groups, reconcile, gc.

They act on a running (or stopped) pipeline through the broker, the lake and the
results database; `landfall` (landfall/cli.py) shows them at its top level.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from landfall.operations import BackfillPlan, BackfillStopped
    from landfall.progress import Progress

app = typer.Typer()

# A range of partitions, as backfill and reconcile take it.
FirstPartition = Annotated[str, typer.Argument(help="the first partition, YYYY-MM-DD")]
LastPartition = Annotated[str, typer.Argument(help="the last partition, included")]
HourlyOption = Annotated[
    bool, typer.Option(help="hourly partitions: YYYY-MM-DDTHH to YYYY-MM-DDTHH")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="JSON Lines for scripts: one object per step, then a summary")
]


def _data_format(value: str | None) -> str | None:
    """Refuse a format the validator cannot read, before anything is published."""
    from landfall.contracts import DATA_FORMATS

    if value is not None and value not in DATA_FORMATS:
        raise typer.BadParameter(f"takes one of {', '.join(DATA_FORMATS)}, got {value!r}")
    return value


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


def _said_what_would_happen(
    shown: Progress, plan: BackfillPlan, skipped: int, dry_run: bool
) -> bool:
    """Say which partitions are skipped and why; True if nothing is to be published."""
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
    if plan.publish and not dry_run:
        return False
    shown.note(
        f"would publish {len(plan.publish)}: {', '.join(plan.publish) or '-'}",
        event="plan", publish=plan.publish,
    )  # fmt: skip
    shown.summary(
        f"would publish {len(plan.publish)}, skipped {skipped}",
        dry_run=True, published=0, would_publish=len(plan.publish), skipped=skipped, failed=0,
    )  # fmt: skip
    return True


def _publish_showing_each(
    shown: Progress,
    config: Path | None,
    dataset: str,
    plan: BackfillPlan,
    model_version: str | None,
) -> BackfillStopped | None:
    """Publish the plan's partitions, each shown as it goes; what stopped it, if anything."""
    from landfall.operations import BackfillStopped
    from landfall.operations import backfill as publish_backfill
    from landfall.telemetry import init_telemetry

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

    try:
        settings = publishing_settings(config, "backfill")
        init_telemetry(settings, "cli", metrics=False)
        with shown.running(total, f"backfill {dataset}"):
            publish_backfill(
                settings, plan, model_version=model_version, on_published=published_one
            )
    except BackfillStopped as exc:
        shown.step("failed", f"failed {dataset}/{exc.partition}: {exc.reason}",
                   partition=exc.partition, reason=exc.reason)  # fmt: skip
        return exc
    except LandfallError as exc:
        fail(exc)
    return None


@app.command()
def backfill(
    dataset: DatasetArgument,
    first: FirstPartition,
    last: LastPartition,
    hourly: HourlyOption = False,
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
    from landfall.operations import plan_backfill
    from landfall.progress import Progress, progress_mode

    shown = Progress(progress_mode(as_json))
    try:
        settings = cli_settings(config)
        plan = plan_backfill(
            settings, dataset, first, last, hourly=hourly, missing_only=missing_only
        )
    except LandfallError as exc:
        fail(exc)
    skipped = len(plan.not_landed) + len(plan.already_scored)
    if _said_what_would_happen(shown, plan, skipped, dry_run):
        return
    stopped = _publish_showing_each(shown, config, dataset, plan, model_version)
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
    # Long: its typer options take a third of its lines.
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
    first: FirstPartition,
    last: LastPartition,
    hourly: HourlyOption = False,
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
