"""Fixtures shared by integration modules: the runner's probe (test_runner*.py) and the
job API with its history (test_api*.py, one server for them all)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from landfall.config import Settings
from landfall.events import EventWatcher
from tests.api_support import (
    OPERATOR,
    READER,
    TOKEN_LINES,
    Api,
    api_settings,
    seed_api_history,
    start_api,
)
from tests.conftest import isolated_settings


@pytest.fixture
def probe_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return isolated_settings(
        kafka_bootstrap, tmp_path, "runner", LANDFALL_RUNNER__RETRY_BACKOFF_S="0.05"
    )


@pytest.fixture
def watch(probe_settings: Settings) -> Iterator[EventWatcher]:
    topics = probe_settings.kafka.topics
    watcher = EventWatcher(probe_settings, [topics.validated.name, topics.failed.name])
    yield watcher
    watcher.close()


@pytest.fixture(scope="package")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("api")
    settings, config_file = api_settings(home, kafka_bootstrap, TOKEN_LINES)
    seed_api_history(settings)
    server = start_api(settings, config_file, home / "api.log")
    clients = [server.client(OPERATOR), server.client(READER), server.client()]
    try:
        yield Api(settings, server, *clients, token_file=home / "tokens")
    finally:
        for client in clients:
            client.close()
        server.stop()
