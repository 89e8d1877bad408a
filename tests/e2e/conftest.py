"""The e2e stack: the four services as processes, shared by the e2e modules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from landfall.config import DatasetConfig, Settings
from landfall.contracts import EventType
from landfall.events import EventWatcher
from landfall.stack import LocalStack
from tests.conftest import settings_for

# A second dataset, declared in config only (see test_bring_your_own_dataset.py).
SENSORS = yaml.safe_load((Path(__file__).with_name("sensors.yaml")).read_text())


@pytest.fixture(scope="package")
def stack(
    kafka_bootstrap: str, registry_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, LocalStack]]:
    """The four services against the session's broker, on their own topics and groups."""
    suffix = uuid.uuid4().hex[:8]
    home = tmp_path_factory.mktemp("e2e")
    overrides = {
        "LANDFALL_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LANDFALL_KAFKA_GROUP_PREFIX": f"e2e-{suffix}",
        "LANDFALL_MLFLOW__TRACKING_URI": f"sqlite:///{registry_home / 'mlflow.db'}",
    }
    for key in ("landed", "validated", "featurized", "predicted", "reported", "failed",
                "dead_letter"):  # fmt: skip
        overrides[f"LANDFALL_KAFKA__TOPICS__{key.upper()}__NAME"] = f"e2e-{suffix}.{key}"
    settings = settings_for(home, **overrides)
    datasets = {**settings.datasets, "sensors": DatasetConfig.model_validate(SENSORS)}
    local = LocalStack(settings.model_copy(update={"datasets": datasets}))
    live = local.start()
    try:
        yield live, local
    finally:
        local.stop()


@pytest.fixture
def watcher(stack: tuple[Settings, LocalStack]) -> Iterator[EventWatcher]:
    """Every topic but the ingress one, read from the beginning."""
    settings, _ = stack
    topics = settings.kafka.topics
    every_topic = [t.name for t in topics.all() if t is not topics.landed]
    watching = EventWatcher(settings, every_topic)
    yield watching
    watching.close()


def wait_reported(watcher: EventWatcher, local: LocalStack, run_id: str) -> dict[str, Any]:
    _, _, reported = watcher.wait_for(
        lambda _t, kind, rec: kind is EventType.BATCH_REPORTED and rec["run_id"] == run_id,
        timeout=420,
        alive=local.check_alive,
    )
    return reported
