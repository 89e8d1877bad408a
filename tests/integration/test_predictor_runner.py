"""The predictor in the runner on a real broker: a refused model fails its batch only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from landfall.config import ModelSpec, Settings
from landfall.contracts import EventType
from landfall.events import EventWatcher
from landfall.runner import Runner
from landfall.stage import StageContext
from services.predictor.service import PredictorService
from tests.conftest import isolated_settings
from tests.model_support import model_registry, publish_featurized

pytestmark = pytest.mark.broker

PARTITION = "2026-11-05"


@pytest.fixture
def predictor_settings(
    kafka_bootstrap: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Two datasets on one registry: ``demo`` at @champion, ``weak`` at a gate-failing alias."""
    registry = f"sqlite:///{model_registry(tmp_path_factory)}/mlflow.db"
    settings = isolated_settings(
        kafka_bootstrap, tmp_path, "predictor", LANDFALL_MLFLOW__TRACKING_URI=registry
    )
    demo = settings.dataset("demo")
    weak = demo.model_copy(
        update={"model": ModelSpec(uri="models:/landfall-demo@weak", gate=demo.model.gate)}
    )
    return settings.model_copy(update={"datasets": {"demo": demo, "weak": weak}})


@pytest.fixture
def watch(predictor_settings: Settings) -> Iterator[EventWatcher]:
    topics = predictor_settings.kafka.topics
    watcher = EventWatcher(predictor_settings, [topics.predicted.name, topics.failed.name])
    yield watcher
    watcher.close()


def test_a_refused_model_fails_its_batch_and_the_next_batch_is_scored(
    spark, predictor_settings: Settings, watch: EventWatcher
) -> None:
    refused = publish_featurized(spark, predictor_settings, "weak", PARTITION, rows=100, is_red=0.0)
    scored = publish_featurized(spark, predictor_settings, "demo", PARTITION, rows=100, is_red=0.0)
    service = PredictorService(StageContext(predictor_settings, "predictor", spark=spark))
    runner = Runner(service, predictor_settings)
    try:
        stats = runner.run(max_messages=2, timeout=180)
    finally:
        runner.close()

    assert (stats.consumed, stats.failed, stats.handled) == (2, 1, 1)
    _, kind, failed = watch.wait_for(lambda _t, _k, r: r["run_id"] == refused, timeout=30)
    assert kind is EventType.BATCH_FAILED
    assert failed["retryable"] is False and failed["stage"] == "prediction"
    assert "accuracy 0.5 is below the minimum 0.8" in failed["reason"]
    assert failed["details"]["gate.accuracy"] == "0.5 (required >= 0.8)"
    _, kind, predicted = watch.wait_for(lambda _t, _k, r: r["run_id"] == scored, timeout=30)
    assert kind is EventType.BATCH_PREDICTED
    assert (predicted["model_version"], predicted["model_alias"]) == ("1", "champion")


def test_a_pinned_version_published_upstream_travels_to_the_predictor_s_input(
    predictor_settings: Settings,
) -> None:
    from landfall.contracts import follow_up
    from landfall.events import publish_data_landed

    topics = predictor_settings.kafka.topics
    watcher = EventWatcher(predictor_settings, [topics.landed.name])
    try:
        landed = publish_data_landed(predictor_settings, "demo", PARTITION, model_version="2")
        _, _, seen = watcher.wait_for(lambda _t, _k, r: r["run_id"] == landed["run_id"], timeout=30)
    finally:
        watcher.close()

    assert seen["model_version"] == "2"
    validated = follow_up(
        EventType.BATCH_VALIDATED, seen, producer="v/0", output_path="v", quarantine_path="q",
        manifest_path="m", rows_landed=1, rows_valid=1, rows_quarantined=0, duration_ms=1,
    )  # fmt: skip
    featurized = follow_up(
        EventType.BATCH_FEATURIZED, validated, producer="f/0", output_path="f",
        manifest_path="m", rows=1, features=["f1"], duration_ms=1,
    )  # fmt: skip
    assert featurized["model_version"] == "2"
