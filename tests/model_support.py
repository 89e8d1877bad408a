"""Small real models for the registry and predictor tests, registered in a tmp registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from landfall.config import ModelSpec, Settings
from landfall.demo import demo_feature_frame
from landfall.registry import configure_mlflow, mlflow_client, register_model
from tests.conftest import settings_for

FEATURES = ["f1", "f2", "f1_times_f2", "is_red"]
GOOD = {"accuracy": 0.93, "latency_ms": 2.0}
_REGISTRIES: dict[Path, Path] = {}


def demo_settings_on(home: Path, registry: Path, **model: Any) -> Settings:
    """Demo settings under ``home`` on the registry in ``registry``, its model spec changed."""
    settings = settings_for(
        home, LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{registry / 'mlflow.db'}"
    )
    if model:
        demo = settings.dataset("demo")
        spec = ModelSpec.model_validate({**demo.model.model_dump(), **model})
        datasets = {"demo": demo.model_copy(update={"model": spec})}
        settings = settings.model_copy(update={"datasets": datasets})
    configure_mlflow(settings)
    return settings


def training_frame(rows: int = 600, seed: int = 3) -> Any:
    """Demo-shaped features with a class label and a continuous target."""
    frame = demo_feature_frame(rows, seed)
    score = 1.2 * frame.f1 - 0.8 * frame.f2 + 0.5 * frame.f1_times_f2 + frame.is_red
    frame["label"] = (score > 0.3).astype(int)
    frame["target"] = score + np.random.default_rng(seed).normal(0, 0.1, rows)
    return frame


def save_sklearn(model: Any, directory: Path, output: Any) -> Path:
    """Save a fitted model as an MLflow model directory (no pip inference: it is slow)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    frame = training_frame()[FEATURES]
    mlflow.sklearn.save_model(
        model,
        str(directory),
        signature=infer_signature(frame, output),
        pip_requirements=["scikit-learn"],
    )
    return directory


def classifier_dir(directory: Path, *, seed: int = 3, c: float = 1.0, labels: Any = None) -> Path:
    """A logistic regression on the demo features; ``labels`` maps 0/1 to other classes."""
    from sklearn.linear_model import LogisticRegression

    frame = training_frame(seed=seed)
    target = frame["label"] if labels is None else frame["label"].map(labels)
    model = LogisticRegression(C=c, max_iter=300).fit(frame[FEATURES], target)
    output = model.predict(frame[FEATURES])
    return save_sklearn(model, directory, output.astype(float) if labels is None else output)


def regressor_dir(directory: Path, *, seed: int = 3) -> Path:
    """A linear regression on the demo features."""
    from sklearn.linear_model import LinearRegression

    frame = training_frame(seed=seed)
    model = LinearRegression().fit(frame[FEATURES], frame["target"])
    return save_sklearn(model, directory, model.predict(frame[FEATURES]))


def register(
    settings: Settings,
    directory: Path,
    name: str,
    *,
    alias: str | None = None,
    metrics: dict[str, float] | None = None,
) -> str:
    """Register a model directory (with metrics) and point an alias at it."""
    version = register_model(settings, str(directory), name, metrics=metrics).version
    if alias is not None:
        mlflow_client(settings).set_registered_model_alias(name, alias, version)
    return version


def model_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose registry holds small real models, built once per test session.

    ``landfall-demo``: v1 @champion and v2 @challenger (classifiers that disagree on
    some rows, both passing the demo gate), v3 @weak (accuracy 0.5), v4 @unmeasured (no
    metrics); ``tiny-regressor`` v1 @champion, v2 @challenger; ``yes-no`` v1 @champion
    (a classifier with string labels).
    """
    base = tmp_path_factory.getbasetemp()
    if base not in _REGISTRIES:
        home = tmp_path_factory.mktemp("predictor-registry")
        settings = settings_for(home)
        champion = classifier_dir(home / "champion", seed=3)
        # Heavily regularised and trained on other rows: it disagrees on some rows.
        challenger = classifier_dir(home / "challenger", seed=8, c=0.02)
        register(settings, champion, "landfall-demo", alias="champion", metrics=GOOD)
        register(settings, challenger, "landfall-demo", alias="challenger", metrics=GOOD)
        register(settings, champion, "landfall-demo", alias="weak", metrics={"accuracy": 0.5})
        register(settings, champion, "landfall-demo", alias="unmeasured")
        register(settings, regressor_dir(home / "reg1"), "tiny-regressor", alias="champion")
        register(
            settings, regressor_dir(home / "reg2", seed=9), "tiny-regressor", alias="challenger"
        )
        labelled = classifier_dir(home / "labelled", labels={0: "no", 1: "yes"})
        register(settings, labelled, "yes-no", alias="champion")
        _REGISTRIES[base] = home
    return _REGISTRIES[base]


def publish_featurized(
    spark: Any, settings: Settings, dataset: str, partition: str, *, rows: int, is_red: float
) -> str:
    """Commit a demo-like feature partition as the featurizer writes it, and announce it.

    Returns the run id of its batch-featurized event.
    """
    import pandas as pd
    from confluent_kafka import Producer

    from landfall.codec import EventCodec
    from landfall.contracts import EventType, partition_key
    from landfall.events import featurized_event
    from landfall.kafka_clients import kafka_client_config
    from landfall.lake import Lake

    target = Lake.from_settings(settings).partition_dir(dataset, "features", partition)
    rng = np.random.default_rng(rows)
    frame = pd.DataFrame({"id": [f"r{i:07d}" for i in range(rows)]})
    frame["f1"], frame["f2"] = rng.normal(size=rows), rng.normal(size=rows)
    frame["f1_times_f2"], frame["is_red"] = frame.f1 * frame.f2, is_red
    spark.createDataFrame(frame).write.mode("overwrite").parquet(str(target))
    record = featurized_event(
        settings, dataset, partition, rows=rows, features=FEATURES, producer_name="test/0"
    )
    topic = settings.kafka.topics.featurized.name
    producer = Producer(kafka_client_config(settings))
    producer.produce(
        topic,
        key=partition_key(record),
        value=EventCodec(None).encode(EventType.BATCH_FEATURIZED, record, topic=topic),
    )
    assert producer.flush(30) == 0
    del producer  # no client left polling a broker that stops with the session
    return str(record["run_id"])
