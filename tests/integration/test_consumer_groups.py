"""`landfall groups`: a service group's members, their partitions and its lag, on Apache Kafka."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from landfall.config import Settings
from landfall.consumer_groups import describe_service_groups
from landfall.events import publish_data_landed
from landfall.runner import Runner
from tests.conftest import isolated_settings
from tests.integration.test_operations import _consume, _Counter

pytestmark = pytest.mark.broker


@pytest.fixture
def group_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, tmp_path, "groups")


def test_groups_show_members_their_partitions_and_the_lag(group_settings: Settings) -> None:
    partitions = [f"2026-11-{day:02d}" for day in range(1, 5)]
    for partition in partitions:
        publish_data_landed(group_settings, "demo", partition)
    assert sorted(_consume(group_settings, max_messages=4, timeout=60)) == partitions
    (idle,) = describe_service_groups(group_settings, ["counter"])
    assert (idle.state, idle.members, idle.lag) == ("empty", [], 0)
    assert sum(p.end for p in idle.partitions) == 4

    # Two more events wait while nobody consumes: the lag says so.
    for partition in ("2026-11-05", "2026-11-06"):
        publish_data_landed(group_settings, "demo", partition)
    (waiting,) = describe_service_groups(group_settings, ["counter"])
    assert waiting.lag == 2

    service = _Counter(group_settings)
    runner = Runner(service, group_settings)
    thread = threading.Thread(target=runner.run, kwargs={"timeout": 60})
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(service.partitions) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        (running,) = describe_service_groups(group_settings, ["counter"])
        assert running.state == "stable"
        (member,) = running.members
        landed = group_settings.kafka.topics.landed
        # One member owns every partition of the topic it reads.
        assert sorted(member.partitions) == [f"{landed.name}/{i}" for i in range(landed.partitions)]
    finally:
        runner.stop()
        thread.join(30)
        runner.close()
    (done,) = describe_service_groups(group_settings, ["counter"])
    assert done.lag == 0
