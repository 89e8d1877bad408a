"""Spark tasks that move a parquet table with pyarrow: what every arrow engine shares.

The predictor scores and the validator checks a table the same way: the driver splits
the table's row groups into a few balanced tasks (:func:`plan_tasks`), Spark schedules
them (``parallelize(tasks).map(...)``), and each task, in a Spark Python worker, reads
its row groups with pyarrow from wherever the lake lives (:func:`arrow_location`: a
local folder, an S3-compatible store, HDFS through WebHDFS) and writes its own part
file, under a hidden name first (:func:`hidden_part`) so a retried or speculative
attempt never leaves a partial file where readers look.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyarrow import fs as pafs

if TYPE_CHECKING:
    from landfall.lake import LakePath
    from landfall.object_store import StoreSettings

__all__ = [
    "STREAM_BUFFER",
    "ArrowTask",
    "arrow_location",
    "hidden_part",
    "location_of",
    "part_file",
    "plan_tasks",
    "read_batches",
    "release_unused_memory",
]


@dataclass(frozen=True)
class ArrowTask:
    """One task's share of a parquet table: whole row groups of one or more files, or
    (a table with fewer row groups than tasks) a run of rows of one row group."""

    index: int
    slices: tuple[tuple[str, tuple[int, ...]], ...]  # (file, row group indexes)
    rows: int
    part: tuple[str, int, int, int] | None = None  # (file, row group, first row, end row)

    def batches(
        self,
        batch_rows: int,
        store: StoreSettings | None = None,
        columns: list[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The task's rows as record batches, in the table's order."""
        if self.part is not None:
            location, group, first, end = self.part
            yield from _rows_of_group(location, group, first, end, batch_rows, store, columns)
            return
        for location, groups in self.slices:
            yield from read_batches(location, groups, batch_rows, store, columns)


def arrow_location(
    location: str, store: StoreSettings | None = None
) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path for a local path or a lake URI (s3a://, hdfs://, ``store``)."""
    from landfall.config import HdfsSettings, ObjectStoreSettings

    if location.startswith(("s3a://", "s3://")) and isinstance(store, ObjectStoreSettings):
        # The lake's own endpoint and credentials: pyarrow alone would ask AWS.
        from landfall.object_store import arrow_filesystem

        return arrow_filesystem(location, store)
    if location.startswith("hdfs://"):
        # WebHDFS: pyarrow's own HDFS filesystem would need libhdfs on every worker.
        from landfall.object_store import arrow_filesystem

        hdfs = store if isinstance(store, HdfsSettings) else None
        return arrow_filesystem(location, ObjectStoreSettings(), hdfs)
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


def plan_tasks(
    table: str,
    min_tasks: int,
    rows_per_task: int,
    store: StoreSettings | None = None,
) -> tuple[list[ArrowTask], pa.Schema]:
    """Split the table's row groups into contiguous tasks of about equal rows.

    A multiple of ``min_tasks`` (the cluster's cores), none over ``rows_per_task``
    (unless a row group is larger and there are row groups enough). With fewer row
    groups than tasks, groups are cut into runs of rows (:attr:`ArrowTask.part`). Files
    whose names start with ``_`` or ``.`` (manifests, markers) are not data, as for Spark.
    """
    filesystem, path = arrow_location(table, store)
    dataset = pads.dataset(path, format="parquet", filesystem=filesystem)
    groups: list[tuple[str, int, int]] = []
    for fragment in dataset.get_fragments():
        metadata = fragment.metadata
        location = fragment.path if "://" not in table else _uri(table, fragment.path)
        groups += [
            (location, i, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups)
        ]
    total = sum(rows for _, _, rows in groups)
    if not groups or total == 0:
        # Still one task: it writes the (empty) output file.
        return [ArrowTask(0, (), 0)], dataset.schema
    # Whole waves: with 2 cores, 3 tasks would take as long as 4.
    waves = math.ceil(total / (max(min_tasks, 1) * rows_per_task))
    count = max(min_tasks, 1) * waves
    if len(groups) < count:
        # pyarrow writes up to 1Mi rows per row group: an upstream's partition is often
        # one. Whole groups would leave cores idle, so groups are cut into runs of rows.
        return _parts_of_groups(groups, count), dataset.schema
    target = total / count
    tasks: list[ArrowTask] = []
    current: list[tuple[str, int, int]] = []
    done = 0
    for group in groups:
        current.append(group)
        done += group[2]
        # Cut when this task reaches its share of the rows so far; the last takes the rest.
        if done >= target * (len(tasks) + 1) and len(tasks) < count - 1:
            tasks.append(_task(len(tasks), current))
            current = []
    if current:
        tasks.append(_task(len(tasks), current))
    return tasks, dataset.schema


def _parts_of_groups(groups: list[tuple[str, int, int]], count: int) -> list[ArrowTask]:
    """``count`` tasks over fewer row groups: each group cut into runs of rows, as many
    runs as its share of the rows earns it (at least one)."""
    total = sum(rows for _, _, rows in groups)
    shares = [max(1, math.floor(count * rows / total)) if rows else 1 for _, _, rows in groups]
    # The tasks left over go to the groups whose runs would be longest.
    while sum(shares) < count:
        longest = max(range(len(groups)), key=lambda i: groups[i][2] / shares[i])
        shares[longest] += 1
    tasks: list[ArrowTask] = []
    for (location, group, rows), runs in zip(groups, shares, strict=True):
        for run in range(runs):
            first, end = rows * run // runs, rows * (run + 1) // runs
            tasks.append(
                ArrowTask(
                    len(tasks), ((location, (group,)),), end - first, (location, group, first, end)
                )
            )
    return tasks


def _uri(root: str, path: str) -> str:
    scheme, rest = root.split("://", 1)
    if scheme == "hdfs":  # an absolute path on the NameNode the root names
        return f"hdfs://{rest.split('/', 1)[0]}{path}"
    return f"{scheme}://{path}"


def _task(index: int, groups: list[tuple[str, int, int]]) -> ArrowTask:
    slices: dict[str, list[int]] = {}
    for location, group, _ in groups:
        slices.setdefault(location, []).append(group)
    return ArrowTask(
        index=index,
        slices=tuple((location, tuple(ids)) for location, ids in slices.items()),
        rows=sum(rows for _, _, rows in groups),
    )


def location_of(path: LakePath | Path) -> str:
    """Where pyarrow finds a folder: an absolute local path or a lake URI (s3a://...)."""
    return str(path.absolute()) if isinstance(path, Path) else str(path)


def hidden_part(directory: str, index: int) -> tuple[str, str]:
    """A task's part file: the hidden name it is written under, and its final name."""
    final = f"{directory}/part-{index:05d}.parquet"
    return f"{directory}/.part-{index:05d}-{uuid.uuid4().hex[:8]}.parquet", final


# Bytes read ahead per column while a task streams a file's pages.
STREAM_BUFFER = 1 << 20


def read_batches(
    location: str,
    row_groups: tuple[int, ...],
    batch_rows: int,
    store: StoreSettings | None = None,
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Some row groups of one parquet file as record batches, streamed page by page.

    Not pre-buffered: pyarrow would read every requested row group's column chunks
    before the first batch, so a task's memory would follow the file (measured: 930 MiB
    per scoring task over a 2.5M-row feature file against 600 MiB over Spark's smaller
    files), and an upstream's 1M-row row group is 170 MiB on its own.
    """
    filesystem, path = arrow_location(location, store)
    with filesystem.open_input_file(path) as handle:
        reader = pq.ParquetFile(handle, buffer_size=STREAM_BUFFER, pre_buffer=False)
        yield from reader.iter_batches(
            batch_size=batch_rows, row_groups=list(row_groups), columns=columns
        )


def _rows_of_group(
    location: str,
    group: int,
    first: int,
    end: int,
    batch_rows: int,
    store: StoreSettings | None,
    columns: list[str] | None,
) -> Iterator[pa.RecordBatch]:
    """Rows ``first`` to ``end`` (excluded) of one row group, as record batches.

    The rows before ``first`` are still decoded (pyarrow reads a row group from its
    start) but not handed out: cheap beside what a task does with its rows.
    """
    at = 0
    for batch in read_batches(location, (group,), batch_rows, store, columns):
        start, stop = max(first - at, 0), min(end - at, batch.num_rows)
        at += batch.num_rows
        if stop > start:
            yield batch.slice(start, stop - start)
        if at >= end:
            return


@contextlib.contextmanager
def part_file(
    directory: str,
    index: int,
    schema: pa.Schema,
    compression: str,
    store: StoreSettings | None = None,
) -> Iterator[pq.ParquetWriter]:
    """A writer of task ``index``'s part file in ``directory`` (a local path or lake URI).

    The file is written under its hidden name and moved into place when the block ends
    without error; after an error the hidden file is deleted (a retry writes its own).
    Floating-point columns are written without parquet's dictionary, as
    landfall.stage.write_parquet writes them.
    """
    filesystem, folder = arrow_location(directory, store)
    partial, final = hidden_part(folder, index)
    dictionary = [f.name for f in schema if not pa.types.is_floating(f.type)]
    try:
        with filesystem.open_output_stream(partial) as sink:
            # Spark reads the files; pyarrow's own schema copy would only disagree with it.
            writer = pq.ParquetWriter(
                sink, schema, compression=compression, store_schema=False, use_dictionary=dictionary
            )
            try:
                yield writer
            finally:
                writer.close()  # before the sink closes
    except BaseException:
        with contextlib.suppress(OSError):
            filesystem.delete_file(partial)
        raise
    filesystem.move(partial, final)


def _glibc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library is another (musl, macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim  # the symbols the process already loaded
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_trim()


def release_unused_memory() -> None:
    """Hand the memory a finished task freed back to the machine.

    Spark keeps a Python worker alive between tasks (about a minute when idle), and both
    allocators keep what a task freed for the next one: pyarrow's pool (mimalloc) and
    glibc's heap (pandas, numpy, the model). Measured on one worker after scoring 564k
    rows in 262,144-row batches: 499 MiB resident, 335 MiB after the pool's release,
    322 MiB after the trim, against 278 MiB with the model loaded and nothing scored.
    Both calls take milliseconds.
    """
    pa.default_memory_pool().release_unused()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
