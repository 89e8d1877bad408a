"""End to end: data landed -> batch reported, beside one process and the seed's way, in one run.

    python bench/e2e_bench.py --rows 1000 1000000 5000000 --json e2e.json

For each size it lands a synthetic partition (parquet: an id, 20 floats, 2 categories,
1.4% of rows bad in six ways), trains a 100-iteration HistGradientBoosting classifier
on 32 features and registers it in a real MLflow registry, then on the same files:

- **landfall**: Apache Kafka (landfall/broker.py) and the four services as processes,
  started once as ``landfall up`` starts them and kept warm (one untimed warm-up
  batch); each timed batch is a data-landed event published and awaited as
  batch-reported. The time is from the data-landed event to the batch-reported event
  (their ``occurred_at``); per-stage times and the hops between stages come from the
  results database's ``stage_runs``; each service's process tree (Python, its Spark
  JVM, the JVM's Python workers) is sampled for its peak RSS every 100 ms;
- **plain**: the practical limit: one Python process doing the same validation (the
  same checks, the same quarantine reasons), features and scoring (the predictor's own
  scorer code) with pyarrow and scikit-learn, writing the same outputs;
- **seed**: the seed's way in one process: the same Spark validation and features,
  then ``toPandas`` -> predict on the driver -> ``createDataFrame`` keyed by id ->
  joined back to the features by key -> written.

Each of the two baselines runs in its own process per size (so its peak memory is its
own), scores an untimed warm-up partition first and keeps the best of ``--repeat``
runs, as landfall does. Then every output is compared with the single process's:
valid ids, quarantined ids with their reasons, and predictions (the class, and each
probability within 1e-6); a mismatch makes the bench exit 1 after writing its results.
It prints Markdown tables for bench/README.md and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.bench_support import (
    TreeMemory,
    load_registered_model,
    print_result,
    run_child,
    tree_rss_kib,
)
from bench.e2e_checks import (
    HOPS,
    PROBABILITY_TOLERANCE,
    STAGES,
    baseline_outputs,
    compare_outputs,
    landfall_outputs,
    markdown,
    summarise_hops,
)
from bench.e2e_dataset import (
    DATASET,
    MODEL,
    WARMUP_PARTITION,
    bench_settings,
    land_partition,
    partitions,
    plain_features,
    plain_validate,
    raw_dir,
    register_bench_model,
    way_dir,
)

# The seed collects every row on the driver: its heap must hold the whole feature table.
SEED_CONF = {"spark.driver.memory": "8g", "spark.driver.maxResultSize": "6g"}

# ------------------------------------------------------------------- the children


def _best(run: Any, repeat: int) -> tuple[dict[str, float], list[float]]:
    """Stage seconds of the fastest of ``repeat`` runs, and every run's total."""
    runs = [run() for _ in range(repeat)]
    totals = [sum(stages.values()) for stages in runs]
    return runs[int(np.argmin(totals))], totals


def _warm_then_best(
    workdir: Path, partition: str, run: Any, repeat: int
) -> tuple[dict[str, float], list[float]]:
    """A baseline's untimed warm-up partition (if landed), then its best of ``repeat``."""
    if raw_dir(workdir, WARMUP_PARTITION).exists():
        run(WARMUP_PARTITION)
    return _best(lambda: run(partition), repeat)


def _stage_seconds(
    started: float, validated: float, featurized: float, predicted: float
) -> dict[str, float]:
    """A baseline's seconds per stage, from the clock read at each stage's end."""
    return {
        "validation": validated - started,
        "featurization": featurized - validated,
        "prediction": predicted - featurized,
    }


def child_plain(workdir: Path, partition: str, repeat: int) -> dict[str, Any]:
    """The single process: pyarrow read, validate, featurize; the predictor's scorer; writes."""
    from services.predictor.scorer import score_frame

    settings = bench_settings(workdir)
    version, plan, (model, raw_model) = load_registered_model(settings, DATASET)
    inputs = [c.name for c in plan.inputs]

    def run(name: str) -> dict[str, float]:
        out = way_dir(workdir, "plain", name)
        shutil.rmtree(out, ignore_errors=True)
        for zone in ("validated", "quarantine", "features", "predictions"):
            (out / zone).mkdir(parents=True)
        clock = time.perf_counter()
        raw = pq.read_table(raw_dir(workdir, name))
        valid, quarantined = plain_validate(raw)
        pq.write_table(valid, out / "validated" / "part-00000.parquet")
        pq.write_table(quarantined, out / "quarantine" / "part-00000.parquet")
        validated = time.perf_counter()
        features = plain_features(valid)
        pq.write_table(features, out / "features" / "part-00000.parquet")
        featurized = time.perf_counter()
        scored = score_frame(plan, model, raw_model, features.select(inputs).to_pandas())
        table = pa.Table.from_pandas(scored, preserve_index=False)
        table = table.add_column(0, "id", features.column("id"))
        for column, value in (("model_name", version.name), ("model_version", version.version),
                              ("model_uri", version.uri)):  # fmt: skip
            table = table.append_column(column, pa.array([value] * table.num_rows, pa.string()))
        pq.write_table(table, out / "predictions" / "part-00000.parquet")
        return _stage_seconds(clock, validated, featurized, time.perf_counter())

    stages, runs = _warm_then_best(workdir, partition, run, repeat)
    return {"seconds": sum(stages.values()), "runs": runs, "stages": stages}


def child_seed(workdir: Path, partition: str, repeat: int, conf: dict[str, str]) -> dict[str, Any]:
    """The seed's way: Spark validation and features, toPandas, predict, createDataFrame, join."""
    from pyspark.sql import functions as F

    from landfall.config import ValidationSettings
    from landfall.spark import create_spark_session
    from services.featurizer.stage import featurize_partition
    from services.predictor.scorer import score_frame
    from services.validator.stage import validate_partition

    settings = bench_settings(workdir)
    spark_settings = settings.spark.model_copy(update={"conf": {**settings.spark.conf, **conf}})
    spark = create_spark_session(spark_settings, "bench-seed")
    dataset = settings.dataset(DATASET)
    version, plan, (model, raw_model) = load_registered_model(settings, DATASET)
    inputs = [c.name for c in plan.inputs]

    def run(name: str) -> dict[str, float]:
        out = way_dir(workdir, "seed", name)
        shutil.rmtree(out, ignore_errors=True)
        clock = time.perf_counter()
        # The seed validated with Spark DataFrame jobs; landfall's arrow engine is not its.
        validate_partition(
            spark, dataset, raw_dir(workdir, name), out / "validated", out / "quarantine",
            settings=ValidationSettings(engine="spark"),
        )  # fmt: skip
        validated = time.perf_counter()
        featurize_partition(spark, dataset, out / "validated", out / "features")
        featurized = time.perf_counter()
        features = spark.read.parquet(str(out / "features"))
        frame: Any = features.toPandas()
        scored = score_frame(plan, model, raw_model, frame[inputs])
        scored.insert(0, "id", frame["id"].to_numpy())
        keyed = spark.createDataFrame(scored)
        features.select("id").join(keyed, on="id").select(
            "id",
            *plan.output_columns,
            F.lit(version.name).alias("model_name"),
            F.lit(version.version).alias("model_version"),
            F.lit(version.uri).alias("model_uri"),
        ).write.mode("overwrite").parquet(str(out / "predictions"))
        return _stage_seconds(clock, validated, featurized, time.perf_counter())

    stages, runs = _warm_then_best(workdir, partition, run, repeat)
    spark.stop()
    return {"seconds": sum(stages.values()), "runs": runs, "stages": stages, "conf": conf}


def run_baseline(
    way: str, workdir: Path, partition: str, repeat: int, seed_conf: list[str]
) -> dict[str, Any]:
    """One baseline on one partition, in its own process."""
    command = [sys.executable, __file__, "--child", way, "--workdir", str(workdir)]
    command += ["--partition", partition, "--repeat", str(repeat)]
    command += [f"--seed-conf={c}" for c in seed_conf]
    result = run_child(command, f"{way} on {partition}", env={"LANDFALL_LOG_LEVEL": "WARNING"})
    result["peak_rss_mib"] = result.pop("peak_mib")
    return result


# ----------------------------------------------------------------------- landfall


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def stage_figures(
    run: dict[str, Any], landed_at: datetime
) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per stage and the hops between stages (ms) of one run, from ``stage_runs``."""
    stages = {s["stage"]: s for s in run["stages"]}
    missing = [name for name in STAGES if name not in stages]
    if missing:
        raise RuntimeError(f"run {run['run_id']} has no stage_runs row for {', '.join(missing)}")
    seconds = {name: (stages[name]["duration_ms"] or 0) / 1000 for name in STAGES}
    ends = [landed_at, *[_utc(stages[name]["finished_at"]) for name in STAGES[:-1]]]
    starts = [_utc(stages[name]["started_at"]) for name in STAGES]
    hops = {hop: (start - end).total_seconds() * 1000 for hop, end, start in
            zip(HOPS, ends, starts, strict=True)}  # fmt: skip
    return seconds, hops


class LandfallRunner:
    """The local stack, warm, with each service's process tree sampled for memory."""

    def __init__(self, settings: Any) -> None:
        from landfall.events import EventWatcher
        from landfall.results import RunHistory
        from landfall.serve import SERVICE_NAMES
        from landfall.stack import LocalStack

        self.stack = LocalStack(settings, services=SERVICE_NAMES)
        started = time.perf_counter()
        self.settings = self.stack.start()
        self.start_seconds = time.perf_counter() - started
        try:
            self.services = {name: p.pid for name, p in self.stack.processes.items()}
            self.watcher = EventWatcher(self.settings, [self.settings.kafka.topics.reported.name])
            self.results = RunHistory.open(self.settings.results_db_url)
        except BaseException:
            self.stack.stop()
            raise
        self.memory = TreeMemory(self.services)

    def batch(self, partition: str, timeout: float) -> dict[str, Any]:
        """Publish data-landed for ``partition``; wait for its batch-reported; its figures."""
        from landfall.contracts import EventType
        from landfall.events import publish_data_landed

        landed = publish_data_landed(self.settings, DATASET, partition, producer_name="e2e-bench")
        _, _, reported = self.watcher.wait_for(
            lambda _t, kind, rec: (
                kind is EventType.BATCH_REPORTED and rec["run_id"] == landed["run_id"]
            ),
            timeout,
            alive=self.stack.check_alive,
        )
        if reported["status"] != "SUCCEEDED":
            raise RuntimeError(
                f"batch {partition} run {landed['run_id']} {reported['status']} in "
                f"{reported.get('failed_stage')}: {reported.get('failure_reason')}"
            )
        landed_at = _utc(landed["occurred_at"])
        run = self.results.run(landed["run_id"])
        if run is None:
            raise RuntimeError(f"run {landed['run_id']} is not in the results database")
        stages, hops = stage_figures(run, landed_at)
        return {
            "run_id": landed["run_id"],
            "seconds": (_utc(reported["occurred_at"]) - landed_at).total_seconds(),
            "stages": stages,
            "hops_ms": hops,
            "rows_landed": reported["rows_landed"],
            "rows_scored": reported["rows_scored"],
        }

    def idle_rss_mib(self, settle_s: float) -> dict[str, float]:
        """Each service tree's RSS after ``settle_s`` with nothing to do."""
        time.sleep(settle_s)
        return {name: tree_rss_kib(pid) / 1024 for name, pid in self.services.items()}

    def idle_rss_by_s(self, settle_s: list[float]) -> dict[str, dict[str, float]]:
        """Each service tree's RSS at each of ``settle_s`` seconds after the last batch."""
        found, waited = {}, 0.0
        for point in sorted(settle_s):
            found[f"{point:g}"] = self.idle_rss_mib(max(point - waited, 0.0))
            waited = point
        return found

    def close(self) -> None:
        """Stop sampling, leave the watch group, stop the stack (and the broker it started)."""
        self.memory.stop()
        self.watcher.close()
        self.results.close()
        self.stack.stop()


def run_landfall(
    settings: Any,
    sizes: list[tuple[int, str]],
    repeat: int,
    warmup: bool,
    timeout: float,
    idle_settle_s: list[float],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Every size through the warm stack ``repeat`` times; the stack's figures and each size's."""
    runner = LandfallRunner(settings)
    found: dict[str, dict[str, Any]] = {}
    stack: dict[str, Any] = {"start_seconds": runner.start_seconds}
    try:
        if warmup:
            first = runner.batch(WARMUP_PARTITION, timeout)
            stack["warmup_seconds"] = first["seconds"]
        stack["idle_rss_mib_before"] = runner.idle_rss_mib(0.0)
        for rows, partition in sizes:
            runner.memory.reset()
            runs = []
            for _ in range(repeat):
                runs.append(runner.batch(partition, timeout))
                print(f"  landfall {rows:>10,} rows: {runs[-1]['seconds']:.2f} s", flush=True)
            peaks = runner.memory.reset()
            best = min(runs, key=lambda r: r["seconds"])
            idle = runner.idle_rss_by_s(idle_settle_s)
            found[partition] = {
                "seconds": best["seconds"],
                "runs": [r["seconds"] for r in runs],
                "stages": best["stages"],
                "hops_ms": [r["hops_ms"] for r in runs],
                "run_id": runs[-1]["run_id"],  # whose outputs are compared
                "rows_landed": best["rows_landed"],
                "rows_scored": best["rows_scored"],
                "peak_rss_mib": {name: kib / 1024 for name, kib in peaks.items()},
                # The last settle point's: Spark ended its idle Python workers by then.
                "idle_rss_mib": idle[max(idle, key=float)],
                "idle_rss_mib_by_s": idle,
            }
    finally:
        runner.close()
    return stack, found


def _size_figures(
    settings: Any,
    workdir: Path,
    rows: int,
    partition: str,
    bad_rows: int,
    landfall: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """One size's figures: the three ways, their ratios, and whether the outputs match."""
    lf, plain, seed = (
        landfall[partition],
        baselines["plain"][partition],
        baselines["seed"][partition],
    )
    for figures in (lf, plain, seed):
        figures["rows_per_s"] = rows / figures["seconds"]
    expected = baseline_outputs(workdir, "plain", partition)
    outputs = {
        "landfall": compare_outputs(expected, landfall_outputs(settings, partition, lf["run_id"])),
        "seed": compare_outputs(expected, baseline_outputs(workdir, "seed", partition)),
    }
    return {
        "rows": rows,
        "partition": partition,
        "bad_rows": bad_rows,
        "landfall": lf,
        "plain": plain,
        "seed": seed,
        "ratios": {
            "landfall_vs_plain": lf["seconds"] / plain["seconds"],
            "landfall_vs_seed": lf["seconds"] / seed["seconds"],
            "seed_vs_landfall": seed["seconds"] / lf["seconds"],
        },
        "outputs": outputs,
        "outputs_match": all(o["match"] for o in outputs.values()),
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Land, train, run the three ways, compare; return every figure."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="landfall-e2e-bench-"))
    settings = bench_settings(workdir, args.bootstrap, uuid.uuid4().hex[:8])
    sizes = partitions(args.rows)
    began = time.perf_counter()
    load_before = os.getloadavg()
    print(f"landing {', '.join(f'{r:,}' for r, _ in sizes)} rows under {workdir}", flush=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    bad = {}
    if args.warmup_rows > 0:
        land_partition(raw_dir(workdir, WARMUP_PARTITION), args.warmup_rows, seed=99)
    for number, (rows, partition) in enumerate(sizes, start=1):
        bad[partition] = land_partition(raw_dir(workdir, partition), rows, seed=number)
    version = register_bench_model(settings)
    print(f"registered {MODEL} version {version} @champion", flush=True)
    baselines: dict[str, dict[str, dict[str, Any]]] = {"plain": {}, "seed": {}}
    for rows, partition in sizes:
        for way in ("plain", "seed"):
            found = run_baseline(way, workdir, partition, args.repeat, args.seed_conf)
            baselines[way][partition] = found
            print(f"  {way:>8} {rows:>10,} rows: {found['seconds']:.2f} s", flush=True)
    stack, landfall = run_landfall(
        settings, sizes, args.repeat, args.warmup_rows > 0, args.timeout, args.idle_settle_s
    )
    results = [
        _size_figures(settings, workdir, rows, partition, bad[partition], landfall, baselines)
        for rows, partition in sizes
    ]
    result = {
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": list(load_before),
            "load_average_after": list(os.getloadavg()),
        },
        "settings": {
            "repeat": args.repeat,
            "warmup_rows": args.warmup_rows,
            "spark_master": settings.spark.master,
            "service_spark_conf": dict(settings.spark.conf),
            "seed_conf": {**SEED_CONF, **dict(c.split("=", 1) for c in args.seed_conf)},
            "probability_tolerance": PROBABILITY_TOLERANCE,
            "model": MODEL,
        },
        "stack": stack,
        "sizes": results,
        "hops": summarise_hops(results),
        "outputs_match": all(size["outputs_match"] for size in results),
        "seconds": time.perf_counter() - began,
    }
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --child, one baseline of it); 1 if an output differs."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per way; best kept")
    parser.add_argument("--warmup-rows", type=int, default=50_000,
                        help="an untimed partition each way handles first (0: none)")  # fmt: skip
    parser.add_argument("--seed-conf", action="append", default=[],
                        help="spark conf k=v for the seed's way")  # fmt: skip
    parser.add_argument("--bootstrap", help="use this Kafka (own topics) instead of a local one")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a batch")
    # Idle is a while after a batch, not the moment after: the services' JVMs give heap
    # back on G1's periodic collection (landfall/spark.py), some seconds after the work,
    # and Spark ends a Python worker a minute after its last task (PythonWorkerFactory).
    parser.add_argument(
        "--idle-settle-s",
        type=float,
        nargs="+",
        default=[30.0, 75.0],
        help="seconds after each size's last batch at which idle RSS is read (the last "
        "is the size's idle figure)",
    )
    parser.add_argument("--workdir", type=Path, help="keep data and outputs here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--child", choices=("plain", "seed"), help=argparse.SUPPRESS)
    parser.add_argument("--partition", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child == "plain":
            print_result(child_plain(args.workdir, args.partition, args.repeat))
        else:
            conf = {**SEED_CONF, **dict(c.split("=", 1) for c in args.seed_conf)}
            print_result(child_seed(args.workdir, args.partition, args.repeat, conf))
        return 0
    result = run_bench(args)
    print()
    print(markdown(result))
    machine = result["machine"]
    print(
        f"\nbench took {result['seconds']:.0f} s; load average before "
        f"{machine['load_average_before']}, after {machine['load_average_after']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if not result["outputs_match"]:
        print("OUTPUTS DIFFER from the single process's: see 'outputs' in the results")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
