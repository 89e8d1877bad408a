"""Validation and featurization throughput, each beside its baseline, in one run.

    python bench/stage_bench.py --rows 1000000 5000000

For each size it lands a synthetic partition (the demo dataset's columns, with some
deliberately bad rows) as parquet, then times on one local Spark session:

- landfall's validation stage (every rule's failures, the profile, both writes) against
  the naive baseline: one Spark action per rule to count its failures, then the same
  two writes (what a hand-written validator usually does);
- the validation stage's two engines against each other (``validation.engine``: arrow
  and spark) on the same rules less the free expression, which only Spark evaluates;
- landfall's featurization stage against a hand-written PySpark ``select`` of the same
  expressions (the floor: what the stage costs beyond Spark itself).

It prints a Markdown table (rows/s, Spark jobs, and the ratios) for bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import TypeAdapter
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from landfall.config import DatasetConfig, SparkSettings, ValidationSettings
from landfall.spark import create_spark_session
from landfall.stage import spark_job_group
from services.featurizer.stage import featurize_partition
from services.validator.stage import validate_partition

DATASET: dict[str, Any] = {
    "format": "parquet",
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        {"name": "feature1", "type": "double", "nullable": False},
        {"name": "feature2", "type": "double", "nullable": False},
        {"name": "feature3", "type": "string"},
    ],
    "rules": [
        {"name": "id_unique", "kind": "unique", "columns": ["id"]},
        {"name": "id_format", "kind": "regex", "column": "id", "pattern": "^r[0-9]+$"},
        {"name": "f1_range", "kind": "range", "column": "feature1", "min": -4, "max": 4},
        {"name": "f3_known", "kind": "allowed_values", "column": "feature3",
         "values": ["red", "green", "blue"], "severity": "warn"},
        {"name": "sum_ok", "kind": "expression", "expr": "feature1 + feature2 < 6"},
    ],
    "features": [
        {"name": "f1", "expr": "feature1"},
        {"name": "f1_times_f2", "expr": "feature1 * feature2"},
        {"name": "f2_band", "kind": "bucketize", "column": "feature2", "splits": [-1, 0, 1]},
        {"name": "color", "kind": "one_hot", "column": "feature3",
         "vocabulary": ["red", "green", "blue"], "unseen": "other"},
        {"name": "color_rank", "kind": "ordinal", "column": "feature3",
         "vocabulary": ["red", "green", "blue"]},
    ],
    "model": {"uri": "models:/bench@champion"},
}  # fmt: skip


def land(spark: SparkSession, rows: int, path: Path) -> None:
    """A synthetic raw partition; about 2% of rows break a rule."""
    spark.range(rows, numPartitions=8).select(
        F.when(F.col("id") % 97 == 3, F.lit(None))
        .otherwise(F.concat(F.lit("r"), F.col("id").cast("string")))
        .alias("id"),
        (F.randn(1) * F.when(F.col("id") % 89 == 5, 10).otherwise(1)).alias("feature1"),
        F.randn(2).alias("feature2"),
        F.element_at(F.array(*[F.lit(c) for c in ("red", "green", "blue", "teal")]),
                     (F.col("id") % 4 + 1).cast("int")).alias("feature3"),
    ).write.mode("overwrite").parquet(str(path))  # fmt: skip


def naive_validate(spark: SparkSession, dataset: DatasetConfig, raw: Path, out: Path) -> int:
    """Count each rule's failures with its own action, then write valid and invalid rows."""
    frame = spark.read.parquet(str(raw))
    conditions = {
        "not_null:id": F.col("id").isNull(),
        "not_null:feature1": F.col("feature1").isNull(),
        "not_null:feature2": F.col("feature2").isNull(),
        "id_format": F.col("id").isNotNull() & ~F.col("id").rlike("^r[0-9]+$"),
        "f1_range": (F.col("feature1") < -4) | (F.col("feature1") > 4),
        "f3_known": ~F.col("feature3").isin("red", "green", "blue"),
        "sum_ok": ~F.coalesce(F.expr("feature1 + feature2 < 6"), F.lit(True)),
    }
    counts = {name: frame.filter(cond).count() for name, cond in conditions.items()}
    duplicates = frame.groupBy("id").count().filter("count > 1").count()
    invalid = F.lit(False)
    for name, cond in conditions.items():
        if name != "f3_known":
            invalid = invalid | cond
    frame.filter(~invalid).write.mode("overwrite").parquet(str(out / "valid"))
    frame.filter(invalid).write.mode("overwrite").parquet(str(out / "quarantine"))
    return sum(counts.values()) + duplicates


def plain_features(spark: SparkSession, valid: Path, out: Path) -> None:
    """The same features, hand-written as one PySpark select."""
    color = F.col("feature3")
    frame = spark.read.parquet(str(valid))
    frame.select(
        "id",
        F.col("feature1").alias("f1"),
        (F.col("feature1") * F.col("feature2")).alias("f1_times_f2"),
        ((F.col("feature2") >= -1).cast("int") + (F.col("feature2") >= 0).cast("int")
         + (F.col("feature2") >= 1).cast("int")).cast("double").alias("f2_band"),
        *[F.coalesce((color == c).cast("double"), F.lit(0.0)).alias(f"color_{c}")
          for c in ("red", "green", "blue")],
        (color.isNotNull() & ~color.isin("red", "green", "blue"))
        .cast("double").alias("color_other"),
        F.coalesce(F.create_map(F.lit("red"), F.lit(0.0), F.lit("green"), F.lit(1.0),
                                F.lit("blue"), F.lit(2.0))[color], F.lit(-1.0)).alias("color_rank"),
    ).write.mode("overwrite").parquet(str(out))  # fmt: skip
    spark.read.parquet(str(out)).count()


def timed(spark: SparkSession, work: Callable[[], Any]) -> tuple[float, int]:
    """Seconds and Spark jobs for one run of ``work`` (a stage counts its own jobs)."""
    with spark_job_group(spark, "bench") as jobs:
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
    return seconds, getattr(result, "spark_jobs", None) or jobs()


def _validate_with(
    spark: SparkSession, dataset: DatasetConfig, raw: Path, out: Path, engine: str
) -> Any:
    settings = ValidationSettings.model_validate({"engine": engine})
    return validate_partition(
        spark, dataset, raw, out / "valid", out / "quarantine", settings=settings
    )


def bench_size(spark: SparkSession, dataset: DatasetConfig, rows: int) -> list[str]:
    """Both stages, both baselines and both validation engines: three table lines."""
    work = Path(tempfile.mkdtemp(prefix="landfall-bench-"))
    try:
        land(spark, rows, work / "raw")
        spark.read.parquet(str(work / "raw")).count()  # the file cache, for both sides
        v_s, v_jobs = timed(
            spark, lambda: _validate_with(spark, dataset, work / "raw", work, "spark")
        )
        arrowable = dataset.model_copy(
            update={"rules": [r for r in dataset.rules if r.kind != "expression"]}
        )
        a_s, a_jobs = timed(
            spark, lambda: _validate_with(spark, arrowable, work / "raw", work / "arrow", "arrow")
        )
        s_s, s_jobs = timed(
            spark, lambda: _validate_with(spark, arrowable, work / "raw", work / "spark", "spark")
        )
        n_s, n_jobs = timed(
            spark, lambda: naive_validate(spark, dataset, work / "raw", work / "naive")
        )
        f_s, f_jobs = timed(
            spark, lambda: featurize_partition(spark, dataset, work / "valid", work / "features")
        )
        p_s, p_jobs = timed(spark, lambda: plain_features(spark, work / "valid", work / "plain"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [
        f"| {rows:,} | validation | {v_s:.1f} | {rows / v_s:,.0f} | {v_jobs} | "
        f"one action per rule | {n_s:.1f} | {n_jobs} | {v_s / n_s:.2f} |",
        f"| {rows:,} | validation, arrow engine | {a_s:.1f} | {rows / a_s:,.0f} | {a_jobs} | "
        f"spark engine, same rules | {s_s:.1f} | {s_jobs} | {a_s / s_s:.2f} |",
        f"| {rows:,} | features | {f_s:.1f} | {rows / f_s:,.0f} | {f_jobs} | "
        f"hand-written select | {p_s:.1f} | {p_jobs} | {f_s / p_s:.2f} |",
    ]


def main() -> None:
    """Run every size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    spark = create_spark_session(
        SparkSettings(master=args.master, conf={"spark.driver.memory": "4g"}), "landfall-bench"
    )
    dataset = TypeAdapter(DatasetConfig).validate_python(DATASET)
    lines = [
        "| rows | stage | landfall s | landfall rows/s | jobs | baseline | baseline s | "
        "baseline jobs | landfall / baseline time |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    # The first Spark queries of a JVM run cold (class loading, code generation, JIT):
    # one untimed round keeps that cost out of whichever contender happens to go first.
    bench_size(spark, dataset, 200_000)
    for rows in args.rows:
        lines += bench_size(spark, dataset, rows)
        print(*lines[-3:], sep="\n", flush=True)
    print("\n".join(lines))
    spark.stop()


if __name__ == "__main__":
    main()
