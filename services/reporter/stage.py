"""Reporting's figures from the lake: stage manifests, predictions and null fractions.

No Kafka here. The report document is put together in services/reporter/report.py from
these figures, the feature drift (services/reporter/drift.py) and the run's events;
this module reads what the earlier stages wrote: their manifests, the prediction
summary and distribution against the dataset's previous partitions, null fractions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from landfall.contracts import validate_partition
from landfall.errors import InvalidEventError
from landfall.lake import MANIFEST_NAME, Lake, LakePath, Zone, read_manifest
from services.reporter.feature_scan import is_number

__all__ = [
    "PIPELINE_STAGES",
    "Location",
    "as_fractions",
    "null_fractions",
    "prediction_distribution",
    "prediction_summary",
    "previous_partitions",
    "stage_manifests",
]

# The stages before reporting, in order, and the zone each one's output lives in.
PIPELINE_STAGES: dict[str, Zone] = {
    "validation": "validated",
    "featurization": "features",
    "prediction": "predictions",
}
# A prediction column with at most this many distinct values is shown value by value.
_MAX_CATEGORIES = 20
_HISTOGRAM_BINS = 20
_DRIFT_BINS = 10
# Empty bins would make the PSI infinite; a tiny share stands in for "none".
_PSI_FLOOR = 1e-4


# ---------------------------------------------------------------------------- helpers


# A table's folder: in the lake (local or a store), or any local path (tests, benches).
Location = LakePath | Path


def _manifest_of(
    lake: Lake, dataset: str, zone: Zone, partition: str, run_id: str | None
) -> dict[str, Any] | None:
    directory: LakePath | None
    if run_id is None:
        directory = lake.partition_dir(dataset, zone, partition)
    else:
        directory = lake.output_of_run(dataset, zone, partition, run_id)
    if directory is None or not (directory / MANIFEST_NAME).exists():
        return None
    return read_manifest(directory)


def stage_manifests(
    lake: Lake, dataset: str, partition: str, run_id: str | None = None
) -> dict[str, dict[str, Any]]:
    """The manifest of each stage's output for the partition, by stage name.

    ``run_id``: that run's own outputs where it committed them (every run keeps its
    own), else the partition's committed ones.
    """
    manifests = {}
    for stage, zone in PIPELINE_STAGES.items():
        manifest = _manifest_of(lake, dataset, zone, partition, run_id)
        if manifest is None and stage == "validation":
            # A validation over its quality thresholds commits only the quarantine.
            manifest = _manifest_of(lake, dataset, "quarantine", partition, run_id)
        if manifest is not None:
            manifests[stage] = manifest
    return manifests


def previous_partitions(
    lake: Lake, dataset: str, zone: Zone, partition: str, limit: int
) -> list[str]:
    """Up to ``limit`` committed partitions of the dataset in ``zone`` before ``partition``."""
    found = []
    for name in lake.committed_partitions(dataset, zone):
        if name >= partition:
            continue
        try:
            validate_partition(name)
        except InvalidEventError:
            continue  # anything else that is not a partition
        found.append(name)
    return sorted(found)[-limit:]


# ---------------------------------------------------------------------------- figures


def _predictions(location: Location) -> pa.ChunkedArray:
    """A predictions table's ``prediction`` column, the only one read (pyarrow, no Spark).

    Spark had spent 3.2 s of a 5M-row report on this in 6 jobs, reading the reference
    partitions' tables too; the column alone is 40 MB of doubles.
    """
    if isinstance(location, LakePath):
        lake = location.lake
        dataset = pads.dataset(lake.fs_path(location.rel), filesystem=lake.fs, format="parquet")
    else:
        dataset = pads.dataset(str(location), format="parquet")
    if "prediction" not in dataset.schema.names:  # e.g. a table with no part file
        return pa.chunked_array([], pa.null())
    return dataset.to_table(columns=["prediction"]).column("prediction")


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """The non-null values as doubles."""
    present = pc.drop_null(column)
    return pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False)


def _number_figures(values: np.ndarray) -> dict[str, float]:
    """Mean, min and max as Spark computes them: NaN ranks above every number."""
    nan = np.isnan(values)
    numbers = values[~nan]
    return {
        "mean": float(values.mean()),
        "min": float(numbers.min()) if len(numbers) else math.nan,
        "max": math.nan if nan.any() else float(values.max()),
    }


def _ranked_counts(column: pa.ChunkedArray) -> list[tuple[Any, int]]:
    """Each non-null value and its count, the most frequent first (then by value)."""
    counted = pc.value_counts(pc.drop_null(column))
    values, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
    pairs = zip(values, counts, strict=True)
    return sorted(pairs, key=lambda pair: (-pair[1], str(pair[0])))


def prediction_summary(predictions_path: Location) -> dict[str, Any]:
    """Count, the most frequent predicted values, and for numbers their mean, min and max."""
    column = _predictions(predictions_path)
    numeric = is_number(column.type)
    ranked = _ranked_counts(column)
    summary: dict[str, Any] = {"rows": len(column), "null_predictions": column.null_count}
    if ranked:
        summary.update(
            distinct_values=len(ranked),
            # A classifier has few distinct values; a regressor's would be noise here.
            counts_by_value={
                str(float(v) if numeric else v): c for v, c in ranked[:_MAX_CATEGORIES]
            },
        )
    if ranked and numeric:
        summary.update(_number_figures(_numbers(column)))
    return summary


def null_fractions(spark: SparkSession, path: Location) -> dict[str, float]:
    """The fraction of rows with no value, per column of the table at ``path``."""
    frame = spark.read.parquet(str(path))
    if not frame.columns:
        return {}
    row = frame.agg(
        F.count(F.lit(1)).alias("__rows"),
        *[
            F.sum(F.col(f"`{c}`").isNull().cast("long")).alias(f"_{i}")
            for i, c in enumerate(frame.columns)
        ],
    ).first()
    assert row is not None
    rows = int(row["__rows"])
    return {
        c: (int(row[f"_{i}"] or 0) / rows if rows else 0.0) for i, c in enumerate(frame.columns)
    }


def _with_references(
    lake: Lake, dataset: str, zone: Zone, partition: str, current: Location, references: int
) -> tuple[list[str], dict[str, Location]]:
    """The reference partitions before ``partition``, and every table to compare by name."""
    previous = previous_partitions(lake, dataset, zone, partition, references)
    paths: dict[str, Location] = {p: lake.partition_dir(dataset, zone, p) for p in previous}
    paths[partition] = current
    return previous, paths


def prediction_distribution(
    lake: Lake,
    dataset: str,
    partition: str,
    current: Location,
    *,
    references: int,
) -> dict[str, Any]:
    """This partition's predictions next to the previous partitions', as shares per bin.

    Each table's prediction column is read on its own, so memory holds one partition's
    column at a time, never the reference window's.
    """
    previous, paths = _with_references(lake, dataset, "predictions", partition, current, references)
    if not is_number(_predictions(current).type):
        return _label_distribution(paths, partition, previous)
    figures: dict[str, dict[str, Any]] = {}
    for part, path in paths.items():
        values = _numbers(_predictions(path))
        if len(values):
            numbers = values[~np.isnan(values)]  # what the histogram bins
            figures[part] = {
                "rows": len(values),
                **_number_figures(values),
                "distinct": pc.count_distinct(pa.array(values)).as_py(),
                "range": (numbers.min(), numbers.max()) if len(numbers) else None,
            }
    result: dict[str, Any] = {
        "reference_partitions": previous,
        "by_partition": [
            {"partition": p, "rows": figures[p]["rows"], "mean": figures[p]["mean"]}
            for p in [*previous, partition]
            if p in figures
        ],
    }
    if partition not in figures:
        return result | {"kind": "empty", "categories": [], "current": [], "reference": []}
    if max(f["distinct"] for f in figures.values()) <= _MAX_CATEGORIES:
        counts = {
            (part, value): count
            for part, path in paths.items()
            for value, count in _ranked_counts(pc.cast(_predictions(path), pa.float64()))
        }
        categories = sorted({value for _, value in counts})
        if len(categories) <= _MAX_CATEGORIES * 2:
            labels = [_number_label(v) for v in categories]
            return result | _shares("categorical", labels, categories, counts, partition, previous)
    ranges = [f["range"] for f in figures.values() if f["range"] is not None]
    low = float(min((r[0] for r in ranges), default=0.0))
    high = float(max((r[1] for r in ranges), default=low))
    return result | _histogram(paths, low, high, partition, previous)


def _histogram(
    paths: Mapping[str, Location], low: float, high: float, partition: str, previous: list[str]
) -> dict[str, Any]:
    """Shares of predictions in equal-width bins from ``low`` to ``high``, per partition.

    NaN predictions fall in no bin.
    """
    width = (high - low) / _HISTOGRAM_BINS or 1.0
    counts: dict[tuple[str, int], int] = {}
    for part, path in paths.items():
        values = _numbers(_predictions(path))
        values = values[~np.isnan(values)]
        bins = np.minimum(np.floor((values - low) / width), _HISTOGRAM_BINS - 1).astype(np.int64)
        bins = bins[bins >= 0]  # a value below low (none: low is the minimum)
        for b, count in enumerate(np.bincount(bins, minlength=_HISTOGRAM_BINS).tolist()):
            counts[(part, b)] = count
    bins_used = list(range(_HISTOGRAM_BINS))
    labels = [_number_label(low + b * width) for b in bins_used]
    return _shares("histogram", labels, bins_used, counts, partition, previous) | {
        "bin_edges": [low + b * width for b in range(_HISTOGRAM_BINS + 1)]
    }


def _label_distribution(
    paths: Mapping[str, Location], partition: str, previous: Sequence[str]
) -> dict[str, Any]:
    """Shares of each class label (strings, booleans), the rarest beyond a few as one."""
    counts: dict[tuple[str, Any], int] = {}
    totals: dict[str, int] = {}
    for part, path in paths.items():
        # As Spark casts them: booleans are "true" and "false".
        for label, count in _ranked_counts(pc.cast(_predictions(path), pa.string())):
            counts[(part, label)] = count
            totals[part] = totals.get(part, 0) + count
    result: dict[str, Any] = {
        "reference_partitions": previous,
        "by_partition": [
            {"partition": p, "rows": totals[p], "mean": None}
            for p in [*previous, partition]
            if p in totals
        ],
    }
    if partition not in totals:
        return result | {"kind": "empty", "categories": [], "current": [], "reference": []}
    overall: dict[str, int] = {}
    for (_, label), count in counts.items():
        overall[label] = overall.get(label, 0) + count
    ranked = sorted(overall, key=lambda label: (-overall[label], label))
    kept = sorted(ranked[:_MAX_CATEGORIES])
    if len(ranked) > len(kept):
        other = "(other)"
        for (part, label), count in list(counts.items()):
            if label not in kept:
                counts[(part, other)] = counts.get((part, other), 0) + count
        kept.append(other)
    return result | _shares("categorical", kept, kept, counts, partition, previous)


def _number_label(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def _shares(
    kind: str,
    labels: list[str],
    keys: Sequence[Any],
    counts: Mapping[tuple[str, Any], int],
    partition: str,
    previous: Sequence[str],
) -> dict[str, Any]:
    current = [counts.get((partition, k), 0) for k in keys]
    reference = [sum(counts.get((p, k), 0) for p in previous) for k in keys]
    return {
        "kind": kind,
        "categories": labels,
        "current": as_fractions(current),
        "reference": as_fractions(reference) if previous else [],
    }


def as_fractions(counts: Sequence[float]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]
