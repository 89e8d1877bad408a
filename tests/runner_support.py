"""The runner against a real broker, for its tests: a probe service and ways to watch it.

The probe implements the ``Service`` protocol (the runner's extension point), so each
runner behaviour can be provoked on purpose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType, follow_up
from landfall.kafka_clients import kafka_client_config
from landfall.runner import Outgoing, Runner, RunStats
from tests.conftest import topic_messages

Behaviour = Callable[["ProbeService", dict[str, Any]], list[Outgoing]]


class ProbeService:
    """Consumes data-landed and does whatever the test's behaviour says."""

    name = "probe"
    stage = "probing"

    def __init__(self, settings: Settings, behaviour: Behaviour) -> None:
        self.settings = settings
        self.behaviour = behaviour
        self.calls: list[dict[str, Any]] = []
        self.consumes = {settings.kafka.topics.landed.name: frozenset({EventType.DATA_LANDED})}
        self.cancelled = threading.Event()
        self.runner: Runner | None = None

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        self.calls.append(record)
        return self.behaviour(self, record)

    def validated(self, record: dict[str, Any], topic: str | None = None) -> list[Outgoing]:
        event = follow_up(
            EventType.BATCH_VALIDATED, record, producer="probe/0", output_path="x",
            quarantine_path="q", manifest_path="m", rows_landed=1, rows_valid=1,
            rows_quarantined=0, duration_ms=1,
        )  # fmt: skip
        topic = topic or self.settings.kafka.topics.validated.name
        return [Outgoing(topic, EventType.BATCH_VALIDATED, event)]

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        pass


def run_once(settings: Settings, behaviour: Behaviour, **run: Any) -> tuple[ProbeService, Any]:
    service = ProbeService(settings, behaviour)
    runner = Runner(service, settings)
    service.runner = runner
    try:
        stats = runner.run(**({"max_messages": 1, "timeout": 60} | run))
    finally:
        runner.close()
    return service, stats


def nothing_left(settings: Settings) -> bool:
    """A new member of the same group finds no uncommitted message."""
    _, stats = run_once(settings, ProbeService.validated, timeout=10)
    return stats.consumed == 0


def topic_events(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every event on ``topic`` right now, each partition read from its start to its end."""
    codec = EventCodec(settings.schema_registry_url)
    return [codec.decode(m.value(), topic=topic)[1] for m in topic_messages(settings, topic)]


def committed_offsets(settings: Settings, service: str, topic: str) -> dict[int, int]:
    """The offsets ``service``'s group committed on ``topic``: partition -> next offset.

    Offset 0 is left out: the runner's start mark (landfall/poison.py) commits the
    offset of the message it starts, which at the first message moves nothing.
    """
    group = f"{settings.kafka.group_prefix}-{service}"
    # Asking for committed offsets does not join the group.
    consumer = Consumer({**kafka_client_config(settings), "group.id": group})
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                committed = consumer.committed(
                    [TopicPartition(topic, number) for number in partitions], timeout=10
                )
                return {tp.partition: tp.offset for tp in committed if tp.offset > 0}
            except KafkaException:
                # A broker just restarted may not coordinate the group yet.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Background:
    """A runner running in a thread, as a service process runs it."""

    def __init__(self, runner: Runner, **run: Any) -> None:
        self.runner = runner
        self.stats: RunStats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, kwargs=run, daemon=True)
        self._thread.start()

    def _run(self, **run: Any) -> None:
        try:
            self.stats = self.runner.run(**run)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> RunStats:
        """Stop the runner, close it and return what it did (raising what it raised)."""
        self.runner.stop(grace_s=0)  # a stage still in flight is abandoned at once
        self._thread.join(60)
        self.runner.close()
        assert not self._thread.is_alive(), "the runner did not stop"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats
