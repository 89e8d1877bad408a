"""A rebalance in the middle of a stage, against a real broker and consumer group.

The runner keeps its group membership while a stage runs (the assignment paused, the
consumer polled). When a rebalance takes the partition of the message in flight away,
the stage is cancelled and its result dropped: nothing is published or committed for
it, and the partition's new owner redoes the batch. A rebalance that leaves that
partition where it is does not disturb the stage.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupState, Producer

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType, follow_up, new_event, partition_key
from landfall.ingress import batch_id_for
from landfall.kafka_clients import admin_client, kafka_client_config
from landfall.runner import Outgoing, Runner
from tests.conftest import isolated_settings
from tests.runner_support import Background, committed_offsets, topic_events

pytestmark = pytest.mark.broker

# How long a blocking stage runs unless it is cancelled.
STAGE_S = 20.0


class BlockingProbe:
    """A stage whose first batch blocks until cancelled (or ``STAGE_S``); later ones are quick.

    Cancelled, it takes a moment to wind down as a Spark job does, then raises.
    """

    name = "probe"
    stage = "probing"

    def __init__(self, settings: Settings, *, block_first: bool) -> None:
        self.settings = settings
        self.block_first = block_first
        self.consumes = {settings.kafka.topics.landed.name: frozenset({EventType.DATA_LANDED})}
        self.calls: list[dict[str, Any]] = []
        self.spans: list[tuple[float, float]] = []  # (start, end) of each call
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.release = threading.Event()

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        started = time.monotonic()
        self.calls.append(record)
        try:
            if self.block_first and len(self.calls) == 1:
                self.started.set()
                deadline = started + STAGE_S
                while time.monotonic() < deadline and not self.release.is_set():
                    if self.cancelled.wait(0.05):
                        time.sleep(2)  # winding down; the rebalance completes meanwhile
                        raise RuntimeError("Spark job cancelled")
            validated = follow_up(
                EventType.BATCH_VALIDATED, record, producer="probe/0", output_path="x",
                quarantine_path="q", manifest_path="m", rows_landed=1, rows_valid=1,
                rows_quarantined=0, duration_ms=1,
            )  # fmt: skip
            topic = self.settings.kafka.topics.validated.name
            return [Outgoing(topic, EventType.BATCH_VALIDATED, validated)]
        finally:
            self.spans.append((started, time.monotonic()))

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        pass


def _as_member(settings: Settings, client_id: str) -> Settings:
    """The same settings (same group) with a client id of its own.

    The group's members are ordered by member id, which starts with the client id,
    and the range assignor hands partition 0 to the first: so the test knows which
    member gets which partition.
    """
    config = {**settings.kafka.client_config, "client.id": client_id}
    kafka = settings.kafka.model_copy(update={"client_config": config})
    return settings.model_copy(update={"kafka": kafka})


def _land(settings: Settings, date: str, kafka_partition: int) -> dict[str, Any]:
    """Publish a data-landed event onto one partition of the landed topic."""
    record = new_event(
        EventType.DATA_LANDED,
        dataset="demo",
        partition=date,
        batch_id=batch_id_for("demo", date),
        run_id=str(uuid.uuid4()),
        producer="test/0",
    )
    topic = settings.kafka.topics.landed.name
    producer = Producer(kafka_client_config(settings))
    producer.produce(
        topic,
        key=partition_key(record),
        value=EventCodec(None).encode(EventType.DATA_LANDED, record, topic=topic),
        partition=kafka_partition,
    )
    assert producer.flush(30) == 0
    return record


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _outputs(settings: Settings) -> dict[str, int]:
    """How many batch-validated events each run has on the topic."""
    counts: dict[str, int] = {}
    for event in topic_events(settings, settings.kafka.topics.validated.name):
        counts[event["run_id"]] = counts.get(event["run_id"], 0) + 1
    return counts


def test_a_partition_revoked_mid_stage_is_redone_by_its_new_owner_only(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(
        kafka_bootstrap, tmp_path, "rebalance", LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS="2"
    )
    # The default (eager) protocol: every rebalance revokes every partition, and the
    # range assignor then gives partition 0 to B (first by client id) and 1 to A.
    first = _land(settings, "2026-11-01", kafka_partition=0)
    probe_a = BlockingProbe(settings, block_first=True)
    a = Background(Runner(probe_a, _as_member(settings, "rebalance-z-a")), timeout=100)
    probe_b = BlockingProbe(settings, block_first=False)
    b: Background | None = None
    try:
        assert probe_a.started.wait(60), "A never started the first batch"
        # Lands while A works: A's paused assignment holds it back.
        second = _land(settings, "2026-11-02", kafka_partition=1)
        b = Background(Runner(probe_b, _as_member(settings, "rebalance-a-b")), timeout=100)

        def both_done() -> bool:
            return _outputs(settings).keys() >= {first["run_id"], second["run_id"]}

        _wait_for(both_done, 90, "both batches to be published")
        stats_b = b.finish()
        # B leaves: partition 0 comes back to A, which must not find it still paused
        # from when it was taken away mid-stage.
        third = _land(settings, "2026-11-03", kafka_partition=0)
        _wait_for(lambda: third["run_id"] in _outputs(settings), 60, "A to take partition 0 back")
        stats_a = a.finish()
    finally:
        probe_a.release.set()
        for running in (a, b):
            if running is not None and running.stats is None and running.error is None:
                running.finish()

    assert probe_a.cancelled.is_set(), "A's stage was not cancelled when its partition moved"
    # A dropped the first batch: nothing published or counted for it ...
    assert stats_a.revoked == 1
    assert [o.record["run_id"] for o in stats_a.produced] == [second["run_id"], third["run_id"]]
    # ... and B, the partition's new owner, redid it.
    assert [c["run_id"] for c in probe_b.calls] == [first["run_id"]]
    assert (stats_b.handled, stats_b.revoked) == (1, 0)
    assert _outputs(settings) == {first["run_id"]: 1, second["run_id"]: 1, third["run_id"]: 1}
    # A's new partition stayed paused until the cancelled stage had ended.
    runs = [first["run_id"], second["run_id"], third["run_id"]]
    assert [c["run_id"] for c in probe_a.calls] == runs
    (_, first_end), (second_start, _), _ = probe_a.spans
    assert second_start >= first_end
    assert committed_offsets(settings, "probe", settings.kafka.topics.landed.name) == {0: 2, 1: 1}


def test_a_rebalance_that_leaves_the_partition_in_place_does_not_cancel_the_stage(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(
        kafka_bootstrap, tmp_path, "sticky", LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS="1"
    )
    # Cooperative rebalancing moves only the partitions that change owner; the only
    # partition stays with A, which holds it.
    config = {"partition.assignment.strategy": "cooperative-sticky"}
    kafka = settings.kafka.model_copy(update={"client_config": config})
    settings = settings.model_copy(update={"kafka": kafka})
    landed = _land(settings, "2026-11-01", kafka_partition=0)
    probe_a = BlockingProbe(settings, block_first=True)
    a = Background(Runner(probe_a, settings), timeout=100)
    probe_b = BlockingProbe(settings, block_first=False)
    b: Background | None = None
    group = f"{settings.kafka.group_prefix}-probe"
    admin = admin_client(settings)

    def stable_with_two_members() -> bool:
        description = admin.describe_consumer_groups([group])[group].result(10)
        return description.state is ConsumerGroupState.STABLE and len(description.members) == 2

    try:
        assert probe_a.started.wait(60), "A never started the batch"
        b = Background(Runner(probe_b, settings), timeout=100)
        _wait_for(stable_with_two_members, 60, "B to join and the group to settle")
        probe_a.release.set()  # the stage ends on its own, after the rebalance
        _wait_for(lambda: landed["run_id"] in _outputs(settings), 60, "the batch")
        stats_b = b.finish()
        stats_a = a.finish()
    finally:
        probe_a.release.set()
        for running in (a, b):
            if running is not None and running.stats is None and running.error is None:
                running.finish()

    assert not probe_a.cancelled.is_set()
    assert (stats_a.handled, stats_a.revoked) == (1, 0)
    assert probe_b.calls == [] and stats_b.consumed == 0
    assert _outputs(settings) == {landed["run_id"]: 1}
    assert committed_offsets(settings, "probe", settings.kafka.topics.landed.name) == {0: 1}
