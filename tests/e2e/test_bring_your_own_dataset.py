"""A second dataset runs end to end with a config block and its own model, no code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.events import EventWatcher, publish_data_landed
from landfall.lake import Lake, LakePath, read_manifest
from landfall.stack import LocalStack
from services.featurizer.stage import featurize_partition
from services.validator.stage import validate_partition
from tests.e2e.conftest import wait_reported

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

PARTITION = "2026-11-20"


def _land_readings(lake: Lake, partition: str, rows: int, seed: int) -> tuple[LakePath, int]:
    """JSON lines as a sensor gateway would land them; some deliberately bad."""
    rng = np.random.default_rng(seed)
    directory = lake.partition_dir("sensors", "raw", partition)
    directory.mkdir(parents=True, exist_ok=True)
    bad = 0
    lines = []
    for i in range(rows):
        reading = {
            "reading_id": f"rd-{i}",
            "device": ["d1", "d2", "d3"][i % 3],
            "temperature": round(float(rng.normal(18, 8)), 2),
            "humidity": round(float(rng.uniform(20, 90)), 1),
            "taken_at": f"{partition}T{i % 24:02d}:15:00",
            "firmware": "1.4",  # not declared: reported and kept
        }
        if i % 50 == 7:
            reading["humidity"], bad = 140.0, bad + 1  # out of range
        elif i % 50 == 19:
            reading["reading_id"], bad = "rd-x", bad + 1  # fails the regex
        elif i % 50 == 33:
            reading["temperature"], bad = 99.0, bad + 1  # implausible
        lines.append(json.dumps(reading) + "\n")
    (directory / "readings.json").write_text("".join(lines))
    return directory, bad


def _land_devices(spark, lake: Lake) -> None:
    spark.createDataFrame(
        [("d1", 120.0), ("d2", 850.0), ("d3", 2300.0)], "device string, altitude_m double"
    ).write.mode("overwrite").parquet(str(lake.partition_dir("devices", "validated", "2026-11-01")))


def _register_regressor(spark, settings: Settings, lake: Lake, tmp_path: Path) -> str:
    """Train on features landfall's own featurizer computes, then register the model."""
    from sklearn.linear_model import LinearRegression

    from landfall.training import register_sklearn_model

    dataset = settings.dataset("sensors")
    raw, _ = _land_readings(lake, "2026-11-01", 600, seed=1)
    validate_partition(spark, dataset, raw, tmp_path / "valid", tmp_path / "quarantine")
    featurize_partition(
        spark, dataset, tmp_path / "valid", tmp_path / "features", lake=lake, partition="2026-11-01"
    )
    features = pq.read_table(tmp_path / "features").to_pandas().drop(columns=["reading_id"])
    target = 2.0 * features["humidity_frac"] + features["altitude_km"] + 0.1 * features["temp_band"]
    model = LinearRegression().fit(features, target)
    return register_sklearn_model(
        settings, model, features, "sensors-regressor", experiment="sensors",
        metrics={"r2": float(model.score(features, target)), "latency_ms": 1.0},
    )  # fmt: skip


def test_a_new_dataset_runs_end_to_end_from_config_alone(
    spark, stack: tuple[Settings, LocalStack], watcher: EventWatcher, tmp_path: Path
) -> None:
    settings, local = stack
    lake = Lake(settings.lake)
    _land_devices(spark, lake)
    version = _register_regressor(spark, settings, lake, tmp_path)
    _, bad = _land_readings(lake, PARTITION, 400, seed=2)

    landed = publish_data_landed(settings, "sensors", PARTITION)
    reported = wait_reported(watcher, local, landed["run_id"])

    assert reported["status"] == "SUCCEEDED", reported.get("failure_reason")
    chain = {kind: rec for _t, kind, rec in watcher.seen if rec["run_id"] == landed["run_id"]}
    validated = chain[EventType.BATCH_VALIDATED]
    assert (validated["rows_landed"], validated["rows_quarantined"]) == (400, bad)
    assert validated["failures_by_rule"]["humidity_percent"] == 8
    assert validated["failures_by_rule"]["reading_id_format"] == 8
    assert validated["failures_by_rule"]["plausible_temperature"] == 8
    assert validated["extra_columns"] == ["firmware"]
    featurized = chain[EventType.BATCH_FEATURIZED]
    assert (featurized["feature_set"], featurized["feature_set_version"]) == (
        "sensor-features",
        "2",
    )
    assert "device_other" in featurized["features"]
    assert read_manifest(lake.resolve(featurized["output_path"]))["references"] == {
        "devices": "devices/validated/2026-11-01"
    }
    predicted = chain[EventType.BATCH_PREDICTED]
    assert predicted["model_name"] == "sensors-regressor"
    assert predicted["model_version"] == version
    predictions = pq.read_table(lake.resolve(predicted["output_path"])).to_pandas()
    assert len(predictions) == predictions["reading_id"].nunique() == 400 - bad
    # A regressor's predictions are real numbers near the function it learned.
    assert predictions["prediction"].between(0, 5).all()
    assert predictions["prediction"].nunique() > 10
