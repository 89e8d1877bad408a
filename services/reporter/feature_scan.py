"""One read of a feature table in the reporter's own process: the figures drift needs.

Per numeric feature: nulls, NaNs, how many values lie at or below each given edge (all
exact), and a KLL quantile sketch (Apache DataSketches, the library Spark's
``kll_sketch_*`` functions use: the bytes are the same format both ways, so sketches
stored by earlier reports made with Spark merge with these, and Spark reads these).

Why not a Spark job: the figures are a few counters per column, and Spark paid more
to plan and compile the aggregation (297 ``value <= edge`` comparisons, 33 sketches, in
5 jobs) than to count: 1.1-1.4 s of a 1k-row report, 9-12 s at 1M rows (bench/README.md,
"Reporting's time"). pyarrow reads the numeric columns in record batches (memory is
one batch, not the table) and numpy counts them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from datasketches import kll_doubles_sketch

from landfall.arrow_io import (
    STREAM_BUFFER,
    ArrowTask,
    location_of,
    plan_tasks,
    release_unused_memory,
)
from landfall.lake import LakePath

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from landfall.object_store import StoreSettings

__all__ = [
    "ColumnScan",
    "ScanTasks",
    "TableScan",
    "feature_schema",
    "is_number",
    "numeric_columns",
    "scan_features",
    "spark_type_name",
]

# Rows per record batch, one batch and one file read ahead, decoded on this thread.
# Measured on the end-to-end bench's 1M-row feature table (33 columns, 158k-row row
# groups): pyarrow's defaults (16 batches and 4 files ahead, decoding threads) raised the
# process by about 590 MiB during the scan, these settings by about 420 MiB, in the same
# time (the sketches take it, not the read); both fall back after the pool's release.
_BATCH_ROWS = 65_536
# A scan task reads at most this many rows; there are at least as many tasks as cores.
_ROWS_PER_TASK = 8_000_000

# Spark's names for the Arrow types a feature table holds (what summaries record).
_SPARK_NAMES = {
    pa.int8(): "tinyint",
    pa.int16(): "smallint",
    pa.int32(): "int",
    pa.int64(): "bigint",
    # Spark reads unsigned integers as the next wider signed type.
    pa.uint8(): "smallint",
    pa.uint16(): "int",
    pa.uint32(): "bigint",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.bool_(): "boolean",
    pa.string(): "string",
    pa.large_string(): "string",
    pa.binary(): "binary",
    pa.date32(): "date",
}


def spark_type_name(arrow_type: pa.DataType) -> str:
    """The type's name as Spark's ``simpleString`` gives it (what stored summaries hold)."""
    if pa.types.is_decimal(arrow_type):
        return f"decimal({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    return _SPARK_NAMES.get(arrow_type, str(arrow_type))


def is_number(arrow_type: pa.DataType) -> bool:
    """Spark's NumericType: integers, floats and decimals (booleans are not numbers)."""
    return (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
    )


def _dataset(features: LakePath) -> pads.Dataset:
    lake = features.lake
    # Pages streamed, not every row group of a file buffered first: over a 2.5M-row part
    # file the scan held 827 MiB that way, 424 MiB streamed, in the same time.
    streamed = pads.ParquetFileFormat(
        default_fragment_scan_options=pads.ParquetFragmentScanOptions(
            pre_buffer=False, buffer_size=STREAM_BUFFER
        )
    )
    # Spark's part files only: "_manifest.json" and ".crc" files are skipped by prefix.
    return pads.dataset(lake.fs_path(features.rel), filesystem=lake.fs, format=streamed)


def feature_schema(features: LakePath) -> pa.Schema:
    """The feature table's columns, from its files' footers (no rows read)."""
    return _dataset(features).schema


def numeric_columns(schema: pa.Schema, exclude: set[str]) -> list[str]:
    return [f.name for f in schema if is_number(f.type) and f.name not in exclude]


@dataclass
class ColumnScan:
    """One numeric column's exact counts and its quantile sketch."""

    sketch: kll_doubles_sketch
    nulls: int = 0
    nans: int = 0
    at_most_edges: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class TableScan:
    rows: int
    schema: pa.Schema
    columns: dict[str, ColumnScan]


@dataclass(frozen=True)
class ScanTasks:
    """Where a large scan may run as Spark tasks, one per core (the reporter's session).

    ``store``: the lake's object store (or HDFS) settings, which the tasks read with.
    Tables under ``min_rows`` are scanned in this process: there the Spark job, and the
    Python workers it leaves warm for a minute (about 400 MiB), cost more than a second
    core saves (a 1M-row table: about 1 s in this process).
    """

    spark: SparkSession
    store: StoreSettings | None = None
    min_rows: int = 2_000_000


def _empty_scans(
    columns: Sequence[str], limits: Mapping[str, np.ndarray], sketch_k: int
) -> dict[str, ColumnScan]:
    return {
        c: ColumnScan(
            kll_doubles_sketch(sketch_k), at_most_edges=np.zeros(len(limits[c]), dtype=np.int64)
        )
        for c in columns
    }


def _add_batch(
    scans: dict[str, ColumnScan], limits: Mapping[str, np.ndarray], batch: pa.RecordBatch
) -> None:
    for column, scan in scans.items():
        found = batch.column(column)
        # Nulls become NaN here: counted apart first, then both stay out of the
        # sketch (KLL ignores NaN) and below no edge (NaN <= x is false).
        values = pc.cast(found, pa.float64()).to_numpy(zero_copy_only=False, writable=True)
        scan.nulls += found.null_count
        scan.nans += int(np.count_nonzero(np.isnan(values))) - found.null_count
        scan.sketch.update(values)
        for j, edge in enumerate(limits[column]):
            scan.at_most_edges[j] += np.count_nonzero(values <= edge)


# One task's scan as it travels back to the driver: rows, and per column the nulls,
# NaNs, values at or below each edge, and the serialized sketch.
_TaskScan = tuple[int, dict[str, tuple[int, int, list[int], bytes]]]


def _scan_task(
    task: ArrowTask,
    limits: Mapping[str, np.ndarray],
    sketch_k: int,
    store: StoreSettings | None,
) -> _TaskScan:
    """Scan one task's row groups (in a Spark Python worker)."""
    scans = _empty_scans(list(limits), limits, sketch_k)
    rows = 0
    try:
        for batch in task.batches(_BATCH_ROWS, store, list(limits)):
            rows += batch.num_rows
            _add_batch(scans, limits, batch)
    finally:
        release_unused_memory()
    return rows, {
        c: (s.nulls, s.nans, s.at_most_edges.tolist(), s.sketch.serialize())
        for c, s in scans.items()
    }


def _scan_with_tasks(
    features: LakePath, limits: Mapping[str, np.ndarray], sketch_k: int, tasks: ScanTasks
) -> tuple[int, dict[str, ColumnScan]] | None:
    """The scan as Spark tasks, merged; None when the table is too small to be worth it.

    KLL sketches merge with the same error bounds as one sketch over every value; the
    counts add up exactly.
    """
    context = tasks.spark.sparkContext
    planned, _ = plan_tasks(
        location_of(features), context.defaultParallelism, _ROWS_PER_TASK, tasks.store
    )
    if len(planned) < 2 or sum(t.rows for t in planned) < tasks.min_rows:
        return None
    run = functools.partial(_scan_task, limits=limits, sketch_k=sketch_k, store=tasks.store)
    outcomes: list[_TaskScan] = context.parallelize(planned, len(planned)).map(run).collect()
    scans = _empty_scans(list(limits), limits, sketch_k)
    for _, parts in outcomes:
        for column, (nulls, nans, at_most, sketch) in parts.items():
            scan = scans[column]
            scan.nulls += nulls
            scan.nans += nans
            scan.at_most_edges += np.asarray(at_most, dtype=np.int64)
            scan.sketch.merge(kll_doubles_sketch.deserialize(sketch))
    return sum(rows for rows, _ in outcomes), scans


def scan_features(
    features: LakePath,
    exclude: set[str],
    edges: Mapping[str, Sequence[float]],
    sketch_k: int,
    tasks: ScanTasks | None = None,
) -> TableScan:
    """Read the numeric columns once: per column nulls, NaNs, values <= each edge, a sketch.

    A NaN is above every edge (as Spark orders it) and, like a null, not in the sketch.
    With ``tasks``, a large table is scanned by Spark tasks, one per core: the sketches
    hold the GIL, so threads would not help (measured: 2 threads, the same time).
    """
    dataset = _dataset(features)
    numeric = numeric_columns(dataset.schema, exclude)
    limits = {c: np.asarray(edges.get(c, ()), dtype=np.float64) for c in numeric}
    if not numeric:
        return TableScan(dataset.count_rows(), dataset.schema, _empty_scans([], {}, sketch_k))
    in_tasks = _scan_with_tasks(features, limits, sketch_k, tasks) if tasks else None
    if in_tasks is not None:
        return TableScan(in_tasks[0], dataset.schema, in_tasks[1])
    scans = _empty_scans(numeric, limits, sketch_k)
    rows = 0
    batches = dataset.to_batches(
        columns=numeric,
        batch_size=_BATCH_ROWS,
        batch_readahead=1,
        fragment_readahead=1,
        use_threads=False,
    )
    for batch in batches:
        rows += batch.num_rows
        _add_batch(scans, limits, batch)
    # pyarrow's pool keeps what the read freed for the next read, a day away: hand it
    # back so the idle reporter stays small.
    pa.default_memory_pool().release_unused()
    return TableScan(rows, dataset.schema, scans)
