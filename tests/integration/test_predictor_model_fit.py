"""A model that cannot take its dataset's features is found when the predictor starts.

On a real broker and a real MLflow registry: the mismatch is logged at start, the
dataset's batches are refused at once (no Spark job, no output), the other dataset
still scores, and moving the alias to a version that fits is picked up without a
restart.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from landfall.config import ModelSpec, Settings
from landfall.contracts import EventType
from landfall.events import EventWatcher
from landfall.lake import Lake
from landfall.registry import mlflow_client
from landfall.runner import Runner
from landfall.stage import StageContext
from services.predictor.service import PredictorService
from tests.conftest import isolated_settings, settings_for
from tests.model_support import (
    FEATURES,
    GOOD,
    classifier_dir,
    publish_featurized,
    register,
    training_frame,
)

pytestmark = pytest.mark.broker

CASED_MODEL = "cased-model"


def _cased_classifier(directory: Path) -> Path:
    """A model trained outside landfall: two of its inputs differ from the features in case."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    frame = training_frame()
    inputs = frame[FEATURES].rename(columns={"f1": "F1", "is_red": "Is_Red"})
    model = LogisticRegression(max_iter=300).fit(inputs, frame["label"])
    signature = infer_signature(inputs, model.predict(inputs).astype(float))
    mlflow.sklearn.save_model(
        model, str(directory), signature=signature, pip_requirements=["scikit-learn"]
    )
    return directory


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """``demo`` on landfall-demo@champion; ``cased`` on cased-model@champion (version 1)."""
    models = tmp_path / "models"
    registry = f"sqlite:///{models / 'mlflow.db'}"
    home = settings_for(models, LANDFALL_MLFLOW__TRACKING_URI=registry)
    register(home, classifier_dir(models / "demo"), "landfall-demo", alias="champion", metrics=GOOD)
    register(home, _cased_classifier(models / "cased"), CASED_MODEL, alias="champion")
    settings = isolated_settings(
        kafka_bootstrap, tmp_path / "home", "fit", LANDFALL_MLFLOW__TRACKING_URI=registry
    )
    demo = settings.dataset("demo")
    cased = demo.model_copy(update={"model": ModelSpec(uri=f"models:/{CASED_MODEL}@champion")})
    return settings.model_copy(update={"datasets": {"demo": demo, "cased": cased}})


@pytest.fixture
def watch(settings: Settings) -> Iterator[EventWatcher]:
    topics = settings.kafka.topics
    watcher = EventWatcher(settings, [topics.predicted.name, topics.failed.name])
    yield watcher
    watcher.close()


def _probe_job(spark) -> int:  # type: ignore[no-untyped-def]
    """The id of a one-job probe: Spark numbers jobs in order, so ids count jobs between."""
    context = spark.sparkContext
    group = f"probe-{uuid.uuid4().hex}"
    context.setJobGroup(group, "probe")
    try:
        spark.range(1).collect()
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    return min(context.statusTracker().getJobIdsForGroup(group))


def test_a_model_that_cannot_take_the_features_is_refused_and_a_fixed_one_scores(
    spark,
    settings: Settings,
    watch: EventWatcher,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = PredictorService(StageContext(settings, "predictor", spark=spark))
    with caplog.at_level(logging.INFO, logger="services.predictor.service"):
        service.start()
    (found,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"dataset cased's features do not fit model {CASED_MODEL} version 1 (@champion)" in (
        found
    )
    assert "F1 is not a feature column (did you mean f1? only the case differs)" in found
    assert "Is_Red is not a feature column (did you mean is_red?" in found
    assert "feature columns the model does not take: f1, is_red" in found

    runner = Runner(service, settings)
    try:
        refused = publish_featurized(spark, settings, "cased", "2026-11-05", rows=50, is_red=1.0)
        before = _probe_job(spark)
        assert runner.run(max_messages=1, timeout=120).failed == 1
        _, kind, failed = watch.wait_for(lambda _t, _k, r: r["run_id"] == refused, timeout=30)
        # Refused before any Spark work: the next job after the probe is the next probe.
        assert _probe_job(spark) == before + 1
        assert kind is EventType.BATCH_FAILED and failed["stage"] == "prediction"
        assert "F1 is not a feature column (did you mean f1?" in failed["reason"]
        assert failed["reason"].startswith("dataset cased's features do not fit")
        assert failed["details"]["model_uri"] == f"models:/{CASED_MODEL}/1"
        assert not (Lake.from_settings(settings).root / "cased" / "predictions").exists()

        scored = publish_featurized(spark, settings, "demo", "2026-11-05", rows=50, is_red=1.0)
        assert runner.run(max_messages=1, timeout=120).handled == 1
        _, kind, _ = watch.wait_for(lambda _t, _k, r: r["run_id"] == scored, timeout=30)
        assert kind is EventType.BATCH_PREDICTED

        # A version that fits, put behind the alias: the same service scores with it.
        fixed = register(settings, classifier_dir(tmp_path / "fixed"), CASED_MODEL)
        mlflow_client(settings).set_registered_model_alias(CASED_MODEL, "champion", fixed)
        again = publish_featurized(spark, settings, "cased", "2026-11-06", rows=50, is_red=1.0)
        assert runner.run(max_messages=1, timeout=120).handled == 1
        _, kind, predicted = watch.wait_for(lambda _t, _k, r: r["run_id"] == again, timeout=30)
    finally:
        runner.close()
    assert kind is EventType.BATCH_PREDICTED
    assert (predicted["model_name"], predicted["model_version"]) == (CASED_MODEL, "2")
