"""Topic administration, commit semantics and the local Apache Kafka's lifecycle.

Topic and commit tests use the session's broker (``kafka_bootstrap``: Apache Kafka).
The lifecycle tests start brokers of their own, each with its log in a temporary folder.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

from landfall.broker import LocalKafka, running_broker
from landfall.errors import ConfigError, RetryableError
from landfall.ports import free_port
from landfall.topics import TopicSpec, ensure_topics, wait_for_broker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    """The session's broker."""
    return kafka_bootstrap


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _partitions(bootstrap: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions)


def _consumer(bootstrap: str, group: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    return consumer


def _next(consumer: Consumer, timeout: float = 30.0) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        return msg
    raise AssertionError("no message within the timeout")


def test_ensure_topics_creates_with_partitions_and_is_idempotent(bootstrap: str) -> None:
    one, three = _name("one"), _name("three")
    specs = [TopicSpec(one), TopicSpec(three, partitions=3, retention_ms=3_600_000)]

    assert sorted(ensure_topics(bootstrap, specs)) == sorted([one, three])
    assert _partitions(bootstrap, one) == 1
    assert _partitions(bootstrap, three) == 3

    assert ensure_topics(bootstrap, specs) == []
    assert _partitions(bootstrap, three) == 3


def test_concurrent_ensure_topics_both_succeed(bootstrap: str) -> None:
    specs = [TopicSpec(_name("race"), partitions=2) for _ in range(3)]
    start = threading.Barrier(2)

    def create() -> list[str]:
        start.wait()
        return ensure_topics(bootstrap, specs)

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(create) for _ in range(2)]
        results = [future.result(timeout=60) for future in futures]

    # Each topic is reported created by exactly one caller.
    assert sorted(results[0] + results[1]) == sorted(s.name for s in specs)
    for spec in specs:
        assert _partitions(bootstrap, spec.name) == 2


def test_ensure_topics_grows_a_topic_with_fewer_partitions(bootstrap: str) -> None:
    topic = _name("grow")
    ensure_topics(bootstrap, [TopicSpec(topic, partitions=2)])
    assert ensure_topics(bootstrap, [TopicSpec(topic, partitions=6)]) == [topic]
    assert _partitions(bootstrap, topic) == 6
    # Fewer than exist is left alone: partitions are never removed.
    assert ensure_topics(bootstrap, [TopicSpec(topic, partitions=3)]) == []
    assert _partitions(bootstrap, topic) == 6


def test_unmanaged_topics_that_are_missing_or_small_are_named(bootstrap: str) -> None:
    small, missing = _name("small"), _name("missing")
    ensure_topics(bootstrap, [TopicSpec(small, partitions=1)])
    specs = [TopicSpec(small, partitions=6), TopicSpec(missing, partitions=6)]
    with pytest.raises(ConfigError) as caught:
        ensure_topics(bootstrap, specs, manage=False)
    message = str(caught.value)
    assert f"{small} has 1 partitions, 6 configured" in message
    assert f"{missing} is missing" in message
    assert "kafka.manage_topics" in message
    # Nothing was changed.
    assert _partitions(bootstrap, small) == 1
    assert missing not in AdminClient({"bootstrap.servers": bootstrap}).list_topics().topics


def test_ensure_topics_unreachable_is_retryable() -> None:
    with pytest.raises(RetryableError):
        ensure_topics(f"127.0.0.1:{free_port()}", [TopicSpec("x")], timeout=2)


def test_committed_offset_is_where_the_group_resumes(bootstrap: str) -> None:
    topic, group = _name("commit"), _name("group")
    ensure_topics(bootstrap, [TopicSpec(topic)])
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(6):
        producer.produce(
            topic,
            key=b"ds/2026-01-01",
            value=f"v{i}".encode(),
            headers=[("traceparent", f"tp-{i}".encode())],
        )
    assert producer.flush(10) == 0

    first = _consumer(bootstrap, group, topic)
    try:
        m0, m1, _m2 = _next(first), _next(first), _next(first)
        assert (m0.offset(), m0.value()) == (0, b"v0")
        assert m0.headers() == [("traceparent", b"tp-0")]
        # Offsets 0 and 1 are done; 2 was fetched but not finished, so it must come back.
        first.store_offsets(message=m0)
        first.store_offsets(message=m1)
        committed = first.commit(asynchronous=False)
        assert committed is not None
        assert [tp.offset for tp in committed] == [2]
    finally:
        first.close()

    second = _consumer(bootstrap, group, topic)
    try:
        m2 = _next(second)
        assert (m2.offset(), m2.value()) == (2, b"v2")
        assert m2.headers() == [("traceparent", b"tp-2")]
        # The runner's other way: commit exactly the message just finished.
        committed = second.commit(message=m2, asynchronous=False)
        assert committed is not None
        assert [tp.offset for tp in committed] == [3]
    finally:
        second.close()

    third = _consumer(bootstrap, group, topic)
    try:
        assert _next(third).offset() == 3
    finally:
        third.close()


def test_restart_keeps_topics_events_and_committed_offsets(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    topic, group = _name("durable"), _name("group")
    with LocalKafka(data_dir, port=free_port()) as first:
        bootstrap = first.bootstrap
        assert running_broker(data_dir) is not None
        ensure_topics(bootstrap, [TopicSpec(topic, partitions=3)])
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i in range(4):
            producer.produce(topic, key=b"ds/2026-01-01", value=f"v{i}".encode())
        assert producer.flush(10) == 0
        consumer = _consumer(bootstrap, group, topic)
        done = _next(consumer)
        assert consumer.commit(message=done, asynchronous=False)
        consumer.close()
    assert running_broker(data_dir) is None

    # Same folder, same port: the log, the topic and the group's offset are all there.
    with LocalKafka(data_dir) as second:
        assert second.bootstrap == bootstrap
        assert _partitions(bootstrap, topic) == 3
        consumer = _consumer(bootstrap, group, topic)
        try:
            resumed = _next(consumer)
            assert resumed.offset() == done.offset() + 1
            assert resumed.value() == f"v{done.offset() + 1}".encode()
        finally:
            consumer.close()


def test_stop_leaves_no_process_and_is_idempotent(tmp_path: Path) -> None:
    local = LocalKafka(tmp_path / "kafka", port=free_port()).start()
    pid = local.pid
    assert pid is not None
    wait_for_broker(local.bootstrap, timeout=5)
    local.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    local.stop()
    assert local.pid is None


def test_start_on_a_taken_port_fails_clearly(tmp_path: Path, kafka_bootstrap: str) -> None:
    taken = int(kafka_bootstrap.rsplit(":", 1)[1])
    second = LocalKafka(tmp_path / "kafka", port=taken)
    with pytest.raises(ConfigError, match="in use"):
        second.start(timeout=30)
    assert second.pid is None
    wait_for_broker(kafka_bootstrap, timeout=5)


def test_a_second_broker_on_the_same_log_is_refused(tmp_path: Path) -> None:
    with LocalKafka(tmp_path / "kafka", port=free_port()) as first:
        with pytest.raises(ConfigError, match=f"already runs .* at {first.bootstrap}"):
            LocalKafka(tmp_path / "kafka").start()


def test_wait_for_broker_on_a_closed_port_is_retryable_and_quick() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RetryableError, match=bootstrap):
        wait_for_broker(bootstrap, timeout=1.0)
    assert time.monotonic() - started < 3.0
