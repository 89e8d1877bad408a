"""The runner when things go wrong around it: the broker, oversized and poison messages.

Also what it counts. The probe service and helpers: tests/runner_support.py.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import NewTopic

from landfall.broker import LocalKafka
from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.errors import RetryableError, StageFailedError
from landfall.events import EventWatcher, publish_data_landed
from landfall.kafka_clients import admin_client, kafka_client_config
from landfall.ports import free_port
from landfall.runner import Outgoing, Runner
from tests.conftest import isolated_settings, topic_messages
from tests.runner_support import (
    Background,
    ProbeService,
    committed_offsets,
    metric,
    nothing_left,
    run_once,
    topic_events,
    wait_until,
)

pytestmark = pytest.mark.broker


def test_the_runner_counts_batches_rows_retries_failures_and_dead_letters(
    probe_settings: Settings,
) -> None:
    from confluent_kafka import Producer
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"service": "probe", **labels}) or 0.0

    def snapshot() -> dict[str, float]:
        return {
            "succeeded": value(
                "landfall_batch_processing_duration_seconds_count",
                dataset="demo",
                outcome="succeeded",
            ),
            "failed": value(
                "landfall_batch_processing_duration_seconds_count", dataset="demo", outcome="failed"
            ),
            "rows": value("landfall_processed_rows_total", dataset="demo"),
            "retries": value("landfall_processing_errors_total", dataset="demo", kind="retry"),
            "batch_failed": value(
                "landfall_processing_errors_total", dataset="demo", kind="batch_failed"
            ),
            "dead_letters": value(
                "landfall_processing_errors_total", dataset="unknown", kind="dead_letter"
            ),
        }

    def retried_then_failed(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        if len(service.calls) == 1:
            raise RetryableError("registry timed out")
        raise StageFailedError("column x is missing")

    before = snapshot()
    publish_data_landed(probe_settings, "demo", "2026-11-01")
    run_once(probe_settings, ProbeService.validated)
    publish_data_landed(probe_settings, "demo", "2026-11-02")
    run_once(probe_settings, retried_then_failed)
    producer = Producer({"bootstrap.servers": probe_settings.kafka.bootstrap})
    producer.produce(probe_settings.kafka.topics.landed.name, value=b"\x00 not an event")
    assert producer.flush(30) == 0
    _, stats = run_once(probe_settings, ProbeService.validated)
    assert stats.dead_lettered == 1

    after = snapshot()
    assert {key: after[key] - before[key] for key in after} == {
        "succeeded": 1,
        "failed": 1,
        "rows": 1,  # the probe's batch-validated says it validated one landed row
        "retries": 1,
        "batch_failed": 1,
        "dead_letters": 1,
    }
    assert REGISTRY.get_sample_value("landfall_batches_in_progress", {"service": "probe"}) == 0
    last = REGISTRY.get_sample_value(
        "landfall_last_success_timestamp_seconds", {"service": "probe", "dataset": "demo"}
    )
    assert last is not None and last > time.time() - 300


def test_a_topic_the_producer_cannot_write_to_rewinds_the_batch_until_it_can(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(
        kafka_bootstrap,
        tmp_path,
        "unwritable",
        LANDFALL_RUNNER__PUBLISH_TIMEOUT_S="2",
        LANDFALL_RUNNER__RETRY_BACKOFF_S="0.2",
    )
    # Not created yet, and the broker creates no topic on a produce.
    late_topic = f"{settings.kafka.group_prefix}.late"
    landed_topic = settings.kafka.topics.landed.name
    committed_at_call: list[dict[int, int]] = []

    def to_late_topic(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        if len(service.calls) > 1:
            committed_at_call.append(committed_offsets(settings, "probe", landed_topic))
        return service.validated(record, topic=late_topic)

    landed = publish_data_landed(settings, "demo", "2026-11-01")
    unpublished = {
        "name": "landfall_processing_errors_total",
        "service": "probe",
        "dataset": "demo",
    }
    before = metric(**unpublished, kind="unpublished")
    service = ProbeService(settings, to_late_topic)
    background = Background(Runner(service, settings), timeout=90)
    try:
        wait_until(
            lambda: metric(**unpublished, kind="unpublished") > before, 30, "a failed publish"
        )
        assert committed_offsets(settings, "probe", landed_topic) == {}
        assert background.error is None  # a failed publish does not end the loop
        admin = admin_client(settings)  # kept: its futures die with it
        admin.create_topics([NewTopic(late_topic, 1)])[late_topic].result(30)
        wait_until(lambda: bool(topic_events(settings, late_topic)), 60, "the event")
        stats = background.finish()
    finally:
        if background.stats is None:
            background.finish()

    # Redone, never produced twice: one copy of the event, whatever the attempts.
    (event,) = topic_events(settings, late_topic)
    assert event["run_id"] == landed["run_id"]
    assert len(service.calls) >= 2 and stats.unpublished == len(service.calls) - 1
    assert stats.handled == 1
    # Each redo found the input uncommitted; once published, it was committed.
    assert committed_at_call and all(c == {} for c in committed_at_call)
    assert sum(committed_offsets(settings, "probe", landed_topic).values()) == 1


@pytest.mark.timeout(300)
def test_a_record_the_stopped_broker_never_acknowledged_is_redone_after_its_restart(
    tmp_path: Path,
) -> None:
    broker = LocalKafka(tmp_path / "kafka", port=free_port()).start()
    try:
        settings = isolated_settings(
            broker.bootstrap,
            tmp_path / "home",
            "unacked",
            LANDFALL_RUNNER__PUBLISH_TIMEOUT_S="3",
            LANDFALL_RUNNER__RETRY_BACKOFF_S="0.5",
        )
        landed_topic = settings.kafka.topics.landed.name
        committed_at_redo: list[dict[int, int]] = []

        def broker_gone_before_the_produce(
            service: ProbeService, record: dict[str, Any]
        ) -> list[Outgoing]:
            if len(service.calls) == 1:
                broker.stop()  # the stage is done; the broker goes before the produce
            else:
                committed_at_redo.append(committed_offsets(settings, "probe", landed_topic))
            return service.validated(record)

        landed = publish_data_landed(settings, "demo", "2026-11-01")
        labels = {"service": "probe", "dataset": "demo", "kind": "unpublished"}
        before = metric("landfall_processing_errors_total", **labels)
        service = ProbeService(settings, broker_gone_before_the_produce)
        background = Background(Runner(service, settings), timeout=240)
        try:
            wait_until(
                lambda: metric("landfall_processing_errors_total", **labels) > before,
                90,
                "publish failure",
            )
            assert background.error is None
            broker.start()  # same log directory, same port
            topics = settings.kafka.topics
            watcher = EventWatcher(settings, [topics.validated.name, topics.failed.name])
            try:
                _, kind, _ = watcher.wait_for(
                    lambda _t, _k, r: r["run_id"] == landed["run_id"], timeout=90
                )
            finally:
                watcher.close()
            assert kind is EventType.BATCH_VALIDATED
            stats = background.finish()
        finally:
            if background.stats is None and background.error is None:
                background.finish()

        (event,) = topic_events(settings, settings.kafka.topics.validated.name)
        assert event["run_id"] == landed["run_id"]
        assert len(service.calls) >= 2 and stats.unpublished == len(service.calls) - 1
        assert stats.handled == 1
        # Not committed before the broker acknowledged the event; committed after.
        assert committed_at_redo and all(c == {} for c in committed_at_redo)
        assert sum(committed_offsets(settings, "probe", landed_topic).values()) == 1
    finally:
        broker.stop()


def test_a_finished_stage_is_published_without_waiting_out_a_poll(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A long poll timeout: the runner must not wait for the poll to notice the work ended.
    isolated = isolated_settings(kafka_bootstrap, tmp_path, "prompt")
    runner = isolated.runner.model_copy(update={"poll_timeout_s": 3.0})
    settings = isolated.model_copy(update={"runner": runner})
    returned_at: list[float] = []

    def takes_a_second(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        time.sleep(1)
        outgoing = service.validated(record)
        returned_at.append(time.time())
        return outgoing

    publish_data_landed(settings, "demo", "2026-11-01")
    watcher = EventWatcher(settings, [settings.kafka.topics.validated.name])
    try:
        _, stats = run_once(settings, takes_a_second)
        assert stats.handled == 1
        watcher.wait_for(lambda *_: True, timeout=30)
    finally:
        watcher.close()
    consumer = Consumer(
        {**kafka_client_config(settings), "group.id": f"ts-{uuid.uuid4().hex[:8]}",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    try:
        consumer.subscribe([settings.kafka.topics.validated.name])
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
    finally:
        consumer.close()
    assert message is not None and not message.error()
    _, produced_ms = message.timestamp()  # set by the producer when it was produced
    hop = produced_ms / 1000 - returned_at[0]
    assert hop < 0.5, f"{hop:.2f}s from the handler's return to the produce"


class _BrokerCrashBeforeTheCommit(Runner):
    """A runner whose broker crashes between its first acknowledged publish and the commit."""

    def __init__(self, service: ProbeService, settings: Settings, broker: LocalKafka) -> None:
        super().__init__(service, settings)
        self.broker = broker
        self.crashed = False

    def _commit(self, message: Any) -> None:
        if not self.crashed:
            self.crashed = True
            self.broker.kill()
            # Away longer than the session: the group forgets this member meanwhile.
            time.sleep(self.settings.kafka.session_timeout_ms / 1000 + 2)
            self.broker.start()
        super()._commit(message)


@pytest.mark.timeout(300)
def test_a_commit_lost_with_the_broker_is_made_when_the_partition_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = LocalKafka(tmp_path / "kafka", port=free_port()).start()
    try:
        settings = isolated_settings(broker.bootstrap, tmp_path / "home", "lostcommit")
        landed_topic = settings.kafka.topics.landed.name
        landed = publish_data_landed(settings, "demo", "2026-11-01")
        service = ProbeService(settings, ProbeService.validated)
        background = Background(_BrokerCrashBeforeTheCommit(service, settings, broker))
        try:
            # Committed at last, by the same instance, once it has its partition back.
            wait_until(
                lambda: sum(committed_offsets(settings, "probe", landed_topic).values()) == 1,
                120,
                "the commit",
            )
            time.sleep(2)  # a redelivery, if there were one, would be handled by now
            stats = background.finish()
        finally:
            if background.stats is None and background.error is None:
                background.finish()
        assert "offset commit for" in caplog.text  # the first commit did fail
        # Published once and not redone: the batch's outputs were acknowledged already.
        assert [c["run_id"] for c in service.calls] == [landed["run_id"]]
        assert (stats.consumed, stats.handled) == (1, 1)
        (event,) = topic_events(settings, settings.kafka.topics.validated.name)
        assert event["run_id"] == landed["run_id"]
    finally:
        broker.stop()


def test_an_oversized_message_is_dead_lettered_cut_once_and_the_next_event_handled(
    probe_settings: Settings, watch
) -> None:
    from confluent_kafka import Producer

    from landfall.dead_letters import DEAD_LETTER_ORIGINAL_BYTES, DEAD_LETTER_REASON

    topics = probe_settings.kafka.topics
    # 2 MB: the broker takes it (up to 5 MB), most clusters' dead-letter topics would not.
    huge = b'{"dataset": "demo", "partition": "' + b"9" * 2_000_000 + b'"}'
    producer = Producer({**kafka_client_config(probe_settings), "message.max.bytes": 3_000_000})
    producer.produce(topics.landed.name, key=b"demo/2026-11-01", value=huge)
    assert producer.flush(30) == 0
    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")

    _, stats = run_once(probe_settings, ProbeService.validated, max_messages=2)
    assert (stats.consumed, stats.dead_lettered, stats.handled) == (2, 1, 1)
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_VALIDATED and event["run_id"] == landed["run_id"]

    consumer = Consumer(
        {**kafka_client_config(probe_settings), "group.id": f"dlq-{uuid.uuid4().hex[:8]}",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([topics.dead_letter.name])
    try:
        deadline, letters = time.monotonic() + 30, []
        while time.monotonic() < deadline and not letters:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                letters.append(message)
    finally:
        consumer.close()
    (letter,) = letters
    headers = dict(letter.headers() or [])
    assert headers[DEAD_LETTER_ORIGINAL_BYTES] == str(len(huge)).encode()
    assert b"runner.max_message_bytes" in headers[DEAD_LETTER_REASON]
    assert letter.value() == huge[: probe_settings.runner.dead_letter_max_bytes]
    assert nothing_left(probe_settings)


def test_credentials_in_a_stage_error_never_reach_the_failed_event(
    probe_settings: Settings, watch
) -> None:
    planted = f"pw{uuid.uuid4().hex}"

    def unreachable_registry(_service: ProbeService, _record: dict[str, Any]) -> list[Outgoing]:
        raise StageFailedError(
            f"registry http://alice:{planted}@mlflow:5000 is unreachable",
            details={"tracking_uri": f"http://alice:{planted}@mlflow:5000"},
        )

    publish_data_landed(probe_settings, "demo", "2026-11-01")
    _, stats = run_once(probe_settings, unreachable_registry)
    assert stats.failed == 1
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_FAILED
    assert "http://alice:**********@mlflow:5000" in event["reason"]
    assert planted not in repr(event)


class _ProcessDied(BaseException):
    """Stands for the death of the process: nothing of the runner's catches it."""


def test_a_message_that_keeps_killing_the_process_is_dead_lettered_on_the_next_start(
    probe_settings: Settings, watch
) -> None:
    from landfall.dead_letters import DEAD_LETTER_REASON

    settings = probe_settings.model_copy(
        update={"runner": probe_settings.runner.model_copy(update={"max_crashes": 2})}
    )
    deadly = publish_data_landed(settings, "demo", "2026-11-01")

    def dies(_service: ProbeService, _record: dict[str, Any]) -> list[Outgoing]:
        raise _ProcessDied()

    with pytest.raises(_ProcessDied):  # a process starts it and dies, committing nothing
        run_once(settings, dies)
    # A clean stop mid-batch is not counted as a crash ...

    def interrupted(service: ProbeService, _record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=0)  # as SIGTERM past its grace would, mid-stage
        assert service.cancelled.wait(10), "the runner did not cancel the stage"
        raise RuntimeError("Spark job cancelled")

    _, stats = run_once(settings, interrupted)
    assert stats.abandoned == 1
    with pytest.raises(_ProcessDied):  # ... so this is the second death, not the third
        run_once(settings, dies)

    # The third start does not run the handler: the message is set aside, unread.
    service, stats = run_once(settings, ProbeService.validated)
    assert (stats.consumed, stats.dead_lettered, service.calls) == (1, 1, [])
    letters = topic_messages(settings, settings.kafka.topics.dead_letter.name)
    (letter,) = letters
    reason = dict(letter.headers() or [])[DEAD_LETTER_REASON].decode()
    assert reason.startswith("poison pill: 2 processes started this message")
    assert EventCodec().decode(letter.value(), topic="t")[1]["run_id"] == deadly["run_id"]

    # The next event of the partition is handled as usual.
    healthy = publish_data_landed(settings, "demo", "2026-11-01")
    _, stats = run_once(settings, ProbeService.validated)
    assert stats.handled == 1
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_VALIDATED and event["run_id"] == healthy["run_id"]
