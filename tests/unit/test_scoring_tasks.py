"""How the arrow engine splits a feature table into scoring tasks (pyarrow only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from landfall.arrow_io import plan_tasks


def _table(directory: Path, files: list[int], row_group: int) -> None:
    """Part files of the given row counts, in row groups of ``row_group`` rows."""
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for part, rows in enumerate(files):
        ids = [f"id{i:06d}" for i in range(start, start + rows)]
        table = pa.table({"id": ids, "x": pa.array(range(rows), pa.float64())})
        pq.write_table(table, directory / f"part-{part:05d}.parquet", row_group_size=row_group)
        start += rows


def _groups(tasks) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    return [(path, group) for task in tasks for path, groups in task.slices for group in groups]


def test_every_row_group_is_in_exactly_one_task(tmp_path: Path) -> None:
    _table(tmp_path, [1000, 700, 1300], row_group=100)
    tasks, schema = plan_tasks(str(tmp_path), min_tasks=2, rows_per_task=10_000)
    groups = _groups(tasks)
    assert len(groups) == len(set(groups)) == 10 + 7 + 13
    assert sum(t.rows for t in tasks) == 3000
    assert [t.index for t in tasks] == list(range(len(tasks)))
    assert schema.names == ["id", "x"]


def test_tasks_fill_whole_waves_of_cores_and_are_balanced(tmp_path: Path) -> None:
    _table(tmp_path, [1000, 1000, 1000], row_group=100)
    # 3000 rows, at most 1000 per task, 2 cores: 3 tasks would need 2 waves anyway.
    tasks, _ = plan_tasks(str(tmp_path), min_tasks=2, rows_per_task=1000)
    assert len(tasks) == 4
    assert max(t.rows for t in tasks) - min(t.rows for t in tasks) <= 100  # one row group
    assert max(t.rows for t in tasks) <= 1000


def _ids(tasks, batch_rows: int) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Each task's ids, as its batches hand them out."""
    return [
        [
            i
            for batch in task.batches(batch_rows, columns=["id"])
            for i in batch.column(0).to_pylist()
        ]
        for task in tasks
    ]


def test_a_lone_row_group_is_cut_into_runs_of_rows_for_every_core(tmp_path: Path) -> None:
    # pyarrow writes up to 1Mi rows in one row group: a common upstream partition.
    _table(tmp_path, [1000], row_group=1000)
    tasks, _ = plan_tasks(str(tmp_path), min_tasks=2, rows_per_task=10_000)
    assert [(t.rows, t.part[1:] if t.part else None) for t in tasks] == [
        (500, (0, 0, 500)),
        (500, (0, 500, 1000)),
    ]
    # Batches of 128 rows: the cut falls inside one, which is split between the tasks.
    ids = _ids(tasks, batch_rows=128)
    assert ids == [[f"id{i:06d}" for i in range(500)], [f"id{i:06d}" for i in range(500, 1000)]]


def test_fewer_row_groups_than_tasks_give_every_row_to_one_task_in_order(tmp_path: Path) -> None:
    _table(tmp_path, [1000, 1000, 1000], row_group=1000)
    # 3000 rows, at most 1000 a task, 2 cores: 4 tasks over 3 row groups.
    tasks, _ = plan_tasks(str(tmp_path), min_tasks=2, rows_per_task=1000)
    assert sorted(t.rows for t in tasks) == [500, 500, 1000, 1000]
    assert [t.index for t in tasks] == [0, 1, 2, 3]
    ids = [i for task_ids in _ids(tasks, batch_rows=300) for i in task_ids]
    assert ids == [f"id{i:06d}" for i in range(3000)]


def test_manifests_markers_and_hidden_files_are_not_data(tmp_path: Path) -> None:
    _table(tmp_path, [300], row_group=100)
    (tmp_path / "_manifest.json").write_text("{}")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part-00000.parquet.crc").write_bytes(b"\0")
    tasks, _ = plan_tasks(str(tmp_path), min_tasks=1, rows_per_task=1000)
    assert {Path(path).name for path, _ in _groups(tasks)} == {"part-00000.parquet"}


def test_an_empty_table_still_gets_one_task_to_write_its_empty_file(tmp_path: Path) -> None:
    _table(tmp_path, [0], row_group=100)
    tasks, schema = plan_tasks(str(tmp_path), min_tasks=2, rows_per_task=1000)
    assert [(t.rows, t.slices) for t in tasks] == [(0, ())]
    assert schema.names == ["id", "x"]


# A task's worth of batches in a fresh interpreter: Arrow columns, their pandas copies
# and back, all dropped; then the worker's release. Prints resident MiB at each point.
_TASK_THEN_RELEASE = """
import numpy as np, pyarrow as pa
from landfall.arrow_io import release_unused_memory
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) >> 10
base = rss()
for _ in range(4):
    table = pa.table({f"c{i}": np.random.default_rng(i).random(65_536) for i in range(32)})
    frame = table.to_pandas()
    table = pa.Table.from_pandas(frame)
del table, frame
held = rss()
release_unused_memory()
print(base, held, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_hands_freed_memory_back_after_a_task() -> None:
    # Spark keeps Python workers alive between tasks: what a task freed must leave the
    # process, not wait in pyarrow's pool or glibc's heap for the next batch.
    found = subprocess.run(
        [sys.executable, "-c", _TASK_THEN_RELEASE],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    base, held, released = (int(v) for v in found.stdout.split())
    assert held - base >= 30, "the batches should have left memory in the allocators"
    assert released - base <= (held - base) / 3
