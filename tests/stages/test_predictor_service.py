"""The predictor service around its stage: versions, gates, challengers, manifests, events."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from landfall.codec import EventCodec
from landfall.config import ModelSpec
from landfall.contracts import EventType
from landfall.errors import RetryableError, StageFailedError
from landfall.events import featurized_event
from landfall.lake import read_manifest
from landfall.registry import mlflow_client
from landfall.stage import StageContext
from services.predictor.service import PredictorService
from tests.conftest import settings_for
from tests.model_support import FEATURES, model_registry

PARTITION = "2026-11-04"


@pytest.fixture(scope="module")
def models_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared registry of small real models (see tests/model_support.py)."""
    return model_registry(tmp_path_factory)


def _service(spark, tmp_path: Path, registry: str, **model: Any) -> PredictorService:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, LANDFALL_MLFLOW__TRACKING_URI=registry)
    if model:
        demo = settings.dataset("demo")
        spec = ModelSpec.model_validate({**demo.model.model_dump(), **model})
        settings = settings.model_copy(
            update={"datasets": {"demo": demo.model_copy(update={"model": spec})}}
        )
    return PredictorService(StageContext(settings, "predictor", spark=spark))


def _featurized(spark, service: PredictorService, rows: int = 300, **fields: Any) -> dict:  # type: ignore[no-untyped-def]
    """A committed feature partition in the service's lake, and its batch-featurized event."""
    lake = service.context.lake
    target = lake.partition_dir("demo", "features", PARTITION)
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({"id": [f"r{i:07d}" for i in range(rows)]})
    frame["f1"], frame["f2"] = rng.normal(size=rows), rng.normal(size=rows)
    frame["f1_times_f2"] = frame.f1 * frame.f2
    frame["is_red"] = (np.arange(rows) % 3 == 0).astype(float)
    spark.createDataFrame(frame).write.mode("overwrite").parquet(str(target))
    settings = service.context.settings
    return featurized_event(
        settings, "demo", PARTITION, rows=rows, features=FEATURES, producer_name="test/0", **fields
    )


@pytest.fixture
def restore_mlflow() -> Iterator[None]:
    """Put the process-wide MLflow URIs back after a test that points them elsewhere."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def _sqlite(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def _predictions(service: PredictorService, event: dict) -> pd.DataFrame:
    return pd.read_parquet(service.context.lake.resolve(event["output_path"]))


def test_the_resolved_version_is_in_every_row_the_manifest_and_the_event(
    spark, tmp_path: Path, models_home: Path
) -> None:
    service = _service(spark, tmp_path, _sqlite(models_home))
    featurized = _featurized(spark, service)

    (outgoing,) = service.handle(EventType.BATCH_FEATURIZED, featurized)

    event = outgoing.record
    assert outgoing.event_type is EventType.BATCH_PREDICTED
    assert (event["model_name"], event["model_version"]) == ("landfall-demo", "1")
    assert (event["model_alias"], event["model_pinned"]) == ("champion", False)
    assert event["model_uri"] == "models:/landfall-demo/1"
    assert event["gate_metrics"] == {"accuracy": 0.93, "latency_ms": 2.0}
    assert event["prediction_kind"] == "classifier"
    assert event["probability_columns"] == ["probability_0", "probability_1"]
    assert event["challenger_alias"] is None and event["challenger_model_version"] is None
    EventCodec(None).encode(EventType.BATCH_PREDICTED, event, topic="t")  # fits its contract

    rows = _predictions(service, event)
    assert len(rows) == rows.id.nunique() == 300
    assert set(rows.model_uri) == {"models:/landfall-demo/1"} and set(rows.model_version) == {"1"}
    manifest = read_manifest(service.context.lake.resolve(event["output_path"]))
    assert manifest["model"]["version"] == "1" and manifest["model"]["alias"] == "champion"
    assert manifest["model"]["uri"] == "models:/landfall-demo/1"
    assert [g["metric"] for g in manifest["model"]["gate"] if g["passed"]] == [
        "accuracy",
        "latency_ms",
    ]
    assert manifest["rows"] == {"predictions": 300}
    assert manifest["prediction"]["kind"] == "classifier"
    assert manifest["challenger"] is None


def test_a_pinned_version_scores_the_batch_instead_of_the_alias(
    spark, tmp_path: Path, models_home: Path
) -> None:
    service = _service(spark, tmp_path, _sqlite(models_home))
    featurized = _featurized(spark, service, model_version="2")

    (outgoing,) = service.handle(EventType.BATCH_FEATURIZED, featurized)

    event = outgoing.record
    assert (event["model_version"], event["model_alias"], event["model_pinned"]) == (
        "2",
        None,
        True,
    )
    assert set(_predictions(service, event).model_version) == {"2"}
    manifest = read_manifest(service.context.lake.resolve(event["output_path"]))
    assert manifest["model"]["pinned"] is True


def test_a_pinned_version_still_has_to_pass_the_gate(
    spark, tmp_path: Path, models_home: Path
) -> None:
    service = _service(spark, tmp_path, _sqlite(models_home))
    featurized = _featurized(spark, service, model_version="3")

    with pytest.raises(StageFailedError, match="accuracy 0.5 is below the minimum 0.8"):
        service.handle(EventType.BATCH_FEATURIZED, featurized)


def test_champion_and_challenger_both_score_and_the_event_carries_their_agreement(
    spark, tmp_path: Path, models_home: Path
) -> None:
    service = _service(spark, tmp_path, _sqlite(models_home), challenger="challenger")
    featurized = _featurized(spark, service)

    (outgoing,) = service.handle(EventType.BATCH_FEATURIZED, featurized)

    event = outgoing.record
    rows = _predictions(service, event)
    agreement = float((rows.prediction == rows.challenger_prediction).mean())
    assert event["challenger_alias"] == "challenger"
    assert event["challenger_model_version"] == "2"
    assert event["challenger_model_uri"] == "models:/landfall-demo/2"
    assert event["challenger_agreement"] == pytest.approx(agreement)
    assert 0 < agreement < 1
    assert event["challenger_mean_abs_diff"] is None
    assert event["challenger_skipped_reason"] is None
    manifest = read_manifest(service.context.lake.resolve(event["output_path"]))
    assert manifest["challenger"]["version"] == "2"
    assert manifest["challenger"]["comparison"]["agreement"] == pytest.approx(agreement)
    EventCodec(None).encode(EventType.BATCH_PREDICTED, event, topic="t")


@pytest.mark.parametrize(
    ("alias", "reason"),
    [
        ("no-such-alias", "cannot be resolved"),
        ("weak", "fails the quality gate"),
        ("champion-copy", "names the champion's version"),
    ],
)
def test_a_challenger_that_cannot_run_is_skipped_not_fatal(
    spark, tmp_path: Path, models_home: Path, alias: str, reason: str
) -> None:
    registry = _sqlite(models_home)
    if alias == "champion-copy":
        # A private copy of the registry, with an alias on the champion's own version.
        (tmp_path / "registry").mkdir()
        shutil.copy(models_home / "mlflow.db", tmp_path / "registry" / "mlflow.db")
        registry = _sqlite(tmp_path / "registry")
        client = mlflow_client(settings_for(tmp_path, LANDFALL_MLFLOW__TRACKING_URI=registry))
        client.set_registered_model_alias("landfall-demo", alias, "1")
    service = _service(spark, tmp_path, registry, challenger=alias)
    featurized = _featurized(spark, service, rows=60)

    (outgoing,) = service.handle(EventType.BATCH_FEATURIZED, featurized)

    event = outgoing.record
    assert event["model_version"] == "1"
    assert event["challenger_model_version"] is None and event["challenger_agreement"] is None
    assert reason in event["challenger_skipped_reason"]
    assert "challenger_prediction" not in _predictions(service, event).columns


@pytest.mark.parametrize(
    ("uri", "error", "says"),
    [
        ("models:/landfall-demo@weak", StageFailedError, "accuracy 0.5 is below the minimum 0.8"),
        ("models:/landfall-demo@nope", StageFailedError, "cannot be resolved"),
        ("models:/no-such-model@champion", StageFailedError, "cannot be resolved"),
    ],
)
def test_model_failures_fail_the_batch_and_commit_nothing(
    spark, tmp_path: Path, models_home: Path, uri: str, error: type[Exception], says: str
) -> None:
    service = _service(spark, tmp_path, _sqlite(models_home), uri=uri)
    featurized = _featurized(spark, service, rows=30)

    with pytest.raises(error, match=says) as caught:
        service.handle(EventType.BATCH_FEATURIZED, featurized)

    assert getattr(caught.value, "retryable", None) is False
    assert not service.context.lake.partition_dir("demo", "predictions", PARTITION).exists()


@pytest.mark.usefixtures("restore_mlflow")
def test_an_unreachable_registry_is_retryable(
    spark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    service = _service(spark, tmp_path, "http://127.0.0.1:1")
    featurized = _featurized(spark, service, rows=10)

    with pytest.raises(RetryableError, match="registry"):
        service.handle(EventType.BATCH_FEATURIZED, featurized)

    assert not service.context.lake.partition_dir("demo", "predictions", PARTITION).exists()
