"""Reporting: one report per batch run, from the stage manifests, the events and the data.

No Kafka here. Given a run's completion (or failure) event and what the reporter saw of
its earlier stages (``progress``), this builds the report document: row counts, data
quality per rule, null fractions, the model, a stage timeline, and, for a scored run,
the prediction distribution and feature drift (population stability index) against the
dataset's previous partitions, computed with Spark from the lake.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
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
    "build_failure_report",
    "build_success_report",
    "FEATURE_SUMMARY_NAME",
    "feature_drift",
    "null_fractions",
    "population_stability_index",
    "prediction_distribution",
    "prediction_summary",
    "previous_partitions",
    "timeline",
    "write_feature_summaries",
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


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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


def _relative(path: LakePath | None) -> str | None:
    return path.rel if path is not None else None


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
    width = (high - low) / _HISTOGRAM_BINS or 1.0
    bucket = F.least(
        F.floor((F.col("prediction") - F.lit(low)) / F.lit(width)).cast("int"),
        F.lit(_HISTOGRAM_BINS - 1),
    )
    rows = stacked.groupBy("_part", bucket.alias("bin")).count().collect()
    counts = {(r["_part"], int(r["bin"])): int(r["count"]) for r in rows}
    bins = list(range(_HISTOGRAM_BINS))
    labels = [_number_label(low + b * width) for b in bins]
    return (
        result
        | _shares("histogram", labels, bins, counts, partition, previous)
        | {"bin_edges": [low + b * width for b in range(_HISTOGRAM_BINS + 1)]}
    )


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
        "current": _fractions(current),
        "reference": _fractions(reference) if previous else [],
    }


def _fractions(counts: Sequence[float]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def population_stability_index(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins of two share vectors (each sums to 1)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, _PSI_FLOOR), max(a, _PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def _numeric_columns(frame: DataFrame, exclude: set[str]) -> list[str]:
    return [
        f.name
        for f in frame.schema.fields
        if isinstance(f.dataType, NumericType) and f.name not in exclude
    ]


# Drift summaries. Each report stores, beside its report.json, a small summary of its
# partition's feature table (FEATURE_SUMMARY_NAME): per numeric feature the nulls, the
# NaNs and a KLL quantile sketch. A later report merges its reference partitions'
# sketches instead of reading their feature tables again: kilobytes, not gigabytes.
FEATURE_SUMMARY_NAME = "feature_summary.json"
_SUMMARY_FORMAT = 1
# KLL's k: ranks within about 0.3% (99% confidence; typically far closer), about 20 KB
# per feature. The reference's deciles and shares come from the merged sketches.
_SKETCH_K = 1000
# Features counted per Spark pass over the current partition. Parquet reads only the
# pass's columns, so passes cost little; one pass over every feature's comparisons
# would make generated code whose compilation takes longer than the counting.
_FEATURES_PER_PASS = 8


def _read_json(path: LakePath) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _features_identity(features: LakePath) -> dict[str, Any]:
    """What a summary was made of: the feature output's folder and its manifest's run."""
    manifest = _read_json(features / MANIFEST_NAME) or {}
    return {"path": features.rel} | {
        key: manifest.get(key) for key in ("run_id", "event_id", "committed_at")
    }


def _summarize(
    spark: SparkSession,
    features: LakePath,
    exclude: set[str],
    edges: Mapping[str, Sequence[float]],
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """One feature table's summary, and how many of its values lie at or below each edge.

    Nulls and NaNs are counted exactly; a NaN is above every edge (as Spark orders it).
    """
    frame = spark.read.parquet(str(features))
    numeric = _numeric_columns(frame, exclude)
    summary: dict[str, Any] = {
        "format": _SUMMARY_FORMAT,
        "features": _features_identity(features),
        "sketch_k": _SKETCH_K,
        "rows": 0,
        "columns": {f.name: {"type": f.dataType.simpleString()} for f in frame.schema.fields},
    }
    at_edges: dict[str, list[int]] = {}
    step = _FEATURES_PER_PASS
    groups = [numeric[i : i + step] for i in range(0, len(numeric), step)] or [[]]
    for group in groups:
        aggregates = [F.count(F.lit(1)).alias("rows")]
        for i, column in enumerate(group):
            value = F.col(f"`{column}`").cast("double")
            aggregates += [
                F.count_if(value.isNull()).alias(f"nulls{i}"),
                F.count_if(F.isnan(value)).alias(f"nans{i}"),
                F.kll_sketch_agg_double(value, _SKETCH_K).alias(f"sketch{i}"),
            ]
            aggregates += [
                F.count_if(value <= F.lit(edge)).alias(f"edge{i}_{j}")
                for j, edge in enumerate(edges.get(column, ()))
            ]
        row = frame.agg(*aggregates).first()
        assert row is not None
        summary["rows"] = rows = int(row["rows"])
        for i, column in enumerate(group):
            nulls, nans = int(row[f"nulls{i}"]), int(row[f"nans{i}"])
            sketch = row[f"sketch{i}"]
            summary["columns"][column].update(
                nulls=nulls,
                nans=nans,
                values=rows - nulls - nans,
                sketch=base64.b64encode(bytes(sketch)).decode("ascii") if sketch else None,
            )
            at_edges[column] = [int(row[f"edge{i}_{j}"]) for j in range(len(edges.get(column, ())))]
    return summary, at_edges


def _covers(summary: Mapping[str, Any], columns: Sequence[str]) -> bool:
    """Whether a summary has every one of ``columns`` that its table has as a number."""
    kept = summary.get("columns", {})
    return summary.get("format") == _SUMMARY_FORMAT and all(
        "sketch" in kept[c] for c in columns if c in kept and _is_numeric_type(kept[c]["type"])
    )


def _is_numeric_type(name: str) -> bool:
    return name in {"tinyint", "smallint", "int", "bigint", "float", "double"} or name.startswith(
        "decimal"
    )


def _reference_summaries(
    spark: SparkSession,
    lake: Lake,
    dataset: str,
    partition: str,
    previous: Sequence[str],
    columns: Sequence[str],
    exclude: set[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each reference partition's summary, and those to keep with this report.

    A partition's summary is stored with its own committed report, or, if that report
    had none (a lake older than summaries), with a later report that made it. A stored
    summary counts only if it was made of the feature output committed now (a partition
    featurized again has a new one) and has every wanted column; else it is made from
    the feature table, once: it is kept with this report for the next ones.
    """
    stored = {
        folder: (
            _read_json(lake.partition_dir(dataset, "reports", folder) / FEATURE_SUMMARY_NAME) or {}
        ).get("partitions")
        or {}
        for folder in [*previous, partition]
    }
    summaries, keep = {}, {}
    for reference in previous:
        identity = _features_identity(lake.partition_dir(dataset, "features", reference))
        candidates = [(reference, stored[reference].get(reference))] + [
            (folder, found[reference])
            for folder, found in stored.items()
            if folder != reference and reference in found
        ]
        usable = [
            (folder, summary)
            for folder, summary in candidates
            if isinstance(summary, dict)
            and summary.get("features") == identity
            and _covers(summary, columns)
        ]
        if usable:
            folder, summary = usable[0]
            if folder != reference:
                keep[reference] = summary  # carried forward while the window holds it
        else:
            features = lake.partition_dir(dataset, "features", reference)
            summary, _ = _summarize(spark, features, exclude, {})
            keep[reference] = summary
        summaries[reference] = summary
    return summaries, keep


def _reference_bins(
    spark: SparkSession, columns: Sequence[str], summaries: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, list[float]], dict[str, dict[int, float]]]:
    """The reference's decile edges per feature, and its (estimated) rows per bin.

    Bin -1 holds nulls (a partition without the column: all its rows), bin b the values
    above b edges; NaNs sit above every edge. The edges and the shares between them
    come from the merged KLL sketches; nulls and NaNs are exact.
    """
    sketches: list[tuple[int, bytes]] = []
    totals: dict[str, tuple[int, int, int]] = {}
    for index, column in enumerate(columns):
        nulls = nans = values = 0
        for summary in summaries:
            kept = summary["columns"].get(column)
            if kept is None or "sketch" not in kept:
                nulls += int(summary["rows"])
                continue
            nulls, nans = nulls + kept["nulls"], nans + kept["nans"]
            values += kept["values"]
            if kept["sketch"] and kept["values"]:
                sketches.append((index, base64.b64decode(kept["sketch"])))
        totals[column] = (nulls, nans, values)
    merged: dict[int, bytes] = {}
    if sketches:
        rows = (
            spark.createDataFrame(sketches, "feature int, sketch binary")
            .groupBy("feature")
            .agg(F.kll_merge_agg_double("sketch").alias("merged"))
            .collect()
        )
        merged = {int(r["feature"]): bytes(r["merged"]) for r in rows}
    probabilities = [i / _DRIFT_BINS for i in range(1, _DRIFT_BINS)]
    # As approxQuantile ranks them: NaNs above every number, nulls left out.
    ranks: dict[int, list[float]] = {}
    for index, column in enumerate(columns):
        _, nans, values = totals[column]
        if index in merged:
            ranks[index] = [
                p * (values + nans) / values for p in probabilities if p * (values + nans) <= values
            ]
    quantiles = _sketch_lookups(spark, merged, ranks, "quantile")
    edges = {column: sorted(set(quantiles.get(index, []))) for index, column in enumerate(columns)}
    cumulative = _sketch_lookups(
        spark, merged, {i: edges[c] for i, c in enumerate(columns) if edges[c]}, "rank"
    )
    counts: dict[str, dict[int, float]] = {}
    for index, column in enumerate(columns):
        nulls, nans, values = totals[column]
        below = [values * r for r in cumulative.get(index, [])]
        bins = {-1: float(nulls)}
        previous = 0.0
        for b, at_most in enumerate(below):
            bins[b] = at_most - previous
            previous = at_most
        bins[len(below)] = values - previous + nans
        counts[column] = bins
    return edges, counts


def _sketch_lookups(
    spark: SparkSession, sketches: Mapping[int, bytes], points: Mapping[int, list[float]], kind: str
) -> dict[int, list[float]]:
    """Quantiles at ranks (``kind`` "quantile") or ranks at values ("rank") of sketches."""
    wanted = [i for i in sketches if points.get(i)]
    if not wanted:
        return {}
    frame = spark.createDataFrame(
        [tuple(sketches[i] for i in wanted)], ", ".join(f"s{i} binary" for i in wanted)
    )
    lookup = (
        F.kll_sketch_get_quantile_double if kind == "quantile" else F.kll_sketch_get_rank_double
    )
    row = frame.select(
        *[
            lookup(F.col(f"s{i}"), F.array(*[F.lit(float(x)) for x in points[i]])).alias(f"s{i}")
            for i in wanted
        ]
    ).first()
    assert row is not None
    return {i: [float(x) for x in row[f"s{i}"]] for i in wanted}


def feature_drift(
    spark: SparkSession,
    lake: Lake,
    dataset: str,
    partition: str,
    current: LakePath,
    *,
    references: int,
    threshold: float,
    exclude: set[str],
    thresholds: Mapping[str, float | None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The PSI of each numeric feature against the previous partitions, flagged over threshold.

    ``thresholds`` gives columns their own threshold (the dataset's ``drift``), None
    for a column not watched: it is summarized (so it can be watched later) but has no
    PSI and is never flagged. Columns not in it take ``threshold``.

    Bins are the reference's deciles (nulls a bin of their own), so a shift that moves
    rows between deciles shows up whatever the feature's scale. Also returns the
    summaries to store with this report (by partition): this partition's, and those of
    references that had none stored.
    """
    previous = previous_partitions(lake, dataset, "features", partition, references)
    result: dict[str, Any] = {
        "threshold": threshold,
        "reference_partitions": previous,
        "features": {},
        "flagged": [],
    }
    own_thresholds = dict(thresholds or {})
    off = sorted(c for c, limit in own_thresholds.items() if limit is None)
    if off:
        result["not_watched"] = off
    columns = _numeric_columns(spark.read.parquet(str(current)), exclude)
    summaries, keep = _reference_summaries(
        spark, lake, dataset, partition, previous, columns, exclude
    )
    edges, expected = _reference_bins(spark, columns, [summaries[p] for p in previous])
    own, at_edges = _summarize(spark, current, exclude, edges if previous else {})
    keep[partition] = own
    if not previous:
        result["note"] = "no previous partitions to compare with"
        return result, keep
    if not columns:
        result["note"] = "no numeric features"
        return result, keep
    for column in columns:
        limit = own_thresholds.get(column, threshold)
        if limit is None:
            continue
        kept = own["columns"][column]
        actual = {-1: kept["nulls"]}
        previous_count = 0
        for b, at_most in enumerate(at_edges[column]):
            actual[b] = at_most - previous_count
            previous_count = at_most
        actual[len(at_edges[column])] = own["rows"] - kept["nulls"] - previous_count
        bins = sorted(set(actual) | set(expected[column]))
        psi = population_stability_index(
            _fractions([expected[column].get(b, 0.0) for b in bins]),
            _fractions([actual.get(b, 0) for b in bins]),
        )
        flagged = psi > limit
        result["features"][column] = {"psi": round(psi, 6), "flagged": flagged, "threshold": limit}
        if flagged:
            result["flagged"].append(column)
    return result, keep


def write_feature_summaries(folder: LakePath, summaries: Mapping[str, Any]) -> None:
    """Store the summaries a report made in its output folder, committed with it."""
    document = {"format": _SUMMARY_FORMAT, "partitions": dict(summaries)}
    (folder / FEATURE_SUMMARY_NAME).write_text(json.dumps(document, sort_keys=True))


# ---------------------------------------------------------------------------- timeline


def timeline(
    run_id: str,
    progress: Mapping[str, Any],
    manifests: Mapping[str, Mapping[str, Any]],
    reporting: tuple[datetime, datetime] | None = None,
    failed: tuple[str, datetime] | None = None,
) -> list[dict[str, Any]]:
    """When each stage of the run started and finished, from its events or its manifest.

    A failed stage (name, when it failed) spans from the end of the stage before it,
    or from the submission, to its failure.
    """
    spans = []
    seen = progress.get("stages", {})
    for stage in PIPELINE_STAGES:
        entry = seen.get(stage)
        manifest = manifests.get(stage)
        if entry is not None:
            finished, duration = _time(entry.get("finished_at")), entry.get("duration_ms")
            rows, event_id = entry.get("rows"), entry.get("event_id")
        elif manifest is not None and manifest.get("run_id") == run_id:
            finished = _time(manifest.get("committed_at"))
            duration = int(manifest.get("timings_ms", {}).get("total", 0))
            manifest_rows = manifest.get("rows", {})
            rows = next(iter(manifest_rows.values()), None) if len(manifest_rows) == 1 else None
            if stage == "validation":
                rows = manifest_rows.get("landed")
            event_id = None
        else:
            continue
        if finished is None:
            continue
        duration = int(duration or 0)
        spans.append(
            {
                "stage": stage,
                "status": "SUCCEEDED",
                "started_at": _iso(finished - timedelta(milliseconds=duration)),
                "finished_at": _iso(finished),
                "duration_ms": duration,
                "rows": rows,
                "event_id": event_id,
            }
        )
    if failed is not None and failed[0] not in {s["stage"] for s in spans} | {"reporting"}:
        stage, failed_at = failed
        previous = _time(spans[-1]["finished_at"]) if spans else _time(progress.get("submitted_at"))
        began = min(previous or failed_at, failed_at)
        spans.append(
            {
                "stage": stage,
                "status": "FAILED",
                "started_at": _iso(began),
                "finished_at": _iso(failed_at),
                "duration_ms": int((failed_at - began).total_seconds() * 1000),
                "rows": None,
                "event_id": None,
            }
        )
    if reporting is not None:
        started, finished = reporting
        spans.append(
            {
                "stage": "reporting",
                "status": "SUCCEEDED",
                "started_at": _iso(started),
                "finished_at": _iso(finished),
                "duration_ms": int((finished - started).total_seconds() * 1000),
                "rows": None,
                "event_id": None,
            }
        )
    return spans


# ---------------------------------------------------------------------------- reports


def _quality(validation: Mapping[str, Any], progress: Mapping[str, Any]) -> dict[str, Any]:
    seen = progress.get("stages", {}).get("validation", {})
    failures = (
        validation.get("failures_by_rule")
        or validation.get("failures_by_check")
        or seen.get("failures_by_rule")
        or {}
    )
    return {
        "failures_by_rule": {str(k): int(v) for k, v in failures.items()},
        "rule_severities": validation.get("severities", {}),
        "threshold_breaches": validation.get("threshold_breaches", []),
        "null_fractions": validation.get("null_fraction") or seen.get("null_fraction") or {},
    }


def build_success_report(
    spark: SparkSession,
    lake: Lake,
    predicted: Mapping[str, Any],
    *,
    progress: Mapping[str, Any],
    psi_threshold: float,
    reference_partitions: int,
    id_column: str = "id",
    drift_thresholds: Mapping[str, float | None] | None = None,
) -> dict[str, Any]:
    """The report of a batch run whose predictions are committed.

    ``drift_thresholds``: each feature column's own PSI threshold, None for one not
    watched (``DatasetConfig.drift_thresholds``); others take ``psi_threshold``.
    """
    dataset, partition, run_id = predicted["dataset"], predicted["partition"], predicted["run_id"]
    manifests = stage_manifests(lake, dataset, partition, run_id)
    # A newer run of the same partition may have replaced an earlier stage's output
    # while this one was scoring; the report says so rather than mixing runs silently.
    foreign = sorted(s for s, m in manifests.items() if m.get("run_id") != run_id)
    validation = manifests.get("validation", {})
    rows = validation.get("rows", {})
    quality = _quality(validation, progress)
    validated = lake.output_of_run(dataset, "validated", partition, run_id)
    if quality["null_fractions"]:
        quality["null_fractions_of"] = "landed rows (from the validator)"
    elif validated is not None and (validated / MANIFEST_NAME).exists():
        quality["null_fractions"] = null_fractions(spark, validated)
        quality["null_fractions_of"] = "valid rows (computed by the reporter)"
    # Only the predictions zone of the run's own dataset, and no symlinks.
    predictions_path = lake.input_dir(
        predicted["output_path"], dataset=dataset, zone="predictions", partition=partition
    )
    features_path = lake.output_of_run(dataset, "features", partition, run_id)
    drift: dict[str, Any] = {"threshold": psi_threshold, "features": {}, "flagged": []}
    summaries: dict[str, Any] = {}
    if features_path is not None:
        drift, summaries = feature_drift(
            spark,
            lake,
            dataset,
            partition,
            features_path,
            references=reference_partitions,
            threshold=psi_threshold,
            exclude={id_column},
            thresholds=drift_thresholds,
        )
    return {
        "status": "SUCCEEDED",
        "dataset": dataset,
        "partition": partition,
        "batch_id": predicted["batch_id"],
        "run_id": run_id,
        "requested_model_version": progress.get("requested_model_version"),
        "rows": {
            "landed": rows.get("landed"),
            "valid": rows.get("valid"),
            "quarantined": rows.get("quarantined"),
            "scored": predicted["rows"],
        },
        **quality,
        "model": {
            "name": predicted["model_name"],
            "version": predicted["model_version"],
            "uri": predicted["model_uri"],
        },
        "outputs": {stage: m.get("path") for stage, m in manifests.items()}
        | {"quarantine": _relative(lake.output_of_run(dataset, "quarantine", partition, run_id))},
        "predictions": prediction_summary(spark, predictions_path),
        "prediction_distribution": prediction_distribution(
            spark, lake, dataset, partition, predictions_path, references=reference_partitions
        ),
        "drift": drift,
        "stages_from_other_runs": foreign,
        "manifests": manifests,
        # Not part of the report: what the reporter stores beside it (drift summaries).
        "feature_summaries": summaries,
    }


def build_failure_report(
    lake: Lake, failed: Mapping[str, Any], *, progress: Mapping[str, Any]
) -> dict[str, Any]:
    """The report of a batch run that a stage failed."""
    run_id = failed["run_id"]
    found = stage_manifests(lake, failed["dataset"], failed["partition"], run_id)
    manifests = {stage: m for stage, m in found.items() if m.get("run_id") == run_id}
    validation = manifests.get("validation", {})
    rows = validation.get("rows", {})
    model = {}
    if "prediction" in manifests:
        model = dict(manifests["prediction"].get("model", {}))
    return {
        "status": "FAILED",
        "dataset": failed["dataset"],
        "partition": failed["partition"],
        "batch_id": failed["batch_id"],
        "run_id": run_id,
        "requested_model_version": progress.get("requested_model_version"),
        "failed_stage": failed["stage"],
        "failure_reason": failed["reason"],
        "failure_details": dict(failed.get("details") or {}),
        "retryable": failed["retryable"],
        "failed_at": _iso(_time(failed.get("occurred_at"))),
        "failure_event_id": failed.get("event_id"),
        "rows": {
            "landed": rows.get("landed"),
            "valid": rows.get("valid"),
            "quarantined": rows.get("quarantined"),
            "scored": None,
        },
        **_quality(validation, progress),
        "model": {k: model.get(k) for k in ("name", "version", "uri")},
        "outputs": {stage: m.get("path") for stage, m in manifests.items()},
        "manifests": manifests,
    }
