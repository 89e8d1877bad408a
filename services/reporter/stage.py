"""Reporting's figures from the lake: stage manifests, predictions and null fractions.

No Kafka here. The report document is put together in services/reporter/report.py from
these figures, the feature drift (services/reporter/drift.py) and the run's events;
this module reads what the earlier stages wrote: their manifests, the prediction
summary and distribution against the dataset's previous partitions, null fractions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType

from landfall.contracts import validate_partition
from landfall.errors import InvalidEventError
from landfall.lake import MANIFEST_NAME, Lake, LakePath, Zone, read_manifest

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


# A folder Spark reads: in the lake (local or a store), or any local path (tests, benches).
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


def _predicts_numbers(frame: DataFrame) -> bool:
    """Whether predictions are numbers; class labels may also be strings or booleans."""
    return isinstance(frame.schema["prediction"].dataType, NumericType)


def prediction_summary(spark: SparkSession, predictions_path: Location) -> dict[str, Any]:
    """Count, the most frequent predicted values, and for numbers their mean, min and max."""
    frame = spark.read.parquet(str(predictions_path))
    numeric = _predicts_numbers(frame)
    grouped = frame.groupBy("prediction").count().orderBy(F.desc("count")).limit(1000).collect()
    total = frame.count() if len(grouped) == 1000 else sum(int(r["count"]) for r in grouped)
    values = [
        (float(r["prediction"]) if numeric else str(r["prediction"]), int(r["count"]))
        for r in grouped
        if r["prediction"] is not None
    ]
    nulls = sum(int(r["count"]) for r in grouped if r["prediction"] is None)
    summary: dict[str, Any] = {"rows": total, "null_predictions": nulls}
    if values:
        summary.update(
            distinct_values=len(values),
            # A classifier has few distinct values; a regressor's would be noise here.
            counts_by_value={str(v): c for v, c in values[:_MAX_CATEGORIES]},
        )
    if values and numeric:
        stats = frame.agg(F.avg("prediction"), F.min("prediction"), F.max("prediction")).first()
        assert stats is not None
        summary.update(mean=float(stats[0]), min=float(stats[1]), max=float(stats[2]))
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


def _labelled(
    spark: SparkSession, paths: Mapping[str, Location], columns: Sequence[str]
) -> DataFrame:
    """The given tables stacked, each row labelled with its partition in ``_part``."""
    frames = []
    for partition, path in paths.items():
        frame = spark.read.parquet(str(path))
        present = [c for c in columns if c in frame.columns]
        frames.append(
            frame.select(*[F.col(f"`{c}`") for c in present], F.lit(partition).alias("_part"))
        )
    stacked = frames[0]
    for frame in frames[1:]:
        stacked = stacked.unionByName(frame, allowMissingColumns=True)
    return stacked


def prediction_distribution(
    spark: SparkSession,
    lake: Lake,
    dataset: str,
    partition: str,
    current: Location,
    *,
    references: int,
) -> dict[str, Any]:
    """This partition's predictions next to the previous partitions', as shares per bin."""
    previous, paths = _with_references(lake, dataset, "predictions", partition, current, references)
    stacked = _labelled(spark, paths, ["prediction"]).where(F.col("prediction").isNotNull())
    if not _predicts_numbers(spark.read.parquet(str(current))):
        as_labels = stacked.withColumn("prediction", F.col("prediction").cast("string"))
        return _label_distribution(as_labels, partition, previous)
    stacked = stacked.withColumn("prediction", F.col("prediction").cast("double"))
    per_part = {
        r["_part"]: r
        for r in stacked.groupBy("_part")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.avg("prediction").alias("mean"),
            F.min("prediction").alias("min"),
            F.max("prediction").alias("max"),
            F.approx_count_distinct("prediction").alias("distinct"),
        )
        .collect()
    }
    result: dict[str, Any] = {
        "reference_partitions": previous,
        "by_partition": [
            {"partition": p, "rows": int(per_part[p]["rows"]), "mean": float(per_part[p]["mean"])}
            for p in [*previous, partition]
            if p in per_part
        ],
    }
    if partition not in per_part:
        return result | {"kind": "empty", "categories": [], "current": [], "reference": []}
    distinct = max(int(r["distinct"]) for r in per_part.values())
    counts: dict[tuple[str, Any], int]
    if distinct <= _MAX_CATEGORIES:
        rows = stacked.groupBy("_part", "prediction").count().collect()
        categories_raw = sorted({float(r["prediction"]) for r in rows})
        if len(categories_raw) <= _MAX_CATEGORIES * 2:
            counts = {(r["_part"], float(r["prediction"])): int(r["count"]) for r in rows}
            labels = [_number_label(v) for v in categories_raw]
            return result | _shares(
                "categorical", labels, categories_raw, counts, partition, previous
            )
    low = min(float(r["min"]) for r in per_part.values())
    high = max(float(r["max"]) for r in per_part.values())
    return result | _histogram(stacked, low, high, partition, previous)


def _histogram(
    stacked: DataFrame, low: float, high: float, partition: str, previous: list[str]
) -> dict[str, Any]:
    """Shares of predictions in equal-width bins from ``low`` to ``high``, per partition."""
    width = (high - low) / _HISTOGRAM_BINS or 1.0
    bucket = F.least(
        F.floor((F.col("prediction") - F.lit(low)) / F.lit(width)).cast("int"),
        F.lit(_HISTOGRAM_BINS - 1),
    )
    rows = stacked.groupBy("_part", bucket.alias("bin")).count().collect()
    counts = {(r["_part"], int(r["bin"])): int(r["count"]) for r in rows}
    bins = list(range(_HISTOGRAM_BINS))
    labels = [_number_label(low + b * width) for b in bins]
    return _shares("histogram", labels, bins, counts, partition, previous) | {
        "bin_edges": [low + b * width for b in range(_HISTOGRAM_BINS + 1)]
    }


def _label_distribution(
    labels: DataFrame, partition: str, previous: Sequence[str]
) -> dict[str, Any]:
    """Shares of each class label (strings, booleans), the rarest beyond a few as one."""
    rows = labels.groupBy("_part", "prediction").count().collect()
    counts: dict[tuple[str, Any], int] = {}
    totals: dict[str, int] = {}
    for r in rows:
        counts[(r["_part"], r["prediction"])] = int(r["count"])
        totals[r["_part"]] = totals.get(r["_part"], 0) + int(r["count"])
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
