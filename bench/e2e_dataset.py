"""The end-to-end benchmark's synthetic dataset, and the single process's way through it.

A partition of an id, 20 floats and 2 categories, 1.4% of its rows bad in six ways;
its landfall dataset config (4 rules, 32 features), the model trained on it, and the
plain pyarrow validation and features that landfall's outputs are compared with.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


def raw_dir(workdir: Path, partition: str) -> Path:
    """Where a partition lands (the dataset's raw zone in the bench lake)."""
    return workdir / "home" / "lake" / DATASET / "raw" / partition


def way_dir(workdir: Path, way: str, partition: str) -> Path:
    """Where a baseline writes one partition's outputs."""
    return workdir / way / partition


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
    from sklearn.ensemble import HistGradientBoostingClassifier

    from landfall.training import register_sklearn_model

    valid, _ = plain_validate(synthetic_rows(rows, seed))
    features = plain_features(valid).drop_columns(["id"]).to_pandas()
    noise = np.random.default_rng(seed + 1).normal(0, 0.5, len(features))
    score = (features.x0 - 0.7 * features.x0_x1 + 0.5 * features.x2 * features.x3
             + features.a_north - 0.3 * features.b_rank + 0.2 * features.abs_x6)  # fmt: skip
    labels = (score + noise > 0.2).astype(int)
    model = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
    model.fit(features, labels)
    return register_sklearn_model(
        settings, model, features, MODEL, run_name="e2e-bench-train",
        # The type behind every fitted tree; trusted because this bench made it.
        trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
    )  # fmt: skip
