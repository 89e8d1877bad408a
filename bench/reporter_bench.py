"""The reporter's drift computation, the old way beside the new, in one run.

    python bench/reporter_bench.py --rows 1000000 5000000

For each size it writes a lake of one dataset (legacy in-place commits: parquet files
and ``_manifest.json`` in each partition folder): two reference partitions and the
partition being reported, each ``rows`` rows of an id and 32 numeric features (20
floats, two of them with 1% nulls; two one-hot encoded categories of 5 values; two
ordinals), the current partition with three features shifted. Then, on one local
Spark session, after an untimed warm-up round:

- **old**: the reporter before drift summaries: the current and reference feature
  tables stacked, ``approxQuantile`` over the reference, every row exploded into one
  row per feature and aggregated;
- **new, cold**: :func:`services.reporter.drift.feature_drift` on a lake whose reports
  carry no summaries (an older lake): each reference's summary is made from its table;
- **new, warm**: the same once the references' reports carry their summaries (every
  report after the first): only the current table is read.

The prediction side of the report (summary and distribution, unchanged) is timed too,
to put the drift in proportion. It prints a Markdown table and checks that every
feature's PSI agrees with the old way's within the stated tolerance and that the same
features are flagged.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from landfall.config import SparkSettings
from landfall.lake import MANIFEST_NAME, Lake
from landfall.spark import create_spark_session
from services.reporter import drift as reporter
from services.reporter.drift import (
    _DRIFT_BINS,
    feature_drift,
    population_stability_index,
    write_feature_summaries,
)
from services.reporter.feature_scan import feature_schema, numeric_columns
from services.reporter.stage import (
    as_fractions,
    prediction_distribution,
    prediction_summary,
    previous_partitions,
)

DATASET = "bench"
REFERENCES = ["2026-11-01", "2026-11-02"]
CURRENT = "2026-11-03"
THRESHOLD = 0.2
# What "equal" means for PSI (the reference's deciles and shares come from sketches):
# within 0.02 absolute or 5% relative, whichever is larger, and the same flags.
PSI_ABSOLUTE, PSI_RELATIVE = 0.02, 0.05


def land(
    spark: SparkSession, lake: Lake, partition: str, rows: int, seed: int, shift: float
) -> None:
    """One partition's features and predictions, committed in place with manifests."""
    base = spark.range(rows, numPartitions=4)
    floats = [
        (F.randn(seed * 100 + i) * (i + 1) + i + (shift if i < 3 else 0.0)).alias(f"x{i}")
        for i in range(20)
    ]
    floats[5] = F.when(F.rand(seed * 100 + 50) < 0.01, None).otherwise(floats[5]).alias("x5")
    floats[6] = F.when(F.rand(seed * 100 + 51) < 0.01, None).otherwise(floats[6]).alias("x6")
    category_a = (F.rand(seed * 100 + 60) * 5).cast("int")
    category_b = (F.pow(F.rand(seed * 100 + 61), 2) * 5).cast("int")
    features = base.select(
        F.concat(F.lit("r"), F.col("id").cast("string")).alias("id"),
        *floats,
        *[(category_a == v).cast("double").alias(f"a_{v}") for v in range(5)],
        *[(category_b == v).cast("double").alias(f"b_{v}") for v in range(5)],
        category_a.cast("double").alias("a_rank"),
        category_b.cast("double").alias("b_rank"),
    )
    _commit(lake, "features", partition, features, rows)
    predictions = spark.read.parquet(str(lake.partition_dir(DATASET, "features", partition)))
    _commit(
        lake,
        "predictions",
        partition,
        predictions.select(
            "id", (F.col("x0") + F.col("a_1") > 1.0).cast("double").alias("prediction")
        ),
        rows,
    )


def _commit(lake: Lake, zone: Any, partition: str, frame: DataFrame, rows: int) -> None:
    folder = lake.partition_root(DATASET, zone, partition)
    frame.write.mode("overwrite").parquet(str(folder))
    manifest = {
        "dataset": DATASET,
        "partition": partition,
        "run_id": f"run-{zone}-{partition}",
        "event_id": f"event-{zone}-{partition}",
        "committed_at": f"{partition}T00:00:00+00:00",
        "rows": {zone: rows},
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def store_summaries(lake: Lake) -> None:
    """Give each reference partition a committed report carrying its summary."""
    for partition in REFERENCES:
        features = lake.partition_dir(DATASET, "features", partition)
        summary, _ = reporter._summarize(features, {"id"}, {})
        folder = lake.partition_root(DATASET, "reports", partition)
        folder.mkdir(parents=True, exist_ok=True)
        write_feature_summaries(folder, {partition: summary})
        (folder / MANIFEST_NAME).write_text(json.dumps({"run_id": f"run-reports-{partition}"}))


# ------------------------------------------------------------------ the old way


def _bin_of(column: str, edges: Sequence[float]) -> Column:
    value = F.col(f"`{column}`").cast("double")
    index: Column = F.lit(0)
    for edge in edges:
        index = index + (value > F.lit(edge)).cast("int")
    return F.when(value.isNull(), F.lit(-1)).otherwise(index)


def old_feature_drift(spark: SparkSession, lake: Lake, partition: str) -> dict[str, float]:
    """The reporter's drift before summaries (PSI per feature), as it was written."""
    previous = previous_partitions(lake, DATASET, "features", partition, 7)
    paths = {p: lake.partition_dir(DATASET, "features", p) for p in [*previous, partition]}
    current = paths[partition]
    columns = numeric_columns(feature_schema(current), {"id"})
    frames = []
    for name, path in paths.items():
        frame = spark.read.parquet(str(path))
        frames.append(frame.select(*[F.col(f"`{c}`") for c in columns], F.lit(name).alias("_part")))
    stacked = frames[0]
    for frame in frames[1:]:
        stacked = stacked.unionByName(frame, allowMissingColumns=True)
    stacked = stacked.withColumn("_current", F.col("_part") == F.lit(partition))
    reference = stacked.where(~F.col("_current"))
    probabilities = [i / _DRIFT_BINS for i in range(1, _DRIFT_BINS)]
    quantiles = reference.approxQuantile(columns, probabilities, 0.001)
    edges = {c: sorted(set(q)) for c, q in zip(columns, quantiles, strict=True)}
    binned = stacked.select(
        "_current", *[_bin_of(c, edges[c]).alias(f"_b{i}") for i, c in enumerate(columns)]
    )
    pairs = F.array(
        *[
            F.struct(F.lit(i).alias("feature"), F.col(f"_b{i}").alias("bin"))
            for i in range(len(columns))
        ]
    )
    rows = (
        binned.select("_current", F.explode(pairs).alias("x"))
        .groupBy("_current", "x.feature", "x.bin")
        .count()
        .collect()
    )
    counts = {
        (bool(r["_current"]), int(r["feature"]), int(r["bin"])): int(r["count"]) for r in rows
    }
    psi = {}
    for i, column in enumerate(columns):
        bins = sorted({b for (_, f, b) in counts if f == i})
        expected = as_fractions([counts.get((False, i, b), 0) for b in bins])
        actual = as_fractions([counts.get((True, i, b), 0) for b in bins])
        psi[column] = round(population_stability_index(expected, actual), 6)
    return psi


# ------------------------------------------------------------------ the run


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def new_drift(lake: Lake) -> tuple[dict[str, float], int]:
    """PSI per feature the new way, and the size of the summaries it would store."""
    result, keep = feature_drift(
        lake,
        DATASET,
        CURRENT,
        lake.partition_dir(DATASET, "features", CURRENT),
        references=7,
        threshold=THRESHOLD,
        exclude={"id"},
    )
    size = len(json.dumps({"partitions": keep}))
    return {c: f["psi"] for c, f in result["features"].items()}, size


def compare(old: dict[str, float], new: dict[str, float]) -> tuple[float, bool, bool]:
    """Largest |difference|, whether all are within tolerance, whether flags agree."""
    assert old.keys() == new.keys(), (old.keys(), new.keys())
    worst = max(abs(old[c] - new[c]) for c in old)
    within = all(abs(old[c] - new[c]) <= max(PSI_ABSOLUTE, PSI_RELATIVE * abs(old[c])) for c in old)
    flags = all((old[c] > THRESHOLD) == (new[c] > THRESHOLD) for c in old)
    return worst, within, flags


def bench_size(spark: SparkSession, rows: int) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="landfall-reporter-bench-"))
    lake = Lake(work / "lake")
    try:
        for seed, partition in enumerate([*REFERENCES, CURRENT]):
            land(spark, lake, partition, rows, seed + 1, 1.0 if partition == CURRENT else 0.0)
        old_s, old = timed(lambda: old_feature_drift(spark, lake, CURRENT))
        cold_s, (cold, cold_bytes) = timed(lambda: new_drift(lake))
        store_summaries(lake)
        warm_s, (warm, warm_bytes) = timed(lambda: new_drift(lake))
        predictions = lake.partition_dir(DATASET, "predictions", CURRENT)
        pred_s, _ = timed(
            lambda: (
                prediction_summary(predictions),
                prediction_distribution(lake, DATASET, CURRENT, predictions, references=7),
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = []
    for way, seconds, psi, stored in (
        ("new, cold", cold_s, cold, cold_bytes),
        ("new, warm", warm_s, warm, warm_bytes),
    ):
        worst, within, flags = compare(old, psi)
        lines.append(
            f"| {rows:,} | {way} | {seconds:.1f} | {old_s:.1f} | {old_s / seconds:.1f}x | "
            f"{worst:.4f} | {'yes' if within else 'NO'} | {'yes' if flags else 'NO'} | "
            f"{stored / 1024:,.0f} | {pred_s:.1f} |"
        )
    flagged = sorted(c for c, v in old.items() if v > THRESHOLD)
    print(f"rows {rows:,}: old flags {flagged}; old PSI {old}; warm PSI {warm}", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    spark = create_spark_session(
        SparkSettings(master=args.master, conf={"spark.driver.memory": "4g"}), "landfall-bench"
    )
    lines = [
        "| rows | way | new s | old s | old / new | max abs PSI difference | within tolerance "
        "| same flags | summaries stored (KiB) | predictions part s |",
        "|---:|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    bench_size(spark, 20_000)  # class loading, code generation, JIT: not in the figures
    ok = True
    for rows in args.rows:
        new_lines = bench_size(spark, rows)
        ok = ok and all("| NO |" not in line for line in new_lines)
        lines += new_lines
        print(*new_lines, sep="\n", flush=True)
    print("\n".join(lines))
    spark.stop()
    if not ok:
        sys.exit("the new way's drift differs from the old way's beyond the tolerance")


if __name__ == "__main__":
    main()
