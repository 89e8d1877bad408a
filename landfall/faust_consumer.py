"""faust's Kafka consumer, made to read again what it dropped in a rebalance.

During a rebalance faust throws away records it had already fetched (the flow is
stopped while its tables recover) and relies on seeking every partition back to its
committed offset afterwards. aiokafka's ``seek_to_committed`` seeks only partitions whose
committed offset is above 0, so a partition the group never committed -- a topic the
reporter had not read from yet, such as batch-predicted before the first prediction --
is left where the discarded fetch moved it, and the dropped records are never read:
after a broker restart a run would wait for its last event forever.

:class:`RewindingTransport` puts such partitions back at the start, as the consumer's
``auto_offset_reset = "earliest"`` would; records read twice are no harm, as the
reporter's handling of an event is idempotent. Changelog partitions, which faust's
table recovery positions itself, are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as aiokafka_driver

__all__ = ["RewindingTransport"]


class _RewindingConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed: Mapping[Any, int] = await super().seek_to_committed()
        acked = self.app.topics.acks_enabled_for  # the agents' topics, not changelogs
        never_committed = [tp for tp, offset in committed.items() if not offset and acked(tp.topic)]
        if never_committed:
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *never_committed)
        return committed


class _RewindingConsumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _RewindingConsumerThread(self, loop=self.loop, beacon=self.beacon)


class RewindingTransport(aiokafka_driver.Transport):
    """faust's aiokafka transport whose consumer rewinds never-committed partitions."""

    Consumer: ClassVar[Any] = _RewindingConsumer
