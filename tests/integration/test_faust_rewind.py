"""After a rebalance, the reporter's faust app reads again what it had not committed.

faust drops the records it fetched while a rebalance stopped its flow and seeks back to
the committed offsets; a partition the group never committed must go back to its
start (landfall/faust_consumer.py). Without that, a broker restart lost the first
batch-predicted event and its run was never reported. Here a real faust app on the test
broker reads two events without acknowledging them, faust's seek-back runs as after a
rebalance, and both must come again.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from landfall.faust_stop import InFlightApp

pytestmark = [pytest.mark.broker]


def _topic_with_two_events(bootstrap: str) -> str:
    name = f"rewind-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in (b"first", b"second"):
        producer.produce(name, value, key=b"k")
    assert producer.flush(30) == 0
    return name


async def _offsets_read_around_a_seek_back(bootstrap: str, topic: str, home: Path) -> list[int]:
    app = InFlightApp(
        f"rewind-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        topic_partitions=1,
        web_enabled=False,
        datadir=str(home),
    )
    offsets: list[int] = []

    async def follow(stream):  # type: ignore[no-untyped-def]
        # Never acknowledged: the group commits nothing for the partition.
        async for event in stream.noack().events():
            offsets.append(event.message.offset)

    app.agent(app.topic(topic, partitions=1, value_type=bytes), name="rewind.follow")(follow)

    async def until(count: int) -> None:
        for _ in range(600):
            if len(offsets) >= count:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"read {offsets}, expected {count} events")

    await app.start()
    try:
        await until(2)
        await app.consumer.perform_seek()  # what faust does once a rebalance is over
        await until(4)
        return offsets
    finally:
        await app.stop()


def test_a_never_committed_partition_is_read_again_from_its_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = _topic_with_two_events(kafka_bootstrap)
    offsets = asyncio.run(_offsets_read_around_a_seek_back(kafka_bootstrap, topic, tmp_path))
    assert offsets[:4] == [0, 1, 0, 1]
