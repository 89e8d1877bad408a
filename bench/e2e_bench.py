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
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.bench_support import (
    TreeMemory,
    load_registered_model,
    print_result,
    run_child,
    tree_rss_kib,
)

DATASET = "bench"
MODEL = "landfall-e2e-bench"
WARMUP_PARTITION = "2026-10-31"
FIRST_PARTITION = "2026-11-01"
FLOATS = [f"x{k}" for k in range(20)]
CAT_A = ["north", "south", "east", "west", "centre"]
CAT_B = ["low", "mid", "high"]
X0_RANGE = (-10.0, 10.0)
X1_SPLITS = [-1.0, 0.0, 1.0]
ID_PATTERN = "^r[0-9]+$"
CHUNK_ROWS = 1_000_000  # one parquet file per million rows, as an upstream job writes them
# In every 500 rows, 7 are bad (1.4%): each phase below breaks the row in its own way.
BAD_PERIOD = 500
NULL_ID, BAD_ID, X0_OUTLIER, UNKNOWN_CAT_A, NULL_X1, REPEATED_ID = 11, 97, 173, 251, 307, 401
NULL_CAT_B = 457  # a missing optional value: a valid row, encoded as unseen
PROBABILITY_TOLERANCE = 1e-6
STAGES = ("validation", "featurization", "prediction", "reporting")
HOPS = ("landed>validation", "validation>featurization", "featurization>prediction",
        "prediction>reporting")  # fmt: skip
WAYS = ("landfall", "plain", "seed")
# The seed collects every row on the driver: its heap must hold the whole feature table.
SEED_CONF = {"spark.driver.memory": "8g", "spark.driver.maxResultSize": "6g"}

DATASET_CONFIG: dict[str, Any] = {
    "format": "parquet",
    "id_column": "id",
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        *[{"name": name, "type": "double", "nullable": False} for name in FLOATS],
        {"name": "cat_a", "type": "string"},
        {"name": "cat_b", "type": "string"},
    ],
    "rules": [
        {"name": "id_unique", "kind": "unique", "columns": ["id"]},
        {"name": "id_format", "kind": "regex", "column": "id", "pattern": ID_PATTERN},
        {"name": "x0_range", "kind": "range", "column": "x0",
         "min": X0_RANGE[0], "max": X0_RANGE[1]},
        {"name": "cat_a_known", "kind": "allowed_values", "column": "cat_a", "values": CAT_A},
    ],
    "thresholds": {"max_invalid_fraction": 0.25},
    "feature_set": {"name": "e2e-bench", "version": "1"},
    "features": [
        *[{"name": name, "expr": name} for name in FLOATS],
        {"name": "a", "kind": "one_hot", "column": "cat_a", "vocabulary": CAT_A},
        {"name": "b_rank", "kind": "ordinal", "column": "cat_b", "vocabulary": CAT_B},
        {"name": "x1_band", "kind": "bucketize", "column": "x1", "splits": X1_SPLITS},
        {"name": "x0_x1", "expr": "x0 * x1"},
        {"name": "x2_x3", "expr": "x2 * x3"},
        {"name": "x4_plus_x5", "expr": "x4 + x5"},
        {"name": "abs_x6", "expr": "abs(x6)"},
        {"name": "x7_squared", "expr": "x7 * x7"},
    ],
    "model": {"uri": f"models:/{MODEL}@champion"},
}  # fmt: skip


# ------------------------------------------------------------------------- settings


def bench_settings(workdir: Path, bootstrap: str | None = None, suffix: str | None = None) -> Any:
    """The demo config with the bench dataset only, its state under ``workdir/home``.

    With ``bootstrap`` (a broker someone else runs) topics and consumer groups get
    names of their own (``suffix``), so the bench shares the broker with nothing.
    """
    from landfall.config import DatasetConfig, load_settings
    from landfall.demo import DEMO_CONFIG

    # LANDFALL_* from the environment tune the run (e.g. LANDFALL_SCORING__BATCH_ROWS).
    environ = {k: v for k, v in os.environ.items() if k.startswith("LANDFALL_")}
    environ.pop("LANDFALL_CONFIG", None)
    environ |= {
        "LANDFALL_HOME": str(workdir / "home"),
        # Any free ports: the machine may run another landfall on the usual ones.
        "LANDFALL_TELEMETRY__METRICS_PORT": "0",
    }
    if bootstrap:
        environ["LANDFALL_KAFKA_BOOTSTRAP"] = bootstrap
        name = f"e2e-bench-{suffix or uuid.uuid4().hex[:8]}"
        environ["LANDFALL_KAFKA_GROUP_PREFIX"] = name
        for key in ("landed", "validated", "featurized", "predicted", "reported", "failed",
                    "dead_letter"):  # fmt: skip
            environ[f"LANDFALL_KAFKA__TOPICS__{key.upper()}__NAME"] = f"{name}.{key}"
    settings = load_settings(DEMO_CONFIG, environ=environ)
    dataset = DatasetConfig.model_validate(DATASET_CONFIG)
    return settings.model_copy(update={"datasets": {DATASET: dataset}})


def partitions(sizes: list[int]) -> list[tuple[int, str]]:
    """Each size's partition: consecutive days from FIRST_PARTITION."""
    first = datetime.fromisoformat(FIRST_PARTITION).toordinal()
    return [(rows, datetime.fromordinal(first + i).date().isoformat()) for i, rows in
            enumerate(sizes)]  # fmt: skip


def raw_dir(workdir: Path, partition: str) -> Path:
    """Where a partition lands (the dataset's raw zone in the bench lake)."""
    return workdir / "home" / "lake" / DATASET / "raw" / partition


def way_dir(workdir: Path, way: str, partition: str) -> Path:
    """Where a baseline writes one partition's outputs."""
    return workdir / way / partition


# ------------------------------------------------------------------------- the data


def synthetic_rows(rows: int, seed: int, start: int = 0) -> pa.Table:
    """``rows`` raw rows numbered from ``start``; 7 of every 500 are bad (see the phases)."""
    rng = np.random.default_rng(seed)
    index = np.arange(start, start + rows)
    phase = index % BAD_PERIOD
    ids = np.char.add("r", index.astype("U12")).astype(object)
    ids[phase == BAD_ID] = np.char.add("x", index[phase == BAD_ID].astype("U12"))
    repeated = np.flatnonzero(phase == REPEATED_ID)
    repeated = repeated[repeated > 0]
    ids[repeated] = ids[repeated - 1]  # both rows share an id: both are quarantined
    ids[phase == NULL_ID] = None
    columns: dict[str, Any] = {"id": pa.array(ids, pa.string())}
    for k, name in enumerate(FLOATS):
        values = rng.normal(0.0, 1.0 + k / 10, rows)
        if name == "x0":
            values[phase == X0_OUTLIER] = 1000.0
        columns[name] = pa.array(values, mask=(phase == NULL_X1) if name == "x1" else None)
    cat_a = np.array(CAT_A, dtype=object)[rng.integers(0, len(CAT_A), rows)]
    cat_a[phase == UNKNOWN_CAT_A] = "purple"
    cat_b = np.array(CAT_B, dtype=object)[rng.integers(0, len(CAT_B), rows)]
    cat_b[phase == NULL_CAT_B] = None
    columns["cat_a"] = pa.array(cat_a, pa.string())
    columns["cat_b"] = pa.array(cat_b, pa.string())
    return pa.table(columns)


def land_partition(directory: Path, rows: int, seed: int) -> int:
    """Write a raw partition in files of up to a million rows; return its bad rows."""
    directory.mkdir(parents=True, exist_ok=True)
    bad = 0
    for part, start in enumerate(range(0, rows, CHUNK_ROWS)):
        table = synthetic_rows(min(CHUNK_ROWS, rows - start), seed * 1000 + part, start)
        pq.write_table(table, directory / f"part-{part:05d}.parquet")
        bad += int((~plain_checks(table)[1]).sum())
    return bad


# ------------------------------------------- the single process: validation, features


def plain_checks(raw: pa.Table) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """Every check the validator runs, in its order, as (name, broken per row); and validity.

    The implicit not-null checks of the id and the non-nullable columns come first,
    then the configured rules; a rule passes on a missing value, as in the validator.
    """

    def broken(mask: Any) -> np.ndarray:
        return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)

    ids, x0, cat_a = raw.column("id"), raw.column("x0"), raw.column("cat_a")
    checks = [("not_null:id", broken(pc.is_null(ids)))]
    checks += [(f"not_null:{name}", broken(pc.is_null(raw.column(name)))) for name in FLOATS]
    counts = pc.value_counts(ids.drop_null().combine_chunks())
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    checks.append(("id_unique", broken(pc.is_in(ids, value_set=repeated))))
    checks.append(("id_format", broken(pc.invert(pc.match_substring_regex(ids, ID_PATTERN)))))
    outside = pc.or_(pc.less(x0, X0_RANGE[0]), pc.greater(x0, X0_RANGE[1]))
    checks.append(("x0_range", broken(outside)))
    unknown = pc.and_(pc.is_valid(cat_a), pc.invert(pc.is_in(cat_a, value_set=pa.array(CAT_A))))
    checks.append(("cat_a_known", broken(unknown)))
    invalid = np.logical_or.reduce([mask for _, mask in checks])
    return checks, ~invalid


def plain_validate(raw: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Valid rows, and quarantined rows with the names of the checks each broke."""
    checks, valid = plain_checks(raw)
    quarantined = raw.filter(pa.array(~valid))
    names = np.array([name for name, _ in checks], dtype=object)
    broken = np.column_stack([mask for _, mask in checks])[~valid]
    reasons = pa.array([list(names[row]) for row in broken], pa.list_(pa.string()))
    return raw.filter(pa.array(valid)), quarantined.append_column("_quarantine_reasons", reasons)


def plain_features(valid: pa.Table) -> pa.Table:
    """The configured features, written by hand in pyarrow (the featurizer's semantics)."""
    col = valid.column
    double = pa.float64()
    columns: dict[str, Any] = {"id": col("id")}
    columns |= {name: pc.cast(col(name), double) for name in FLOATS}
    for value in CAT_A:  # one-hot: 1.0 for the value, else 0.0 (a null too)
        columns[f"a_{value}"] = pc.fill_null(pc.cast(pc.equal(col("cat_a"), value), double), 0.0)
    position = pc.index_in(col("cat_b"), value_set=pa.array(CAT_B))  # null: unseen or missing
    columns["b_rank"] = pc.fill_null(pc.cast(position, double), -1.0)
    reached = [pc.cast(pc.greater_equal(col("x1"), s), pa.int32()) for s in X1_SPLITS]
    band = reached[0]
    for more in reached[1:]:
        band = pc.add(band, more)
    columns["x1_band"] = pc.cast(band, double)
    columns["x0_x1"] = pc.multiply(col("x0"), col("x1"))
    columns["x2_x3"] = pc.multiply(col("x2"), col("x3"))
    columns["x4_plus_x5"] = pc.add(col("x4"), col("x5"))
    columns["abs_x6"] = pc.abs(col("x6"))
    columns["x7_squared"] = pc.multiply(col("x7"), col("x7"))
    return pa.table(columns)


def register_bench_model(settings: Any, rows: int = 20_000, seed: int = 3) -> str:
    """Train the 100-iteration HistGradientBoosting classifier; register it @champion."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.ensemble import HistGradientBoostingClassifier

    from landfall.registry import configure_mlflow, mlflow_client

    configure_mlflow(settings)
    valid, _ = plain_validate(synthetic_rows(rows, seed))
    features = plain_features(valid).drop_columns(["id"]).to_pandas()
    noise = np.random.default_rng(seed + 1).normal(0, 0.5, len(features))
    score = (features.x0 - 0.7 * features.x0_x1 + 0.5 * features.x2 * features.x3
             + features.a_north - 0.3 * features.b_rank + 0.2 * features.abs_x6)  # fmt: skip
    labels = (score + noise > 0.2).astype(int)
    model = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
    model.fit(features, labels)
    experiment = MODEL
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(
            experiment, artifact_location=(settings.home / "mlartifacts").as_uri()
        )
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="e2e-bench-train"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(features, model.predict(features).astype(float)),
            registered_model_name=MODEL,
            # The type behind every fitted tree; trusted because this bench made it.
            skops_trusted_types=[
                "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
            ],
        )
    version = str(info.registered_model_version)
    mlflow_client(settings).set_registered_model_alias(MODEL, "champion", version)
    return version


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
        validate_partition(
            spark, dataset, raw_dir(workdir, name), out / "validated", out / "quarantine"
        )
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
    idle_settle_s: float,
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
            found[partition] = {
                "seconds": best["seconds"],
                "runs": [r["seconds"] for r in runs],
                "stages": best["stages"],
                "hops_ms": [r["hops_ms"] for r in runs],
                "run_id": runs[-1]["run_id"],  # whose outputs are compared
                "rows_landed": best["rows_landed"],
                "rows_scored": best["rows_scored"],
                "peak_rss_mib": {name: kib / 1024 for name, kib in peaks.items()},
                "idle_rss_mib": runner.idle_rss_mib(idle_settle_s),
            }
    finally:
        runner.close()
    return stack, found


# ---------------------------------------------------------------------- the checks


def _read(directory: Path) -> pa.Table:
    return pq.read_table(str(directory))


def _sorted_by_id(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))


def _quarantine_keys(table: pa.Table) -> Counter[tuple[str | None, tuple[str, ...]]]:
    ids = table.column("id").to_pylist()
    reasons = table.column("_quarantine_reasons").to_pylist()
    return Counter((i, tuple(r)) for i, r in zip(ids, reasons, strict=True))


def compare_outputs(expected: dict[str, Path], actual: dict[str, Path]) -> dict[str, Any]:
    """The valid ids, quarantined ids and reasons, and predictions of ``actual`` vs ``expected``.

    Keys of both: ``validated``, ``quarantine``, ``predictions`` (folders). Quarantined
    rows are compared as a multiset of (id, reasons): a missing or repeated id may
    occur in more than one row there.
    """
    checks: dict[str, Any] = {}
    if "validated" in actual:
        ours = _read(actual["validated"]).column("id").combine_chunks()
        theirs = _read(expected["validated"]).column("id").combine_chunks()
        checks["valid_rows"] = len(ours)
        checks["valid_ids_equal"] = ours.take(pc.sort_indices(ours)).equals(
            theirs.take(pc.sort_indices(theirs))
        )
    if "quarantine" in actual:
        ours_q = _quarantine_keys(_read(actual["quarantine"]))
        theirs_q = _quarantine_keys(_read(expected["quarantine"]))
        checks["quarantined_rows"] = sum(ours_q.values())
        checks["quarantine_equal"] = ours_q == theirs_q
        reasons: Counter[str] = Counter()
        for (_, broken), count in ours_q.items():
            for name in broken:
                reasons[name] += count
        checks["quarantine_reasons"] = dict(sorted(reasons.items()))
    ours_p = _sorted_by_id(_read(actual["predictions"]))
    theirs_p = _sorted_by_id(_read(expected["predictions"]))
    checks["scored_rows"] = ours_p.num_rows
    same_ids = ours_p.column("id").equals(theirs_p.column("id"))
    checks["prediction_ids_equal"] = same_ids
    probabilities = [c for c in theirs_p.column_names if c.startswith("probability_")]
    worst = float("inf")
    if same_ids and all(c in ours_p.column_names for c in probabilities):
        worst = max(
            float(pc.max(pc.abs(pc.subtract(ours_p.column(c), theirs_p.column(c)))).as_py() or 0)
            for c in probabilities
        )
        expected_classes = theirs_p.column("prediction")
        classes = pc.cast(ours_p.column("prediction"), expected_classes.type)
        checks["classes_equal"] = classes.equals(expected_classes)
    else:
        checks["classes_equal"] = False
    checks["max_probability_difference"] = worst
    checks["probabilities_equal"] = worst <= PROBABILITY_TOLERANCE
    checks["match"] = all(
        checks[k]
        for k in ("valid_ids_equal", "quarantine_equal", "prediction_ids_equal",
                  "classes_equal", "probabilities_equal") if k in checks
    )  # fmt: skip
    return checks


def landfall_outputs(settings: Any, partition: str, run_id: str) -> dict[str, Path]:
    """Where the run committed its validated rows, quarantine and predictions."""
    from landfall.lake import Lake

    lake = Lake.from_settings(settings)
    found = {}
    for zone in ("validated", "quarantine", "predictions"):
        path = lake.output_of_run(DATASET, zone, partition, run_id)  # type: ignore[arg-type]
        if path is None:
            raise RuntimeError(f"run {run_id} committed no {zone} output for {partition}")
        found[zone] = Path(str(path))
    return found


def baseline_outputs(workdir: Path, way: str, partition: str) -> dict[str, Path]:
    """Where a baseline wrote one partition's outputs."""
    out = way_dir(workdir, way, partition)
    return {zone: out / zone for zone in ("validated", "quarantine", "predictions")}


# ---------------------------------------------------------------------- reporting


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), None without values."""
    return float(np.percentile(values, q)) if values else None


def summarise_hops(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Hop overhead over every timed run: p50, p99, and each hop's median."""
    every = [run for size in sizes for run in size["landfall"]["hops_ms"]]
    values = [ms for run in every for ms in run.values()]
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
        "median_by_hop_ms": {hop: percentile([run[hop] for run in every], 50) for hop in HOPS},
    }


def markdown(result: dict[str, Any]) -> str:
    """The tables for bench/README.md."""
    lines = [
        "| rows | landfall, event → batch-reported | rows/s | one process | rows/s "
        "| seed's way | rows/s | landfall / one process | seed / landfall | outputs equal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in result["sizes"]:
        lf, plain, seed, ratio = size["landfall"], size["plain"], size["seed"], size["ratios"]
        runs = ", ".join(f"{s:.1f}" for s in lf["runs"])
        lines.append(
            f"| {size['rows']:,} | {lf['seconds']:.1f} s ({runs}) | {lf['rows_per_s']:,.0f} "
            f"| {plain['seconds']:.1f} s | {plain['rows_per_s']:,.0f} "
            f"| {seed['seconds']:.1f} s | {seed['rows_per_s']:,.0f} "
            f"| {ratio['landfall_vs_plain']:.2f}x | {ratio['seed_vs_landfall']:.2f}x "
            f"| {'yes' if size['outputs_match'] else 'NO'} |"
        )
    lines += ["", "| rows | way | " + " | ".join(STAGES) + " |", "|---:|---|" + "---:|" * 4]
    for size in result["sizes"]:
        for way in WAYS:
            stages = size[way]["stages"]
            cells = " | ".join(f"{stages[s]:.2f} s" if s in stages else "—" for s in STAGES)
            lines.append(f"| {size['rows']:,} | {way} | {cells} |")
    hops = result["hops"]
    by_hop = ", ".join(f"{hop} {ms:.0f}" for hop, ms in hops["median_by_hop_ms"].items())
    lines += [
        "",
        f"Hops (a stage's end to the next stage's start, {hops['count']} of them): "
        f"p50 {hops['p50_ms']:.0f} ms, p99 {hops['p99_ms']:.0f} ms; medians: {by_hop} ms.",
        "",
        "| rows | peak RSS MiB: validator | featurizer | predictor | reporter "
        "| idle after: validator | featurizer | predictor | reporter | one process | seed's way |",
        "|---:|" + "---:|" * 10,
    ]
    services = ("validator", "featurizer", "predictor", "reporter")
    for size in result["sizes"]:
        lf = size["landfall"]
        peaks = " | ".join(f"{lf['peak_rss_mib'].get(s, 0):,.0f}" for s in services)
        idle = " | ".join(f"{lf['idle_rss_mib'].get(s, 0):,.0f}" for s in services)
        lines.append(
            f"| {size['rows']:,} | {peaks} | {idle} | {size['plain']['peak_rss_mib']:,.0f} "
            f"| {size['seed']['peak_rss_mib']:,.0f} |"
        )
    return "\n".join(lines)


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
    results = []
    for rows, partition in sizes:
        lf, plain, seed = (
            landfall[partition],
            baselines["plain"][partition],
            baselines["seed"][partition],
        )
        for figures in (lf, plain, seed):
            figures["rows_per_s"] = rows / figures["seconds"]
        expected = baseline_outputs(workdir, "plain", partition)
        outputs = {
            "landfall": compare_outputs(
                expected, landfall_outputs(settings, partition, lf["run_id"])
            ),
            "seed": compare_outputs(expected, baseline_outputs(workdir, "seed", partition)),
        }
        results.append(
            {
                "rows": rows,
                "partition": partition,
                "bad_rows": bad[partition],
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
        )
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
    # back on G1's periodic collection (landfall/spark.py), some seconds after the work.
    parser.add_argument(
        "--idle-settle-s",
        type=float,
        default=30.0,
        help="seconds after each size's last batch before idle RSS is read",
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
