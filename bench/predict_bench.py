"""Scoring throughput: landfall's predictor beside a one-process baseline and the seed's way.

    python bench/predict_bench.py --rows 1000000 5000000

The same registered model (the demo's logistic regression: a class and two
probabilities per row) scores the same synthetic feature table four ways, each in its
own process so that each one's peak memory is its own:

1. ``stage``: landfall's predictor service handling a batch-featurized event: resolve
   the alias, check the gate, score with the default ``arrow`` engine (Spark tasks that
   read, score and write with pyarrow), commit the predictions with their manifest
   (Spark ``local[2]``, the demo config);
2. ``stage_udf``: the same service on its ``spark_udf`` engine (a DataFrame job through
   ``mlflow.pyfunc.spark_udf``);
3. ``plain``: the practical limit: one Python process reads the parquet with pyarrow,
   scores with the same model code, writes parquet with pyarrow;
4. ``naive``: the seed's approach: Spark reads, ``toPandas``, predict on the driver,
   ``createDataFrame`` (with the id, so the output is keyed), Spark writes.

Each process first scores a small warm-up partition: JVM start, Python workers,
imports and model loading are paid once by a long-running service, and are reported
apart ("setup"). The timed run is the best of ``--repeat`` runs. Peak memory is the
largest resident set (RSS) the process *tree* reached, sampled every 100 ms: for
Spark that includes the JVM and the Python workers.

For ``stage_udf``, ``--breakdown`` (on by default) also times the same job without the
model (read + write only) and with a do-nothing Arrow UDF in place of the model, to
show where the time goes. It prints a Markdown table for bench/README.md and writes
the raw figures as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_support import load_registered_model, print_result
from bench.bench_support import run_child as run_way

PARTITION = "2026-11-01"
WARMUP_PARTITION = "2026-10-31"
WARMUP_ROWS = 200_000  # enough for two partitions: both Python workers warm up
FEATURES = ["f1", "f2", "f1_times_f2", "is_red"]
FILES = 4  # the featurizer's output is a few part files, as Spark writes them
ROW_GROUP = 256 * 1024
WAYS = ("stage", "stage_udf", "plain", "naive")
NAIVE_CONF = {"spark.driver.memory": "3g", "spark.driver.maxResultSize": "2g"}


# ------------------------------------------------------------------------- the data


def write_features(directory: Path, rows: int, seed: int = 1) -> None:
    """A synthetic demo feature table: id plus the model's four feature columns."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    step = -(-rows // FILES)
    for part, start in enumerate(range(0, rows, step)):
        n = min(step, rows - start)
        f1, f2 = rng.normal(size=n), rng.normal(size=n)
        ids = np.char.add("r", np.char.zfill(np.arange(start, start + n).astype("U9"), 9))
        table = pa.table(
            {
                "id": pa.array(ids.tolist(), pa.string()),
                "f1": f1,
                "f2": f2,
                "f1_times_f2": f1 * f2,
                "is_red": (rng.integers(0, 3, n) == 0).astype("float64"),
            }
        )
        pq.write_table(table, directory / f"part-{part:05d}.parquet", row_group_size=ROW_GROUP)


def bench_settings(
    workdir: Path, conf: dict[str, str] | None = None, engine: str | None = None
) -> Any:
    """The demo config with its home (registry) and lake under ``workdir``."""
    from landfall.config import load_settings
    from landfall.demo import DEMO_CONFIG

    # LANDFALL_SCORING__* from the environment tune the stage (e.g. __BATCH_ROWS=65536).
    tuning = {k: v for k, v in os.environ.items() if k.startswith("LANDFALL_SCORING__")}
    environ = {**tuning, "LANDFALL_HOME": str(workdir / "home")}
    settings = load_settings(DEMO_CONFIG, environ=environ)
    settings = settings.model_copy(update={"lake_root": workdir / "lake"})
    if conf:
        spark = settings.spark.model_copy(update={"conf": {**settings.spark.conf, **conf}})
        settings = settings.model_copy(update={"spark": spark})
    if engine:
        scoring = settings.scoring.model_copy(update={"engine": engine})
        settings = settings.model_copy(update={"scoring": scoring})
    return settings


def tables_dir(workdir: Path, rows: int) -> Path:
    """The generated table of ``rows`` rows (inside the lake: events may only name it there)."""
    return workdir / "lake" / "_bench_tables" / str(rows)


def features_dir(workdir: Path, partition: str) -> Path:
    """Where a partition's features live in the bench lake."""
    return workdir / "lake" / "demo" / "features" / partition


# ------------------------------------------------------------------- the children


def _featurized_event(settings: Any, partition: str, rows: int) -> dict[str, Any]:
    from landfall.events import featurized_event

    return featurized_event(
        settings, "demo", partition, rows=rows, features=FEATURES, producer_name="bench/0"
    )


def _threads_info() -> dict[str, Any]:
    try:
        from threadpoolctl import threadpool_info

        return {
            "blas_threads": sorted({int(p["num_threads"]) for p in threadpool_info()}),
        }
    except ImportError:
        return {}


def _best(run: Any, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times), times


def _first_column(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
    """A do-nothing model: the Arrow round trip of spark_udf without any scoring."""
    for frame in batches:
        yield frame["f1"]


def _three_columns(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """A do-nothing classifier: as many outputs as the real one (a class, two probabilities)."""
    for frame in batches:
        yield pd.DataFrame(
            {
                "prediction": frame["is_red"],
                "probability_0": frame["f1"],
                "probability_1": frame["f2"],
            }
        )


def _udf_breakdown(features: Any, out: Path, repeat: int) -> dict[str, float]:
    """Where a pandas UDF's time goes: reading and writing, the Arrow round trip, outputs."""
    from pyspark.sql import functions as F

    columns = FEATURES

    nothing = F.pandas_udf(_first_column, "double")  # type: ignore[call-overload]
    three = F.pandas_udf(  # type: ignore[call-overload]
        _three_columns, "prediction double, probability_0 double, probability_1 double"
    )

    def io_only() -> None:
        features.select("id", *columns).write.mode("overwrite").parquet(str(out))

    def arrow_round_trip() -> None:
        features.select("id", nothing(F.struct(*columns)).alias("p")).write.mode(
            "overwrite"
        ).parquet(str(out))

    def three_outputs() -> None:
        scored = features.select("id", three(F.struct(*columns)).alias("s"))
        scored.select("id", "s.*").write.mode("overwrite").parquet(str(out))

    arrow_round_trip()  # their own worker start-up is not what we measure
    three_outputs()
    return {
        "read_write_only": _best(io_only, repeat)[0],
        "arrow_round_trip": _best(arrow_round_trip, repeat)[0],
        "three_outputs": _best(three_outputs, repeat)[0],
    }


def child_stage(
    workdir: Path,
    rows: int,
    repeat: int,
    conf: dict[str, str],
    breakdown: bool,
    engine: str = "arrow",
):
    """landfall's predictor service, handling batch-featurized events."""

    from landfall.contracts import EventType
    from landfall.stage import StageContext
    from services.predictor.service import PredictorService

    started = time.perf_counter()
    settings = bench_settings(workdir, conf, engine)
    service = PredictorService(StageContext(settings, "predictor"))
    spark = service.context.spark
    for _ in range(2):  # a service has scored batches before: JIT, both workers, the model
        service.handle(
            EventType.BATCH_FEATURIZED, _featurized_event(settings, WARMUP_PARTITION, WARMUP_ROWS)
        )
    setup = time.perf_counter() - started

    def score() -> None:
        event = _featurized_event(settings, PARTITION, rows)
        (out,) = service.handle(EventType.BATCH_FEATURIZED, event)
        assert out.record["rows"] == rows, out.record

    best, times = _best(score, repeat)
    features = spark.read.parquet(str(features_dir(workdir, PARTITION)))
    result: dict[str, Any] = {
        "seconds": best,
        "runs": times,
        "setup_seconds": setup,
        "spark_partitions": features.rdd.getNumPartitions(),
        "master": settings.spark.master,
        "arrow_batch": int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") or 0),
        "python_worker_reuse": spark.conf.get("spark.python.worker.reuse", "true"),
        "conf": {k: v for k, v in settings.spark.conf.items()},
        "scoring": settings.scoring.model_dump(),
    }
    if engine == "arrow":
        from landfall.arrow_io import plan_tasks

        tasks, _ = plan_tasks(
            str(features_dir(workdir, PARTITION).resolve()),
            spark.sparkContext.defaultParallelism,
            settings.scoring.rows_per_task,
        )
        result["tasks"] = len(tasks)
    if breakdown and engine == "spark_udf":
        result["breakdown"] = _udf_breakdown(features, workdir / "breakdown", repeat)
    return result


def child_plain(workdir: Path, rows: int, repeat: int, conf: dict[str, str], breakdown: bool):
    """One Python process: pyarrow read, the same scorer, pyarrow write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from services.predictor.scorer import score_frame

    started = time.perf_counter()
    settings = bench_settings(workdir)
    version, plan, (model, raw) = load_registered_model(settings, "demo")
    out = workdir / "plain-out"
    inputs = [c.name for c in plan.inputs]
    timings: dict[str, float] = {}

    def score(partition: str) -> None:
        clock = time.perf_counter()
        table = pq.read_table(features_dir(workdir, partition))
        timings["read"] = time.perf_counter() - clock
        clock = time.perf_counter()
        scored = score_frame(plan, model, raw, table.select(inputs).to_pandas())
        timings["score"] = time.perf_counter() - clock
        clock = time.perf_counter()
        n = table.num_rows
        written = pa.Table.from_pandas(scored, preserve_index=False)
        written = written.add_column(0, "id", table.column("id"))
        for name, value in (
            ("model_name", version.name),
            ("model_version", version.version),
            ("model_uri", version.uri),
        ):
            written = written.append_column(name, pa.array([value], pa.string()).take([0] * n))
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        pq.write_table(written, out / "part-00000.parquet")
        timings["write"] = time.perf_counter() - clock

    score(WARMUP_PARTITION)
    setup = time.perf_counter() - started
    best, times = _best(lambda: score(PARTITION), repeat)
    assert pq.read_metadata(out / "part-00000.parquet").num_rows == rows
    return {
        "seconds": best,
        "runs": times,
        "setup_seconds": setup,
        "last_run": dict(timings),
        "pyarrow_threads": pa.cpu_count(),
        "pyarrow_io_threads": pa.io_thread_count(),
        **_threads_info(),
    }


def child_naive(workdir: Path, rows: int, repeat: int, conf: dict[str, str], breakdown: bool):
    """The seed's way: toPandas, predict on the driver, createDataFrame, write."""
    from landfall.spark import create_spark_session
    from services.predictor.scorer import score_frame

    started = time.perf_counter()
    # Collecting millions of rows on the driver needs a far bigger heap than the
    # service's (the demo config's 768m dies at 5M rows): that is part of its cost.
    settings = bench_settings(workdir, {**NAIVE_CONF, **conf})
    spark = create_spark_session(settings.spark, "bench-naive")
    version, plan, (model, raw) = load_registered_model(settings, "demo")
    out = workdir / "naive-out"
    inputs = [c.name for c in plan.inputs]

    def score(partition: str) -> None:
        frame: pd.DataFrame = spark.read.parquet(str(features_dir(workdir, partition))).toPandas()
        scored = score_frame(plan, model, raw, frame[inputs])
        scored.insert(0, "id", frame["id"].to_numpy())
        scored["model_name"], scored["model_version"] = version.name, version.version
        scored["model_uri"] = version.uri
        spark.createDataFrame(scored).write.mode("overwrite").parquet(str(out))

    score(WARMUP_PARTITION)
    setup = time.perf_counter() - started
    best, times = _best(lambda: score(PARTITION), repeat)
    assert spark.read.parquet(str(out)).count() == rows
    return {
        "seconds": best,
        "runs": times,
        "setup_seconds": setup,
        "arrow_batch": int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") or 0),
        "conf": dict(settings.spark.conf),
    }


def child_stage_udf(
    workdir: Path, rows: int, repeat: int, conf: dict[str, str], breakdown: bool
) -> dict[str, Any]:
    """landfall's predictor service on its spark_udf engine."""
    return child_stage(workdir, rows, repeat, conf, breakdown, engine="spark_udf")


CHILDREN = {
    "stage": child_stage,
    "stage_udf": child_stage_udf,
    "plain": child_plain,
    "naive": child_naive,
}


# ----------------------------------------------------------------------- the parent


def run_child(
    way: str, workdir: Path, rows: int, repeat: int, conf: list[str], breakdown: bool
) -> dict[str, Any]:
    """Run one way in its own process; its result plus the peak memory of its tree."""
    command = [sys.executable, __file__, "--child", way, "--workdir", str(workdir)]
    command += ["--rows", str(rows), "--repeat", str(repeat)]
    command += [f"--conf={c}" for c in conf]
    if not breakdown:
        command.append("--no-breakdown")
    result = run_way(command, f"{way} at {rows} rows")
    result.update(way=way, rows=rows, rows_per_s=rows / result["seconds"])
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    """The results table, with the ratios to the plain baseline."""
    lines = [
        "| rows | way | seconds | rows/s | vs plain (time) | setup s | peak memory (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for rows in sorted({r["rows"] for r in results}):
        group = {r["way"]: r for r in results if r["rows"] == rows}
        plain = group.get("plain")
        for way in WAYS:
            if way not in group:
                continue
            r = group[way]
            ratio = f"{r['seconds'] / plain['seconds']:.2f}x" if plain else "-"
            lines.append(
                f"| {rows:,} | {way} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} | {ratio} "
                f"| {r['setup_seconds']:.1f} | {r['peak_mib']:,.0f} |"
            )
    stage = [r for r in results if "breakdown" in r]
    if stage:
        lines += [
            "",
            "| rows | read + write only | + Arrow round trip, 1 output | + 3 outputs "
            "| stage_udf (model, model columns, commit) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in stage:
            b = r["breakdown"]
            lines.append(
                f"| {r['rows']:,} | {b['read_write_only']:.2f} s | {b['arrow_round_trip']:.2f} s "
                f"| {b['three_outputs']:.2f} s | {r['seconds']:.2f} s |"
            )
    return "\n".join(lines)


def prepare(workdir: Path, sizes: list[int]) -> None:
    """Register the demo model and write the feature tables."""
    from landfall.demo import register_demo_model

    settings = bench_settings(workdir)
    settings.home.mkdir(parents=True, exist_ok=True)
    if not (settings.home / "mlflow.db").exists():
        register_demo_model(settings)
    if not features_dir(workdir, WARMUP_PARTITION).exists():
        write_features(features_dir(workdir, WARMUP_PARTITION), WARMUP_ROWS, seed=2)
    for rows in sizes:
        if not tables_dir(workdir, rows).exists():
            write_features(tables_dir(workdir, rows), rows)


def main() -> None:
    """Run the benchmark (or, with --child, one way of it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per way; best kept")
    parser.add_argument("--conf", action="append", default=[], help="spark conf k=v (Spark ways)")
    parser.add_argument("--workdir", type=Path, help="keep data here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the stage breakdown")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    conf = dict(c.split("=", 1) for c in args.conf)

    if args.child:
        os.environ.setdefault("LANDFALL_LOG_LEVEL", "WARNING")
        rows = args.rows[0]
        # The way's input: the table of this size, placed where the service finds it.
        target = features_dir(args.workdir, PARTITION)
        if target.is_symlink() or target.exists():
            target.unlink() if target.is_symlink() else shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(tables_dir(args.workdir, rows), target_is_directory=True)
        result = CHILDREN[args.child](args.workdir, rows, args.repeat, conf, not args.no_breakdown)
        print_result(result)
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="landfall-predict-bench-"))
    started = time.perf_counter()
    print(f"preparing {', '.join(f'{r:,}' for r in args.rows)} rows under {workdir}", flush=True)
    prepare(workdir, args.rows)
    results = []
    for rows in args.rows:
        for way in args.ways:
            result = run_child(way, workdir, rows, args.repeat, args.conf, not args.no_breakdown)
            print(
                f"{way:>6} {rows:>10,} rows: {result['seconds']:.2f} s, "
                f"{result['rows_per_s']:,.0f} rows/s, peak {result['peak_mib']:,.0f} MiB "
                f"(runs {', '.join(f'{t:.2f}' for t in result['runs'])})",
                flush=True,
            )
            results.append(result)
    print()
    print(markdown(results))
    print(f"\nbench took {time.perf_counter() - started:.0f} s; load average {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
