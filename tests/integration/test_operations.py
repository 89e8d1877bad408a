"""Backfill and replay against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
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
from landfall.operations import BackfillPlan, BackfillStopped, backfill, plan_backfill, replay
from landfall.run_ids import fencing_token, run_started_ms
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
        self.runs: list[tuple[str, str]] = []  # (batch id, run id) of each event handled

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        self.partitions.append(record["partition"])
        self.replays.append(current_replay())
        self.runs.append((record["batch_id"], record["run_id"]))
        return []

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def _consume(settings: Settings, **run: Any) -> list[str]:
    return _consume_noting_replays(settings, **run)[0]


def _consume_noting_replays(settings: Settings, **run: Any) -> tuple[list[str], list[str | None]]:
    service = _counted(settings, **run)
    return service.partitions, service.replays


def _counted(settings: Settings, **run: Any) -> _Counter:
    service = _Counter(settings)
    runner = Runner(service, settings)
    try:
        runner.run(**run)
    finally:
        runner.close()
    return service


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


def test_a_replay_makes_a_new_run_of_each_batch_handled_before(ops_settings: Settings) -> None:
    """Each batch the group had handled comes back as a new run of the same batch.

    The new run id is a UUIDv7 starting when the operator replayed (so the lake's
    fencing puts its outputs after the earlier run's); an event the group had not
    reached yet keeps its run; and a second pass makes yet another run.
    """
    published = [
        publish_data_landed(ops_settings, "demo", partition)
        for partition in ("2026-11-01", "2026-11-02", "2026-11-03")
    ]
    first = _counted(ops_settings, max_messages=2, timeout=60)
    assert first.runs == [(r["batch_id"], r["run_id"]) for r in published[:2]]

    replayed_at_ms = time.time_ns() // 1_000_000
    replay(ops_settings, "counter", offset=0)
    # Two processes in turn, as after a crash or a restart: one run per batch all along.
    again = _counted(ops_settings, max_messages=1, timeout=60)
    rest = _counted(ops_settings, max_messages=2, timeout=60)
    runs = again.runs + rest.runs
    assert [batch for batch, _run in runs] == [r["batch_id"] for r in published]
    for (_batch, run), before in zip(runs[:2], published[:2], strict=True):
        assert run != before["run_id"]
        assert uuid.UUID(run).version == 7
        # It starts when the operator replayed, after the run it redoes.
        assert replayed_at_ms <= run_started_ms(run) <= time.time_ns() // 1_000_000
        assert fencing_token(run) > fencing_token(before["run_id"])
    assert runs[2][1] == published[2]["run_id"]  # never handled before: its own run
    assert len({run for _b, run in runs}) == 3

    replay(ops_settings, "counter", offset=0)
    third = _counted(ops_settings, max_messages=3, timeout=60)
    assert [b for b, _r in third.runs] == [r["batch_id"] for r in published]
    assert {r for _b, r in third.runs}.isdisjoint(
        {r for _b, r in runs} | {r["run_id"] for r in published}
    )


def test_a_backfill_stopped_at_a_partition_names_what_it_published_before(
    ops_settings: Settings,
) -> None:
    # A partition the event contract refuses (there is no 30 February) stands in for
    # any partition the broker will not take: what came before it is published.
    plan = BackfillPlan("demo", publish=["2026-02-27", "2026-02-28", "2026-02-30", "2026-03-01"])
    seen: list[str] = []
    with pytest.raises(BackfillStopped) as stopped:
        backfill(ops_settings, plan, on_published=lambda record: seen.append(record["partition"]))
    assert seen == ["2026-02-27", "2026-02-28"]
    assert stopped.value.partition == "2026-02-30"
    assert [r["partition"] for r in stopped.value.published] == seen
    assert stopped.value.remaining == ["2026-03-01"]
    assert "published before it: 2; not attempted: 1 (2026-03-01..2026-03-01)" in str(stopped.value)
    watcher = EventWatcher(ops_settings, [ops_settings.kafka.topics.landed.name])
    try:
        for record in stopped.value.published:
            watcher.wait_for(lambda _t, _k, r, run=record["run_id"]: r["run_id"] == run, 30)
    finally:
        watcher.close()
    assert sorted(r["partition"] for _t, _k, r in watcher.seen) == seen


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    topics = settings.kafka.topics
    env = {
        **os.environ,
        "LANDFALL_HOME": str(settings.home),
        "LANDFALL_KAFKA_BOOTSTRAP": settings.kafka.bootstrap or "",
        "LANDFALL_KAFKA_GROUP_PREFIX": settings.kafka.group_prefix,
        "LANDFALL_KAFKA__TOPICS__LANDED__NAME": topics.landed.name,
    }
    return subprocess.run(
        [sys.executable, "-m", "landfall", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_backfill_shows_each_partition_and_a_summary_in_lines_or_json(
    ops_settings: Settings,
) -> None:
    lake = Lake(ops_settings.lake)
    for partition in ("2026-11-01", "2026-11-03"):
        write_sample_partition(lake, partition, rows=5)
    plain = _cli(ops_settings, "backfill", "demo", "2026-11-01", "2026-11-03")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0] == "not landed, skipped: 2026-11-02"
    assert lines[1].startswith("published data-landed demo/2026-11-01: run ")
    assert lines[1].endswith("(1/2)") and lines[2].endswith("(2/2)")
    assert lines[-1] == "summary: published 2, skipped 1, failed 0"

    as_json = _cli(ops_settings, "backfill", "demo", "2026-11-01", "2026-11-03", "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert events[0] == {"event": "skipped", "reason": "not landed", "partitions": ["2026-11-02"]}
    published = [e for e in events if e["event"] == "published"]
    assert [e["partition"] for e in published] == ["2026-11-01", "2026-11-03"]
    assert all(uuid.UUID(e["run_id"]).version == 7 for e in published)
    assert events[-1] == {
        "event": "summary", "published": 2, "skipped": 1, "failed": 0, "not_attempted": [],
    }  # fmt: skip
    dry = _cli(ops_settings, "backfill", "demo", "2026-11-01", "2026-11-03", "--dry-run", "--json")
    assert json.loads(dry.stdout.splitlines()[-1])["would_publish"] == 2

    # replay: one line per partition moved, and a summary (JSON Lines with --json).
    landed = ops_settings.kafka.topics.landed.name
    moved = _cli(
        ops_settings, "replay", "validator", "--topic", landed, "--from-beginning", "--dry-run",
        "--json",
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    (step, summary) = [json.loads(line) for line in moved.stdout.splitlines()]
    assert (step["event"], step["partition"], step["after"], step["end"]) == ("would_move", 0, 0, 4)
    assert summary == {
        "event": "summary", "service": "validator", "dry_run": True, "partitions": 1,
        "events_to_redo": 4,
    }  # fmt: skip
