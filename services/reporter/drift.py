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

from datasketches import kll_doubles_sketch

from landfall.lake import MANIFEST_NAME, Lake, LakePath
from services.reporter.feature_scan import (
    ScanTasks,
    feature_schema,
    numeric_columns,
    scan_features,
    spark_type_name,
)
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


# Drift summaries. Each report stores, beside its report.json, a small summary of its
# partition's feature table (FEATURE_SUMMARY_NAME): per numeric feature the nulls, the
# NaNs and a KLL quantile sketch. A later report merges its reference partitions'
# sketches instead of reading their feature tables again: kilobytes, not gigabytes.
FEATURE_SUMMARY_NAME = "feature_summary.json"
_SUMMARY_FORMAT = 1
# KLL's k: ranks within about 0.3% (99% confidence; typically far closer), about 20 KB
# per feature. The reference's deciles and shares come from the merged sketches.
_SKETCH_K = 1000


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
    features: LakePath,
    exclude: set[str],
    edges: Mapping[str, Sequence[float]],
    tasks: ScanTasks | None = None,
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """One feature table's summary, and how many of its values lie at or below each edge.

    Nulls and NaNs are counted exactly; a NaN is above every edge (as Spark orders it).
    """
    scan = scan_features(features, exclude, edges, _SKETCH_K, tasks)
    summary: dict[str, Any] = {
        "format": _SUMMARY_FORMAT,
        "features": _features_identity(features),
        "sketch_k": _SKETCH_K,
        "rows": scan.rows,
        "columns": {f.name: {"type": spark_type_name(f.type)} for f in scan.schema},
    }
    at_edges: dict[str, list[int]] = {}
    for column, found in scan.columns.items():
        values = scan.rows - found.nulls - found.nans
        summary["columns"][column].update(
            nulls=found.nulls,
            nans=found.nans,
            values=values,
            sketch=(
                base64.b64encode(found.sketch.serialize()).decode("ascii")
                if not found.sketch.is_empty()
                else None
            ),
        )
        at_edges[column] = [int(n) for n in found.at_most_edges]
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
    lake: Lake,
    dataset: str,
    partition: str,
    previous: Sequence[str],
    columns: Sequence[str],
    exclude: set[str],
    tasks: ScanTasks | None = None,
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
            summary, _ = _summarize(features, exclude, {}, tasks)
            keep[reference] = summary
        summaries[reference] = summary
    return summaries, keep


def _reference_bins(
    columns: Sequence[str], summaries: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, list[float]], dict[str, dict[int, float]]]:
    """The reference's decile edges per feature, and its (estimated) rows per bin.

    Bin -1 holds nulls (a partition without the column: all its rows), bin b the values
    above b edges; NaNs sit above every edge. The edges and the shares between them
    come from the merged KLL sketches; nulls and NaNs are exact.
    """
    probabilities = [i / _DRIFT_BINS for i in range(1, _DRIFT_BINS)]
    edges: dict[str, list[float]] = {}
    counts: dict[str, dict[int, float]] = {}
    for column in columns:
        nulls, nans, values, merged = _merged_reference(column, summaries)
        below: list[float] = []
        edges[column] = []
        if merged is not None:
            # As approxQuantile ranks them: NaNs above every number, nulls left out.
            # Lookups are inclusive, as Spark's kll_sketch_get_* (the library's
            # Python default is exclusive).
            ranks = [
                p * (values + nans) / values for p in probabilities if p * (values + nans) <= values
            ]
            quantiles = {merged.get_quantile(r, inclusive=True) for r in ranks}
            edges[column] = sorted(quantiles)
            below = [values * merged.get_rank(e, inclusive=True) for e in edges[column]]
        bins = {-1: float(nulls)}
        previous = 0.0
        for b, at_most in enumerate(below):
            bins[b] = at_most - previous
            previous = at_most
        bins[len(below)] = values - previous + nans
        counts[column] = bins
    return edges, counts


def _merged_reference(
    column: str, summaries: Sequence[Mapping[str, Any]]
) -> tuple[int, int, int, kll_doubles_sketch | None]:
    """A column's nulls, NaNs and values over the references, and their merged sketch."""
    nulls = nans = values = 0
    merged: kll_doubles_sketch | None = None
    for summary in summaries:
        kept = summary["columns"].get(column)
        if kept is None or "sketch" not in kept:
            nulls += int(summary["rows"])
            continue
        nulls, nans = nulls + kept["nulls"], nans + kept["nans"]
        values += kept["values"]
        if kept["sketch"] and kept["values"]:
            sketch = kll_doubles_sketch.deserialize(base64.b64decode(kept["sketch"]))
            if merged is None:
                merged = sketch
            else:
                merged.merge(sketch)
    return nulls, nans, values, merged


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
    lake: Lake,
    dataset: str,
    partition: str,
    current: LakePath,
    *,
    references: int,
    threshold: float,
    exclude: set[str],
    thresholds: Mapping[str, float | None] | None = None,
    tasks: ScanTasks | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The PSI of each numeric feature against the previous partitions, flagged over threshold.

    ``thresholds`` gives columns their own threshold (the dataset's ``drift``), None
    for a column not watched: it is summarized (so it can be watched later) but has no
    PSI and is never flagged. Columns not in it take ``threshold``.

    Bins are the reference's deciles (nulls a bin of their own), so a shift that moves
    rows between deciles shows up whatever the feature's scale. Also returns the
    summaries to store with this report (by partition): this partition's, and those of
    references that had none stored. ``tasks``: scan large feature tables as Spark tasks.
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
    columns = numeric_columns(feature_schema(current), exclude)
    summaries, keep = _reference_summaries(
        lake, dataset, partition, previous, columns, exclude, tasks
    )
    edges, expected = _reference_bins(columns, [summaries[p] for p in previous])
    own, at_edges = _summarize(current, exclude, edges if previous else {}, tasks)
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
