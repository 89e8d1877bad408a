"""Poison-pill detection: a message that keeps killing the process is set aside.

A message whose handling crashes the process (an interpreter error, the OOM killer,
a native library's segfault) is redelivered to the next process, which crashes in
turn: a crash loop no operator command ends. So before handling a message, the
runner records that it started it, in the group's committed offset for that
partition: the same offset (the group's position does not move) with metadata
``landfall:started=N``. The metadata lives with the group on the broker, so whichever
replica gets the partition next reads it. Finishing the message commits the next
offset, which clears it; a process that died instead leaves it there, and after
``runner.max_crashes`` such starts the message goes to the dead-letter topic unread.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

__all__ = ["StartLedger"]

log = logging.getLogger(__name__)

_PREFIX = "landfall:started="


def _place(message: Message) -> tuple[str, int, int]:
    return message.topic() or "", message.partition() or 0, message.offset() or 0


class StartLedger:
    """Counts, in committed offset metadata, the starts of a message that never finished."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        # Messages this process marked already: a redo within the process (a rewound
        # publish) is not a crash and is not counted again.
        self._marked: set[tuple[str, int, int]] = set()

    def unfinished_starts(self, message: Message) -> int:
        """How often earlier processes started ``message`` and never finished it."""
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset()
        if offset is None or (topic, partition, offset) in self._marked:
            return 0
        try:
            (committed,) = self._consumer.committed([TopicPartition(topic, partition)], timeout=10)
        except KafkaException as exc:
            log.warning("cannot read the start count of %s/%d: %s", topic, partition, exc)
            return 0
        metadata = committed.metadata or ""
        if committed.offset != offset or not metadata.startswith(_PREFIX):
            return 0
        count = metadata.removeprefix(_PREFIX)
        return int(count) if count.isdigit() else 0

    def mark_started(self, message: Message, earlier: int) -> None:
        """Record one more start of ``message`` (best effort: a failed write is logged)."""
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset()
        if offset is None or (topic, partition, offset) in self._marked:
            return
        self._marked.add((topic, partition, offset))
        mark = TopicPartition(topic, partition, offset, metadata=f"{_PREFIX}{earlier + 1}")
        try:
            self._consumer.commit(offsets=[mark], asynchronous=False)
        except KafkaException as exc:
            log.warning("cannot record the start of %s/%d@%d: %s", topic, partition, offset, exc)

    def unmark(self, message: Message, earlier: int) -> None:
        """Take this process's start of ``message`` back (it stopped cleanly, no crash)."""
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset()
        if offset is None or (topic, partition, offset) not in self._marked:
            return
        self._marked.discard((topic, partition, offset))
        metadata = f"{_PREFIX}{earlier}" if earlier else ""
        try:
            self._consumer.commit(
                offsets=[TopicPartition(topic, partition, offset, metadata=metadata)],
                asynchronous=False,
            )
        except KafkaException as exc:
            log.warning("cannot take back the start of %s/%d@%d: %s", topic, partition, offset, exc)

    def finished(self, message: Message) -> None:
        """Forget ``message``: its offset was committed past it."""
        self._marked.discard(
            (message.topic() or "", message.partition() or 0, message.offset() or 0)
        )
