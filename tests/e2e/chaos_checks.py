"""What the chaos test checks after each trial: nothing lost, duplicated, stuck or stray."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow.dataset as pads

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.ingress import batch_id_for
from landfall.lake import COMMITS_DIR, INFLIGHT_DIR, RUNS_DIR, Lake, Zone, writer_alive
from landfall.results import RunHistory
from tests.conftest import topic_messages

DATASET = "demo"
ROWS = 300  # landed per trial
ZONES: tuple[Zone, ...] = ("validated", "quarantine", "features", "predictions", "reports")


@dataclass
class Trial:
    """One kill: which service, at which point, and what was found after it."""

    service: str
    point: str
    partition: str
    run_id: str = ""
    at: str = ""  # what was seen when the signal went
    recovered_s: float | None = None
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    stray: int = 0
    notes: list[str] = field(default_factory=list)


def _rows(path: Any, columns: list[str] | None = None) -> Any:
    # Underscore and dot names (manifest, announcement, checksums) are not data.
    return pads.dataset(str(path), format="parquet").to_table(columns=columns)


def _strays(lake: Lake, partition: str) -> list[str]:
    """Files of the partition that are neither a pointer nor in an attempt a pointer names."""
    live = _live_attempts(lake)
    found = []
    for zone in ZONES:
        root = lake.partition_root(DATASET, zone, partition)
        named = {c.path.rel for c in lake.commits(DATASET, zone, partition)}
        for file in root.files():
            inside = file.rel[len(root.rel) + 1 :].split("/")
            if inside[0] == COMMITS_DIR and len(inside) == 2 and not inside[1].startswith("."):
                continue
            if inside[0] == RUNS_DIR and len(inside) > 2:
                attempt = f"{root.rel}/{RUNS_DIR}/{inside[1]}"
                if attempt in named or attempt in live:
                    continue
            found.append(file.rel)
    return found


def _live_attempts(lake: Lake) -> set[str]:
    live = set()
    for writer in lake.path(INFLIGHT_DIR).iterdir():
        for host in writer.iterdir():
            for entry in host.iterdir():
                record = json.loads(entry.read_bytes())
                if writer_alive(record):
                    live.add(str(record["path"]))
    return live


def _dead_inflight(lake: Lake, partition: str) -> list[str]:
    """In-flight records of processes that are gone: what a restart should have cleared."""
    left = []
    for writer in lake.path(INFLIGHT_DIR).iterdir():
        for host in writer.iterdir():
            for entry in host.iterdir():
                record = json.loads(entry.read_bytes())
                if f"/{partition}/" in str(record["path"]) and not writer_alive(record):
                    left.append(entry.rel)
    return left


def reported_by_run(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every batch-reported event on the topic, by run id."""
    codec = EventCodec()
    topic = settings.kafka.topics.reported.name
    found: dict[str, list[dict[str, Any]]] = {}
    for message in topic_messages(settings, topic):
        _kind, record = codec.decode(message.value(), topic=topic)
        found.setdefault(record["run_id"], []).append(record)
    return found


def check_trial(trial: Trial, lake: Lake, db: RunHistory, reported: list[dict[str, Any]]) -> None:
    """Count what the trial's batch lost, duplicated, left stuck or left behind."""
    # Long: one check per invariant of the trial, each saying what broke.
    notes = trial.notes
    runs = db.runs_of(batch_id_for(DATASET, trial.partition))
    succeeded = [r for r in runs if r["status"] == "SUCCEEDED"]
    if len(runs) != 1:
        notes.append(f"{len(runs)} runs in the results db: {[r['status'] for r in runs]}")
    trial.duplicated += max(len(succeeded) - 1, 0)
    if not succeeded:
        trial.stuck += 1
        notes.append(f"no SUCCEEDED run (db: {[r['status'] for r in runs]})")
    batch = db.batch(batch_id_for(DATASET, trial.partition))
    if batch is None or batch["last_status"] != "SUCCEEDED":
        notes.append(f"batch status {batch and batch['last_status']}")
    ids = {record["event_id"] for record in reported}
    if not [r for r in reported if r["status"] == "SUCCEEDED"]:
        trial.stuck += 1 if succeeded else 0
        notes.append(f"not reported SUCCEEDED ({[r['status'] for r in reported]})")
    if len(ids) > 1:
        trial.duplicated += len(ids) - 1
        notes.append(f"{len(ids)} different batch-reported events")
    elif len(reported) > 1:
        notes.append(f"batch-reported delivered {len(reported)}x (same event id)")

    committed = {zone: lake.committed(DATASET, zone, trial.partition) for zone in ZONES}
    missing = [zone for zone, commit in committed.items() if commit is None]
    if missing:
        trial.lost += 1
        notes.append(f"nothing committed in {', '.join(missing)}")
        return
    valid = _rows(committed["validated"].path, ["id"]).column("id").to_pylist()  # type: ignore[union-attr]
    quarantined = _rows(committed["quarantine"].path).num_rows  # type: ignore[union-attr]
    if len(valid) + quarantined != ROWS:
        trial.lost += abs(ROWS - len(valid) - quarantined)
        notes.append(f"valid {len(valid)} + quarantined {quarantined} != landed {ROWS}")
    predicted = _rows(committed["predictions"].path, ["id"]).column("id").to_pylist()  # type: ignore[union-attr]
    lost_ids = set(valid) - set(predicted)
    trial.lost += len(lost_ids)
    trial.duplicated += len(predicted) - len(set(predicted))
    foreign = set(predicted) - set(valid)
    if lost_ids or foreign:
        notes.append(f"{len(lost_ids)} valid ids unscored, {len(foreign)} scored ids not valid")
    if succeeded:
        run = succeeded[-1]
        if (run["rows_landed"], run["rows_valid"], run["rows_quarantined"]) != (
            ROWS,
            len(valid),
            quarantined,
        ):
            notes.append(
                "db rows (landed, valid, quarantined) = "
                f"{(run['rows_landed'], run['rows_valid'], run['rows_quarantined'])}"
            )
            trial.lost += 1
        for zone, commit in committed.items():
            if commit is not None and commit.run_id != run["run_id"]:
                notes.append(f"{zone} committed by run {commit.run_id}, db says {run['run_id']}")
                trial.duplicated += 1
    strays = _strays(lake, trial.partition) + _dead_inflight(lake, trial.partition)
    trial.stray = len(strays)
    if strays:
        notes.append("left behind: " + ", ".join(strays[:6]) + (" ..." if len(strays) > 6 else ""))


def is_report_of(run_id: str, _topic: str, kind: EventType, record: dict[str, Any]) -> bool:
    return kind is EventType.BATCH_REPORTED and record["run_id"] == run_id


def trial_table(trials: list[Trial]) -> str:
    lines = [
        f"{'#':>3} {'service':<10} {'point':<10} {'signalled at':<26} {'recovered':>9} "
        f"{'lost':>4} {'dup':>4} {'stuck':>5} {'stray':>5}"
    ]
    for number, trial in enumerate(trials, start=1):
        recovered = f"{trial.recovered_s:.0f}s" if trial.recovered_s is not None else "-"
        lines.append(
            f"{number:>3} {trial.service:<10} {trial.point:<10} {trial.at:<26} {recovered:>9} "
            f"{trial.lost:>4} {trial.duplicated:>4} {trial.stuck:>5} {trial.stray:>5}"
        )
        lines += [f"      {note}" for note in trial.notes]
    return "\n".join(lines)
