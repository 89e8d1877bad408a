"""Backfill and replay against a real broker."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.deliveries import current_replay
from landfall.demo import write_sample_partition
from landfall.errors import LandfallError
from landfall.events import EventWatcher, publish_data_landed
from landfall.lake import MANIFEST_NAME, Lake
from landfall.operations import backfill, plan_backfill, replay
from landfall.runner import Outgoing, Runner
from tests.conftest import isolated_settings

pytestmark = pytest.mark.broker


@pytest.fixture
def ops_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    # One partition for the ingress topic: these tests follow offsets in one log.
    return isolated_settings(
        kafka_bootstrap, tmp_path, "ops", LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS="1"
    )


def test_a_backfill_publishes_what_landed_and_was_not_scored(ops_settings: Settings) -> None:
    lake = Lake(ops_settings.lake)
    for partition in ("2026-11-01", "2026-11-03", "2026-11-04"):
        write_sample_partition(lake, partition, rows=20)
    scored = lake.partition_dir("demo", "predictions", "2026-11-03")
    scored.mkdir(parents=True)
    (scored / MANIFEST_NAME).write_text("{}")

    plan = plan_backfill(ops_settings, "demo", "2026-11-01", "2026-11-04", missing_only=True)
    assert (plan.publish, plan.not_landed, plan.already_scored) == (
        ["2026-11-01", "2026-11-04"], ["2026-11-02"], ["2026-11-03"],
    )  # fmt: skip
    published = backfill(ops_settings, plan, model_version="1")

    watcher = EventWatcher(ops_settings, [ops_settings.kafka.topics.landed.name])
    try:
        for record in published:
            _, kind, seen = watcher.wait_for(
                lambda _t, _k, rec, run=record["run_id"]: rec["run_id"] == run, timeout=30
            )
            assert kind is EventType.DATA_LANDED
            assert (seen["partition"], seen["model_version"]) == (record["partition"], "1")
    finally:
        watcher.close()
    assert len({r["run_id"] for r in published}) == 2


class _Counter:
    """A service that only counts the data-landed events it is given."""

    name = "counter"
    stage = "counting"

    def __init__(self, settings: Settings) -> None:
        self.consumes = {settings.kafka.topics.landed.name: frozenset({EventType.DATA_LANDED})}
        self.partitions: list[str] = []
        self.replays: list[str | None] = []

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        self.partitions.append(record["partition"])
        self.replays.append(current_replay())
        return []

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def _consume(settings: Settings, **run: Any) -> list[str]:
    return _consume_noting_replays(settings, **run)[0]


def _consume_noting_replays(settings: Settings, **run: Any) -> tuple[list[str], list[str | None]]:
    service = _Counter(settings)
    runner = Runner(service, settings)
    try:
        runner.run(**run)
    finally:
        runner.close()
    return service.partitions, service.replays


def test_a_replay_moves_a_stopped_group_back_and_refuses_a_running_one(
    ops_settings: Settings,
) -> None:
    for partition in ("2026-11-01", "2026-11-02"):
        publish_data_landed(ops_settings, "demo", partition)
    assert _consume(ops_settings, max_messages=2, timeout=60) == ["2026-11-01", "2026-11-02"]
    landed = ops_settings.kafka.topics.landed.name

    planned = replay(ops_settings, "counter", offset=0, dry_run=True)
    assert [(m.topic, m.partition, m.before, m.after) for m in planned] == [(landed, 0, 2, 0)]
    assert _consume(ops_settings, timeout=8) == []  # a dry run moves nothing

    moved = replay(ops_settings, "counter", offset=1)
    assert [(m.before, m.after) for m in moved] == [(2, 1)]
    assert _consume(ops_settings, max_messages=1, timeout=60) == ["2026-11-02"]

    # While an instance runs, the group cannot be moved.
    service = _Counter(ops_settings)
    runner = Runner(service, ops_settings)
    thread = threading.Thread(target=runner.run, kwargs={"timeout": 60})
    thread.start()
    try:
        publish_data_landed(ops_settings, "demo", "2026-11-03")
        deadline = time.monotonic() + 60
        while not service.partitions and time.monotonic() < deadline:
            time.sleep(0.2)
        assert service.partitions == ["2026-11-03"]
        with pytest.raises(LandfallError, match="stop every instance of counter"):
            replay(ops_settings, "counter", offset=0)
    finally:
        runner.stop()
        thread.join(30)
        runner.close()


def test_a_replayed_message_is_handled_as_a_replay_pass_up_to_where_the_log_ended(
    ops_settings: Settings,
) -> None:
    """What a replay moves back is redone on purpose; what came after is ordinary.

    The runner tells the two apart by the note the replay left on the committed
    offsets (landfall/offset_notes.py), which each commit carries to the replay's end,
    also when the replay is consumed by more than one process in turn.
    """
    for partition in ("2026-11-01", "2026-11-02", "2026-11-03"):
        publish_data_landed(ops_settings, "demo", partition)
    first = _consume_noting_replays(ops_settings, max_messages=3, timeout=60)
    assert first == (["2026-11-01", "2026-11-02", "2026-11-03"], [None, None, None])

    replay(ops_settings, "counter", offset=0)
    publish_data_landed(ops_settings, "demo", "2026-11-04")
    # One process takes the first replayed message and stops; the next goes on.
    partitions, replays = _consume_noting_replays(ops_settings, max_messages=1, timeout=60)
    more, more_replays = _consume_noting_replays(ops_settings, max_messages=3, timeout=60)
    assert partitions + more == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    replays += more_replays
    assert replays[0] is not None and replays[:3] == [replays[0]] * 3
    assert replays[3] is None  # published after the replay: not part of it

    # A second replay is another pass, with another id.
    replay(ops_settings, "counter", offset=3)
    again = _consume_noting_replays(ops_settings, max_messages=1, timeout=60)
    assert again[0] == ["2026-11-04"]
    assert again[1][0] not in (None, replays[0])
