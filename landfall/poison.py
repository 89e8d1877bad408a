"""Poison-pill detection: a message that keeps killing the process is set aside.

A message whose handling crashes the process (an interpreter error, the OOM killer,
a native library's segfault) is redelivered to the next process, which crashes in
turn: a crash loop no operator command ends. So before handling a message, the
runner records that it started it, in the group's committed offset for that
partition: the same offset (the group's position does not move) with the note
``started=N`` in its metadata (:mod:`landfall.offset_notes`). The metadata lives with
the group on the broker, so whichever replica gets the partition next reads it.
Finishing the message commits the next offset, which clears it; a process that died
instead leaves it there, and after ``runner.max_crashes`` such starts the message goes
to the dead-letter topic unread.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from landfall.offset_notes import OffsetNote

__all__ = ["StartLedger"]

log = logging.getLogger(__name__)

_Place = tuple[str, int, int]


def _place(message: Message) -> _Place:
    return message.topic() or "", message.partition() or 0, message.offset() or 0


class StartLedger:
    """Counts, in committed offset metadata, the starts of a message that never finished.

    It also hands the runner the other notes of that committed offset (a replay pass),
    which every write here keeps.
    """

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        # The notes read for each message in hand, and the messages this process marked
        # already: a redo within the process (a rewound publish) is not a crash and is
        # not counted again.
        self._notes: dict[_Place, OffsetNote] = {}
        self._marked: set[_Place] = set()

    def read(self, message: Message) -> OffsetNote:
        """The notes on ``message``: how often earlier processes started it and died, and
        the replay it is part of, if any."""
        place = _place(message)
        if place in self._notes:
            return self._notes[place]
        if len(self._notes) > 1024:  # messages revoked mid-work are never finished here
            self._notes.clear()
        topic, partition, offset = place
        try:
            (committed,) = self._consumer.committed([TopicPartition(topic, partition)], timeout=10)
        except KafkaException as exc:
            log.warning("cannot read the offset notes of %s/%d: %s", topic, partition, exc)
            return OffsetNote()
        note = OffsetNote.parse(committed.metadata)
        if committed.offset != offset:
            # Starts count for the committed offset only; a replay covers what follows it.
            note = note.with_starts(0)
            if committed.offset < 0 or offset < committed.offset:
                note = OffsetNote()
        if not note.replays(offset):
            note = OffsetNote(starts=note.starts)
        self._notes[place] = note
        return note

    def unfinished_starts(self, message: Message) -> int:
        """How often earlier processes started ``message`` and never finished it."""
        return 0 if _place(message) in self._marked else self.read(message).starts

    def mark_started(self, message: Message, earlier: int) -> None:
        """Record one more start of ``message`` (best effort: a failed write is logged)."""
        place = _place(message)
        if message.offset() is None or place in self._marked:
            return
        self._marked.add(place)
        self._write(place, self.read(message).with_starts(earlier + 1), "record the start of")

    def unmark(self, message: Message, earlier: int) -> None:
        """Take this process's start of ``message`` back (it stopped cleanly, no crash)."""
        place = _place(message)
        if message.offset() is None or place not in self._marked:
            return
        self._marked.discard(place)
        self._write(place, self.read(message).with_starts(earlier), "take back the start of")

    def metadata_after(self, message: Message) -> str:
        """The metadata to commit with the offset after ``message``: a replay not over."""
        return self.read(message).after(_place(message)[2]).format()

    def finished(self, message: Message) -> None:
        """Forget ``message``: its offset was committed past it."""
        place = _place(message)
        self._marked.discard(place)
        self._notes.pop(place, None)

    def _write(self, place: _Place, note: OffsetNote, action: str) -> None:
        topic, partition, offset = place
        mark = TopicPartition(topic, partition, offset, metadata=note.format())
        try:
            self._consumer.commit(offsets=[mark], asynchronous=False)
        except KafkaException as exc:
            log.warning("cannot %s %s/%d@%d: %s", action, topic, partition, offset, exc)
