"""`landfall gc`: remove old runs' outputs and what crashed writers left in the lake.

Every run keeps its own output (landfall/lake.py), so the lake grows with every replay
and backfill until something removes the old ones. Kept, always: each partition's
committed output and its newest attempt of any outcome (a failed run's report is what
operators look at), and every run committed within the retention. Removed: older
runs' outputs with their pointers, and attempts no pointer names (a crash before the
commit) once nothing has written to them for the staging grace and no live process on
this host still owns them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyarrow import fs as pafs

from landfall.lake import (
    COMMITS_DIR,
    FAILED_SUFFIX,
    INFLIGHT_DIR,
    OUTPUT_ZONES,
    RUNS_DIR,
    Commit,
    Lake,
    LakePath,
    writer_alive,
)

__all__ = ["GcPlan", "collect_garbage"]


@dataclass
class GcPlan:
    """What a gc removes (or, dry, would remove), by lake-relative path."""

    old_runs: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)
    kept: int = 0

    @property
    def removed(self) -> list[str]:
        return self.old_runs + self.abandoned


def collect_garbage(
    lake: Lake,
    datasets: list[str],
    *,
    keep_days: float = 7.0,
    staging_grace_hours: float = 24.0,
    dry_run: bool = False,
    now: float | None = None,
) -> GcPlan:
    """Remove old runs' outputs and abandoned attempts of ``datasets``; return the plan."""
    now = time.time() if now is None else now
    run_cutoff = now - keep_days * 86_400
    staging_cutoff = now - staging_grace_hours * 3_600
    live = _live_attempts(lake)
    plan = GcPlan()
    for dataset in datasets:
        for zone in OUTPUT_ZONES:
            for folder in lake.path(f"{dataset}/{zone}").iterdir():
                if folder.name.startswith((".", "_")):
                    if folder.name == "_staging":  # an earlier release's staging
                        _sweep_legacy_staging(folder, staging_cutoff, plan)
                    continue
                commits = lake.commits(dataset, zone, folder.name)
                _sweep_partition(folder, commits, run_cutoff, staging_cutoff, live, plan)
    if not dry_run:
        for rel in plan.removed:
            lake.path(rel).remove()
        for rel in plan.old_runs:
            _remove_pointer(lake, rel)
        _forget_finished_inflight(lake)
    return plan


def _sweep_partition(
    folder: LakePath,
    commits: list[Commit],
    run_cutoff: float,
    staging_cutoff: float,
    live: set[str],
    plan: GcPlan,
) -> None:
    if any(c.legacy for c in commits):
        plan.kept += 1
        return  # an earlier release's output in place: nothing of ours to sweep
    succeeded = [c for c in commits if c.succeeded]
    keep = {c.path.rel for c in (succeeded[-1:] + commits[-1:])}
    for commit in commits:
        if commit.path.rel in keep or _committed_at(commit) >= run_cutoff:
            plan.kept += 1
            continue
        plan.old_runs.append(commit.path.rel)
    named = {c.path.rel for c in commits}
    for attempt in (folder / RUNS_DIR).iterdir():
        if attempt.rel in named or attempt.rel in live:
            continue
        if _last_written(attempt) < staging_cutoff:
            plan.abandoned.append(attempt.rel)


def _sweep_legacy_staging(folder: LakePath, cutoff: float, plan: GcPlan) -> None:
    for staged in folder.iterdir():
        if _last_written(staged) < cutoff:
            plan.abandoned.append(staged.rel)


def _committed_at(commit: Commit) -> float:
    try:
        return datetime.fromisoformat(commit.committed_at).timestamp()
    except ValueError:
        return float("inf")  # unknown age: keep it


def _last_written(folder: LakePath) -> float:
    """When anything in the folder was last written (0 for an empty folder)."""
    lake = folder.lake
    selector = pafs.FileSelector(lake.fs_path(folder.rel), recursive=True, allow_not_found=True)
    times = [info.mtime.timestamp() for info in lake.fs.get_file_info(selector) if info.mtime]
    return max(times, default=0.0)


def _inflight_records(lake: Lake) -> Iterator[tuple[LakePath, dict[str, Any]]]:
    """Every inflight record of the lake (all writers, all hosts), with its file."""
    for writer in lake.path(INFLIGHT_DIR).iterdir():
        for host in writer.iterdir():
            for entry in host.iterdir():
                try:
                    record = json.loads(entry.read_bytes())
                except (OSError, ValueError):
                    continue
                if isinstance(record, dict):
                    yield entry, record


def _live_attempts(lake: Lake) -> set[str]:
    """Attempts a live process on this host is writing now, by lake-relative folder."""
    return {str(r.get("path")) for _, r in _inflight_records(lake) if writer_alive(r)}


def _remove_pointer(lake: Lake, attempt_rel: str) -> None:
    """Remove the pointers naming an attempt that gc removed."""
    partition = attempt_rel.split(f"/{RUNS_DIR}/", 1)[0]
    token = attempt_rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    for suffix in ("", FAILED_SUFFIX):
        pointer = lake.path(f"{partition}/{COMMITS_DIR}/{token}{suffix}.json")
        try:
            named = json.loads(pointer.read_bytes()).get("path")
        except (OSError, ValueError, AttributeError):
            continue
        if named == attempt_rel:
            pointer.remove()


def _forget_finished_inflight(lake: Lake) -> None:
    """Drop inflight records whose attempt is gone and whose process is too."""
    for entry, record in _inflight_records(lake):
        attempt = lake.path(str(record.get("path", "")))
        if not writer_alive(record) and not attempt.exists():
            entry.remove()
