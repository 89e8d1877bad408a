"""The shared runner loop against a real broker: commits, retries, failures, shutdown.

The service here is a probe implementing the ``Service`` protocol (the runner's
extension point), so each runner behaviour can be provoked on purpose.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from landfall.broker import LocalKafka
from landfall.config import Settings
from landfall.contracts import EventCodec, EventType, follow_up
from landfall.errors import RetryableError, StageFailedError
from landfall.events import EventWatcher, publish_data_landed
from landfall.kafka_clients import admin_client, kafka_client_config
from landfall.ports import free_port
from landfall.runner import Outgoing, Runner, RunStats
from tests.conftest import isolated_settings, topic_messages

pytestmark = pytest.mark.broker

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


def _run_once(settings: Settings, behaviour: Behaviour, **run: Any) -> tuple[ProbeService, Any]:
    service = ProbeService(settings, behaviour)
    runner = Runner(service, settings)
    service.runner = runner
    try:
        stats = runner.run(**({"max_messages": 1, "timeout": 60} | run))
    finally:
        runner.close()
    return service, stats


def _nothing_left(settings: Settings) -> bool:
    """A new member of the same group finds no uncommitted message."""
    _, stats = _run_once(settings, ProbeService.validated, timeout=10)
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


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class _Background:
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


def test_a_handled_event_is_published_then_committed(probe_settings: Settings, watch) -> None:
    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    _, stats = _run_once(probe_settings, ProbeService.validated)
    assert (stats.consumed, stats.handled) == (1, 1)
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_VALIDATED and event["run_id"] == landed["run_id"]
    assert _nothing_left(probe_settings)


def test_transient_errors_are_retried_with_backoff(probe_settings: Settings) -> None:
    def flaky(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        if len(service.calls) < 3:
            raise RetryableError("registry timed out")
        return service.validated(record)

    publish_data_landed(probe_settings, "demo", "2026-11-01")
    service, stats = _run_once(probe_settings, flaky)
    assert len(service.calls) == 3 and stats.handled == 1


def test_exhausted_retries_and_stage_errors_become_batch_failed(
    probe_settings: Settings, watch
) -> None:
    def always_down(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        raise RetryableError("registry unreachable")

    def bad_data(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        raise StageFailedError("column x is missing")

    def bug(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        raise ZeroDivisionError("division by zero")

    runs = {}
    for behaviour in (always_down, bad_data, bug):
        landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
        service, stats = _run_once(probe_settings, behaviour)
        assert stats.failed == 1
        runs[behaviour.__name__] = landed["run_id"], len(service.calls)

    def failure(run_id: str) -> dict[str, Any]:
        return watch.wait_for(lambda _t, _k, rec: rec["run_id"] == run_id, timeout=30)[2]

    down = failure(runs["always_down"][0])
    assert runs["always_down"][1] == probe_settings.runner.max_attempts
    assert down["retryable"] is True and "gave up after 3 attempts" in down["reason"]
    assert down["stage"] == "probing"
    assert down["failed_event_type"] == EventType.DATA_LANDED.value
    data = failure(runs["bad_data"][0])
    assert (data["retryable"], data["reason"]) == (False, "column x is missing")
    assert failure(runs["bug"][0])["reason"] == "ZeroDivisionError: division by zero"
    assert _nothing_left(probe_settings)


def _crash_worker(rows):  # type: ignore[no-untyped-def]
    import os

    os._exit(3)  # a Python worker killed mid-job, as the OOM killer would
    yield from rows


def test_a_crashed_spark_worker_is_retried_and_corrupt_data_fails_the_batch(
    spark, probe_settings: Settings, watch, tmp_path: Path
) -> None:
    def crashes_once(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        job = spark.sparkContext.parallelize([1, 2], 2)
        if len(service.calls) == 1:
            job.mapPartitions(_crash_worker).collect()
        assert job.sum() == 3
        return service.validated(record)

    publish_data_landed(probe_settings, "demo", "2026-11-01")
    service, stats = _run_once(probe_settings, crashes_once)
    assert len(service.calls) == 2 and stats.handled == 1

    table = tmp_path / "table"
    spark.range(5).write.parquet(str(table))
    corrupt = next(table.glob("part-*.parquet"))
    corrupt.write_bytes(b"not parquet" * 20)

    def reads_corrupt_file(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        spark.read.schema("id long").parquet(str(table)).collect()
        return service.validated(record)

    landed = publish_data_landed(probe_settings, "demo", "2026-11-02")
    service, stats = _run_once(probe_settings, reads_corrupt_file)
    assert len(service.calls) == 1 and stats.failed == 1  # no retry: it would fail again
    _, _, failed = watch.wait_for(lambda _t, _k, r: r["run_id"] == landed["run_id"], timeout=30)
    assert failed["retryable"] is False
    assert failed["reason"].startswith("a Spark job failed: ") and corrupt.name in failed["reason"]


def test_a_stop_during_work_abandons_the_batch_uncommitted(probe_settings: Settings) -> None:
    def interrupted(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=0)  # as SIGTERM past its grace would, mid-stage
        assert service.cancelled.wait(10), "the runner did not cancel the stage"
        raise RuntimeError("Spark job cancelled")

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    _, stats = _run_once(probe_settings, interrupted)
    assert (stats.abandoned, stats.failed, stats.produced) == (1, 0, [])
    # The message was not committed: the next instance of the service gets it again.
    service, stats = _run_once(probe_settings, ProbeService.validated)
    assert stats.handled == 1 and service.calls[0]["run_id"] == landed["run_id"]


def test_a_stop_lets_the_stage_finish_and_commit_within_its_grace(
    probe_settings: Settings, watch
) -> None:
    def stopped_midway(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=30)  # as SIGTERM would, while the stage is running
        time.sleep(1.5)  # the rest of the stage, well inside the grace
        return service.validated(record)

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    later = publish_data_landed(probe_settings, "demo", "2026-11-01")  # same partition, after
    service, stats = _run_once(probe_settings, stopped_midway, max_messages=None)
    # The batch in flight is published and committed; nothing after it is started.
    assert (stats.handled, stats.abandoned, len(service.calls)) == (1, 0, 1)
    assert not service.cancelled.is_set()
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_VALIDATED and event["run_id"] == landed["run_id"]
    service, stats = _run_once(probe_settings, ProbeService.validated)
    assert [c["run_id"] for c in service.calls] == [later["run_id"]]


def test_a_second_stop_abandons_the_stage_at_once(probe_settings: Settings) -> None:
    def stopped_twice(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=60)
        assert not service.cancelled.wait(1), "cancelled within the grace"
        service.runner.stop()  # a second SIGTERM or Ctrl-C
        assert service.cancelled.wait(10), "the runner did not cancel the stage"
        raise RuntimeError("Spark job cancelled")

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    started = time.monotonic()
    _, stats = _run_once(probe_settings, stopped_twice)
    assert time.monotonic() - started < 30
    assert (stats.abandoned, stats.failed, stats.produced) == (1, 0, [])
    service, stats = _run_once(probe_settings, ProbeService.validated)
    assert stats.handled == 1 and service.calls[0]["run_id"] == landed["run_id"]


def test_a_stage_that_ignores_its_cancellation_is_not_waited_for(
    probe_settings: Settings,
) -> None:
    from landfall.shutdown import ABANDON_WAIT_S

    release = threading.Event()

    def deaf(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=0.5)
        release.wait(120)  # pure Python work: nothing Spark could cancel
        return service.validated(record)

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    service = ProbeService(probe_settings, deaf)
    runner = Runner(service, probe_settings)
    service.runner = runner
    try:
        started = time.monotonic()
        stats = runner.run(max_messages=1, timeout=60)
        took = time.monotonic() - started
        assert service.cancelled.is_set()
        assert runner.stage_still_running
    finally:
        runner.close()
        release.set()  # the stage ends after its runner gave up on it; its result is dropped
    print(f"\nrun returned {took:.1f}s after the message came, the stage still running")
    assert took < 0.5 + ABANDON_WAIT_S + 10
    assert (stats.abandoned, stats.produced) == (1, [])
    time.sleep(1)
    topics = probe_settings.kafka.topics
    assert topic_events(probe_settings, topics.validated.name) == []
    service, stats = _run_once(probe_settings, ProbeService.validated)
    assert stats.handled == 1 and service.calls[0]["run_id"] == landed["run_id"]


def test_a_stage_longer_than_the_poll_interval_keeps_its_assignment(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(
        kafka_bootstrap, tmp_path, "long", LANDFALL_KAFKA_MAX_POLL_INTERVAL_MS="7000"
    )

    def slow(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        time.sleep(12)  # well past max.poll.interval.ms
        return service.validated(record)

    publish_data_landed(settings, "demo", "2026-11-01")
    publish_data_landed(settings, "demo", "2026-11-02")
    service, stats = _run_once(settings, slow, max_messages=2, timeout=90)
    # Each message handled once: no rebalance handed the first one out again. (The
    # two events have different keys, so they may sit on different partitions and
    # come in either order.)
    assert sorted(c["partition"] for c in service.calls) == ["2026-11-01", "2026-11-02"]
    assert stats.handled == 2
    assert _nothing_left(settings)


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
                "batch_processing_duration_seconds_count", dataset="demo", outcome="succeeded"
            ),
            "failed": value(
                "batch_processing_duration_seconds_count", dataset="demo", outcome="failed"
            ),
            "rows": value("records_processed_total", dataset="demo"),
            "retries": value("processing_errors_total", dataset="demo", kind="retry"),
            "batch_failed": value("processing_errors_total", dataset="demo", kind="batch_failed"),
            "dead_letters": value("processing_errors_total", dataset="unknown", kind="dead_letter"),
        }

    def retried_then_failed(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        if len(service.calls) == 1:
            raise RetryableError("registry timed out")
        raise StageFailedError("column x is missing")

    before = snapshot()
    publish_data_landed(probe_settings, "demo", "2026-11-01")
    _run_once(probe_settings, ProbeService.validated)
    publish_data_landed(probe_settings, "demo", "2026-11-02")
    _run_once(probe_settings, retried_then_failed)
    producer = Producer({"bootstrap.servers": probe_settings.kafka.bootstrap})
    producer.produce(probe_settings.kafka.topics.landed.name, value=b"\x00 not an event")
    assert producer.flush(30) == 0
    _, stats = _run_once(probe_settings, ProbeService.validated)
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
    assert REGISTRY.get_sample_value("batches_in_progress", {"service": "probe"}) == 0
    last = REGISTRY.get_sample_value(
        "last_success_timestamp_seconds", {"service": "probe", "dataset": "demo"}
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
    unpublished = {"name": "processing_errors_total", "service": "probe", "dataset": "demo"}
    before = _metric(**unpublished, kind="unpublished")
    service = ProbeService(settings, to_late_topic)
    background = _Background(Runner(service, settings), timeout=90)
    try:
        _wait_until(
            lambda: _metric(**unpublished, kind="unpublished") > before, 30, "a failed publish"
        )
        assert committed_offsets(settings, "probe", landed_topic) == {}
        assert background.error is None  # a failed publish does not end the loop
        admin = admin_client(settings)  # kept: its futures die with it
        admin.create_topics([NewTopic(late_topic, 1)])[late_topic].result(30)
        _wait_until(lambda: bool(topic_events(settings, late_topic)), 60, "the event")
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
        before = _metric("processing_errors_total", **labels)
        service = ProbeService(settings, broker_gone_before_the_produce)
        background = _Background(Runner(service, settings), timeout=240)
        try:
            _wait_until(
                lambda: _metric("processing_errors_total", **labels) > before, 90, "publish failure"
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
        _, stats = _run_once(settings, takes_a_second)
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
        background = _Background(_BrokerCrashBeforeTheCommit(service, settings, broker))
        try:
            # Committed at last, by the same instance, once it has its partition back.
            _wait_until(
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

    _, stats = _run_once(probe_settings, ProbeService.validated, max_messages=2)
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
    assert _nothing_left(probe_settings)


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
    _, stats = _run_once(probe_settings, unreachable_registry)
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
        _run_once(settings, dies)
    # A clean stop mid-batch is not counted as a crash ...

    def interrupted(service: ProbeService, _record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=0)  # as SIGTERM past its grace would, mid-stage
        assert service.cancelled.wait(10), "the runner did not cancel the stage"
        raise RuntimeError("Spark job cancelled")

    _, stats = _run_once(settings, interrupted)
    assert stats.abandoned == 1
    with pytest.raises(_ProcessDied):  # ... so this is the second death, not the third
        _run_once(settings, dies)

    # The third start does not run the handler: the message is set aside, unread.
    service, stats = _run_once(settings, ProbeService.validated)
    assert (stats.consumed, stats.dead_lettered, service.calls) == (1, 1, [])
    letters = topic_messages(settings, settings.kafka.topics.dead_letter.name)
    (letter,) = letters
    reason = dict(letter.headers() or [])[DEAD_LETTER_REASON].decode()
    assert reason.startswith("poison pill: 2 processes started this message")
    assert EventCodec().decode(letter.value(), topic="t")[1]["run_id"] == deadly["run_id"]

    # The next event of the partition is handled as usual.
    healthy = publish_data_landed(settings, "demo", "2026-11-01")
    _, stats = _run_once(settings, ProbeService.validated)
    assert stats.handled == 1
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_VALIDATED and event["run_id"] == healthy["run_id"]
