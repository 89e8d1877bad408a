"""Feature drift: each feature's population stability index against earlier partitions.

Each report stores, beside its report.json, a small summary of its partition's feature
table: per numeric feature the nulls, the NaNs and a KLL quantile sketch. A later report
merges its reference partitions' sketches instead of reading their feature tables again,
so the drift window reads kilobytes, not gigabytes.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType

from landfall.lake import MANIFEST_NAME, Lake, LakePath
from services.reporter.stage import as_fractions, previous_partitions

__all__ = [
    "FEATURE_SUMMARY_NAME",
    "feature_drift",
    "population_stability_index",
    "write_feature_summaries",
]

_DRIFT_BINS = 10
# Empty bins would make the PSI infinite; a tiny share stands in for "none".
_PSI_FLOOR = 1e-4


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


def _bin_counts(rows: int, nulls: int, at_most_edges: Sequence[int]) -> dict[int, int]:
    """Rows per bin (-1: nulls) from how many rows lie at or below each bin edge."""
    counts = {-1: nulls}
    below = 0
    for b, at_most in enumerate(at_most_edges):
        counts[b] = at_most - below
        below = at_most
    counts[len(at_most_edges)] = rows - nulls - below
    return counts


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
    if not previous or not columns:
        nothing = "no numeric features" if previous else "no previous partitions to compare with"
        result["note"] = nothing
        return result, keep
    for column in columns:
        limit = own_thresholds.get(column, threshold)
        if limit is None:
            continue
        actual = _bin_counts(own["rows"], own["columns"][column]["nulls"], at_edges[column])
        bins = sorted(set(actual) | set(expected[column]))
        psi = population_stability_index(
            as_fractions([expected[column].get(b, 0.0) for b in bins]),
            as_fractions([actual.get(b, 0) for b in bins]),
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
