"""Topic administration, commit semantics and the embedded broker's lifecycle, on a real broker.

Uses ``LANDFALL_KAFKA_BOOTSTRAP`` when set, otherwise starts the embedded broker once for the
module. The lifecycle tests always start their own embedded brokers.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

from landfall import broker
from landfall.broker import EmbeddedBroker, TopicSpec, ensure_topics, wait_for_broker
from landfall.errors import ConfigError, RetryableError

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """The broker under test: an external one if configured, else an embedded one."""
    external = os.environ.get("LANDFALL_KAFKA_BOOTSTRAP")
    if external:
        wait_for_broker(external, timeout=30)
        yield external
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


def _embedded_or_skip() -> None:
    try:
        broker.broker_binary()
    except ConfigError as exc:
        pytest.skip(f"no embedded broker binary: {exc}")


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
            # Tansu's group join takes about half the session timeout.
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


def test_ensure_topics_unreachable_is_retryable() -> None:
    with pytest.raises(RetryableError):
        ensure_topics(f"127.0.0.1:{broker.free_port()}", [TopicSpec("x")], timeout=2)


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


def test_stop_leaves_no_process_and_is_idempotent() -> None:
    _embedded_or_skip()
    embedded = EmbeddedBroker().start()
    pid = embedded.pid
    assert pid is not None
    wait_for_broker(embedded.bootstrap, timeout=5)
    embedded.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    embedded.stop()
    assert embedded.pid is None


def test_start_on_a_taken_port_fails_clearly() -> None:
    _embedded_or_skip()
    with EmbeddedBroker() as first:
        second = EmbeddedBroker(port=first.port)
        with pytest.raises(ConfigError, match="in use"):
            second.start(timeout=10)
        assert second.pid is None
        wait_for_broker(first.bootstrap, timeout=5)


def test_start_reports_a_broker_that_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    _embedded_or_skip()
    with EmbeddedBroker() as first:
        # Skip the up-front port check: the child itself must fail, and the first
        # broker answering on the port must not be mistaken for it.
        monkeypatch.setattr(broker, "port_free", lambda port, host="": True)
        second = EmbeddedBroker(port=first.port)
        with pytest.raises(ConfigError, match="Address in use"):
            second.start(timeout=10)
        assert second.pid is None


def test_wait_for_broker_on_a_closed_port_is_retryable_and_quick() -> None:
    bootstrap = f"127.0.0.1:{broker.free_port()}"
    started = time.monotonic()
    with pytest.raises(RetryableError, match=bootstrap):
        wait_for_broker(bootstrap, timeout=1.0)
    assert time.monotonic() - started < 3.0
