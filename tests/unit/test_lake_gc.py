"""`landfall gc`: old runs and abandoned outputs go; what readers need stays."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from landfall.lake import Lake, PartitionOutput
from landfall.lake_gc import collect_garbage
from landfall.run_ids import new_run_id

PARTITION = "2026-11-01"
A_MONTH_LATER = time.time() + 30 * 86_400


def _written(lake: Lake, zone: str, run_id: str) -> PartitionOutput:
    output = lake.stage_output("demo", zone, PARTITION, run_id)  # type: ignore[arg-type]
    output.staging.mkdir(parents=True)
    (output.staging / "part-0.parquet").write_text(run_id)
    return output


def _written_by_a_process_that_died(root: Path) -> str:
    crash = (
        "import os, sys; from landfall.lake import Lake;"
        "o = Lake(sys.argv[1]).stage_output('demo', 'features', '2026-11-01', 'r');"
        "o.staging.mkdir(parents=True); (o.staging / 'part-0.parquet').write_text('x');"
        "print(o.staging.rel); os._exit(9)"
    )
    done = subprocess.run([sys.executable, "-c", crash, str(root)], capture_output=True, text=True)
    return done.stdout.strip()


def test_gc_keeps_the_committed_and_the_newest_attempt_and_removes_the_rest(
    tmp_path: Path,
) -> None:
    lake = Lake(tmp_path)
    runs = [new_run_id(1_000 * i) for i in range(1, 5)]
    old = [lake.commit_partition(_written(lake, "reports", r), {}) for r in runs[:2]]
    current = lake.commit_partition(_written(lake, "reports", runs[2]), {})
    failed = lake.commit_partition(_written(lake, "reports", runs[3]), {}, succeeded=False)
    crashed = lake.path(_written_by_a_process_that_died(tmp_path))
    writing = _written(lake, "predictions", new_run_id())  # this live process's

    dry = collect_garbage(lake, ["demo"], dry_run=True, now=A_MONTH_LATER)
    assert sorted(dry.old_runs) == sorted(p.rel for p in old)
    assert all(p.exists() for p in old) and crashed.exists()

    plan = collect_garbage(lake, ["demo"], now=A_MONTH_LATER)
    assert sorted(plan.old_runs) == sorted(p.rel for p in old)
    assert crashed.rel in plan.abandoned
    assert not any(p.exists() for p in old) and not crashed.exists()
    assert current.exists() and failed.exists() and writing.staging.exists()
    history = lake.commits("demo", "reports", PARTITION)
    assert [c.run_id for c in history] == runs[2:]  # the removed runs' pointers went too
    assert lake.committed("demo", "reports", PARTITION).path == current  # type: ignore[union-attr]


def test_gc_keeps_everything_within_the_retention(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    for i in range(1, 4):
        lake.commit_partition(_written(lake, "validated", new_run_id(i)), {})
    _written(lake, "validated", new_run_id())  # being written right now
    plan = collect_garbage(lake, ["demo"], keep_days=7, staging_grace_hours=1)
    assert plan.removed == [] and plan.kept == 3
