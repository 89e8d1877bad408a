"""`landfall reconcile`: find landed partitions whose batch never finished, and re-drive them.

A batch can stop between stages for reasons no single service sees: a service killed
after committing its output but before its event reached the broker, a report lost
with the process that was writing it, an event nobody published. For every landed
partition of a range this looks at the results database (the runs and their state) and
at the lake (which run committed what), and says for each one that is not SUCCEEDED or
FAILED what happened and what will bring it to an end:

- *never started*: no run, nothing committed -> a data-landed event (a new run);
- *stuck*: the latest run is RUNNING with nothing recorded for longer than the
  allowed time -> the completion event of the last stage that committed output for
  that run, exactly as that stage announced it (stored beside the output), so the next
  stage continues the same run; with nothing committed, the run's data-landed again;
- *scored, not reported*: predictions committed, no report -> the same, from the
  predictions, so the reporter reports the run.

A re-announced event carries its original id: a stage that already handled it repeats
its own announcement instead of redoing the work (landfall/stage.py), so a repair of a
batch that was only slow changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import landfall
from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType, new_event
from landfall.errors import InvalidEventError
from landfall.ingress import batch_id_for
from landfall.lake import ANNOUNCED_NAME, Lake, Zone
from landfall.operations import partitions_between
from landfall.results import RunHistory
from landfall.run_ids import new_run_id

__all__ = ["Repair", "plan_reconcile", "reconcile"]

_FINISHED = {"SUCCEEDED", "FAILED"}
# The furthest stage first: a run continues from the last output it committed.
_PROGRESS: tuple[tuple[Zone, str], ...] = (
    ("predictions", "predicted"),
    ("features", "featurized"),
    ("validated", "validated"),
)
_STORED = EventCodec()  # announcements are kept in single-object encoding


@dataclass
class Repair:
    """One partition that did not finish: what was found and the event that re-drives it."""

    partition: str
    found: str
    action: str
    event_type: EventType
    topic: str
    record: dict[str, Any]


def plan_reconcile(
    settings: Settings,
    dataset: str,
    first: str,
    last: str,
    *,
    hourly: bool = False,
    stuck_after: timedelta = timedelta(hours=1),
    now: datetime | None = None,
) -> list[Repair]:
    """What reconciling ``first``..``last`` of ``dataset`` would publish."""
    settings.dataset(dataset)  # an unknown dataset is a clear error, naming the known ones
    now = now or datetime.now(UTC)
    lake = Lake.from_settings(settings)
    history = RunHistory.open(settings.results_db_url)
    repairs = []
    try:
        for partition in partitions_between(first, last, hourly=hourly):
            raw = lake.partition_dir(dataset, "raw", partition)
            if not any(True for _ in raw.iterdir()):
                continue  # not landed: nothing to drive
            repair = _repair(settings, lake, history, dataset, partition, now - stuck_after)
            if repair is not None:
                repairs.append(repair)
    finally:
        history.close()
    return repairs


def _repair(
    settings: Settings,
    lake: Lake,
    history: RunHistory,
    dataset: str,
    partition: str,
    stuck_before: datetime,
) -> Repair | None:
    runs = history.runs_of(batch_id_for(dataset, partition))
    latest = runs[-1] if runs else None
    if latest is not None and latest["status"] in _FINISHED:
        return None
    if latest is None:
        committed = lake.committed(dataset, "predictions", partition)
        if committed is None:
            return _data_landed(settings, dataset, partition, None, "never started")
        run_id = committed.run_id  # scored by a run the database never heard of
        found = "scored, not reported (no run in the results database)"
    else:
        last_seen = _last_activity(history, latest)
        if last_seen is not None and last_seen > stuck_before:
            return None  # in progress
        run_id = latest["run_id"]
        since = last_seen.isoformat(timespec="seconds") if last_seen else "an unknown time"
        found = f"run {run_id} {latest['status']} with no progress since {since}"
    for zone, topic_kind in _PROGRESS:
        announced = _announcement(lake, dataset, zone, partition, run_id)
        if announced is not None:
            event_type, record = announced
            if zone == "predictions" and latest is not None:
                found = f"run {run_id} scored, not reported"
            return Repair(
                partition=partition,
                found=found,
                action=f"re-announce {zone} of run {run_id}",
                event_type=event_type,
                topic=getattr(settings.kafka.topics, topic_kind).name,
                record=record,
            )
    return _data_landed(settings, dataset, partition, run_id, found)


def _last_activity(history: RunHistory, run: dict[str, Any]) -> datetime | None:
    detail = history.run(run["run_id"]) or run
    moments = [run.get("started_at")]
    for stage in detail.get("stages") or []:
        moments += [stage.get("started_at"), stage.get("finished_at")]
    known = [_aware(m) for m in moments if isinstance(m, datetime)]
    return max(known, default=None)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _announcement(
    lake: Lake, dataset: str, zone: Zone, partition: str, run_id: str
) -> tuple[EventType, dict[str, Any]] | None:
    """The completion event the run's stage stored beside its committed output."""
    own = [c for c in lake.commits(dataset, zone, partition) if c.run_id == run_id and c.succeeded]
    if not own:
        return None
    try:
        stored = (own[-1].path / ANNOUNCED_NAME).read_bytes()
        return _STORED.decode(stored, topic=f"{dataset}/{zone}")
    except (OSError, InvalidEventError):
        return None  # committed but never announced: the stage before re-drives it


def _data_landed(
    settings: Settings, dataset: str, partition: str, run_id: str | None, found: str
) -> Repair:
    record = new_event(
        EventType.DATA_LANDED,
        dataset=dataset,
        partition=partition,
        batch_id=batch_id_for(dataset, partition),
        run_id=run_id or new_run_id(),
        producer=f"landfall-reconcile/{landfall.__version__}",
    )
    action = "publish data-landed (a new run)" if run_id is None else f"restart run {run_id}"
    return Repair(
        partition=partition,
        found=found,
        action=action,
        event_type=EventType.DATA_LANDED,
        topic=settings.kafka.topics.landed.name,
        record=record,
    )


def reconcile(settings: Settings, repairs: list[Repair]) -> None:
    """Publish each repair's event, in partition order."""
    from landfall.events import publish_event

    for repair in repairs:
        publish_event(settings, repair.event_type, repair.topic, repair.record)
