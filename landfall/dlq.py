"""The dead-letter topic as an operator's workflow: list, show, redrive.

A dead letter (:mod:`landfall.dead_letters`) keeps the original value and headers of a
message no service could handle, with headers naming the reason, the source
(``topic/partition@offset``) and the service. Here an operator reads them back and,
once the cause is fixed, *redrives* some: re-produces each to its source topic and
partition with its original key, bytes and headers (the dead-letter headers taken
off), plus two headers recording the redrive (:data:`REDRIVE_REF`, :data:`REDRIVE_AT`).
A message whose value was cut to fit the dead-letter topic is never redriven: it would
be another message.

Reading never commits an offset: a throwaway consumer is *assigned* the partitions
(no group join, no commit), so no service group and no earlier read is disturbed.
A message is named by its place on the dead-letter topic, ``partition@offset``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from landfall.config import Settings
from landfall.dead_letters import (
    DEAD_LETTER_ORIGINAL_BYTES,
    DEAD_LETTER_REASON,
    DEAD_LETTER_SERVICE,
    DEAD_LETTER_SOURCE,
)
from landfall.errors import InvalidEventError, LandfallError
from landfall.kafka_clients import event_codec, kafka_client_config
from landfall.redact import redact, redact_tree

__all__ = [
    "REDRIVE_AT",
    "REDRIVE_REF",
    "DeadLetterMessage",
    "Redriven",
    "decode_preview",
    "header_preview",
    "parse_ref",
    "read_dead_letters",
    "read_one",
    "redrive",
    "redrive_refusal",
    "summarize",
]

# Set on a redriven message: which dead letter it came from, and when it was redriven.
REDRIVE_REF = "landfall.redrive.ref"
REDRIVE_AT = "landfall.redrive.at"
_DEAD_LETTER_PREFIX = "landfall.dead_letter."
_REDRIVE_PREFIX = "landfall.redrive."
_REF = re.compile(r"([0-9]{1,9})@([0-9]{1,19})")
_SOURCE = re.compile(
    r"(?P<topic>[A-Za-z0-9._-]{1,249})/(?P<partition>[0-9]{1,9})@(?P<offset>[0-9]{1,19})"
)
# What `show` prints of a value it cannot decode.
PREVIEW_BYTES = 512
_READ_TIMEOUT_S = 30.0


def parse_ref(ref: str) -> tuple[int, int]:
    """``partition@offset`` on the dead-letter topic, as two numbers."""
    match = _REF.fullmatch(ref.strip())
    if match is None:
        raise LandfallError(
            f"{ref!r} is not a dead letter's place: write partition@offset, e.g. 0@12 "
            "(as `landfall dlq list` shows it)"
        )
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class DeadLetterMessage:
    """One message on the dead-letter topic, as it was produced there."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def ref(self) -> str:
        return f"{self.partition}@{self.offset}"

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key == name]
        return found[-1].decode("utf-8", "replace") if found else None

    @property
    def reason(self) -> str:
        return redact(self.header(DEAD_LETTER_REASON) or "(no reason recorded)")

    @property
    def service(self) -> str:
        return self.header(DEAD_LETTER_SERVICE) or "?"

    @property
    def source(self) -> str | None:
        return self.header(DEAD_LETTER_SOURCE)

    @property
    def source_place(self) -> tuple[str, int, int] | None:
        """(topic, partition, offset) the message was dead-lettered from, if recorded."""
        match = _SOURCE.fullmatch(self.source or "")
        if match is None:
            return None
        return match["topic"], int(match["partition"]), int(match["offset"])

    @property
    def source_topic(self) -> str | None:
        place = self.source_place
        return place[0] if place else None

    @property
    def original_bytes(self) -> int | None:
        """The value's size before it was cut to fit the topic; None: kept whole."""
        text = self.header(DEAD_LETTER_ORIGINAL_BYTES)
        return int(text) if text and text.isdigit() else None

    @property
    def size(self) -> int:
        return len(self.value or b"")

    @property
    def time(self) -> str | None:
        if self.timestamp_ms is None:
            return None
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(timespec="seconds")

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the message had at its source: no dead-letter or redrive ones."""
        return [
            (key, value)
            for key, value in self.headers
            if not key.startswith((_DEAD_LETTER_PREFIX, _REDRIVE_PREFIX))
        ]

    def summary(self) -> dict[str, Any]:
        """What ``dlq list`` shows of it (secrets redacted)."""
        return {
            "ref": self.ref,
            "time": self.time,
            "service": redact(self.service),
            "source": redact(self.source or ""),
            "source_topic": self.source_topic,
            "reason": self.reason,
            "bytes": self.size,
            "original_bytes": self.original_bytes,
        }


def _consumer(settings: Settings) -> Consumer:
    # A group id is required by the client, but an assigned consumer never joins it and
    # commits nothing: a fresh name keeps it clear of every service group.
    return Consumer(
        {
            **kafka_client_config(settings),
            "group.id": f"landfall-dlq-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        }
    )


def _message(msg: Any) -> DeadLetterMessage:
    kind, stamp = msg.timestamp()
    raw_headers = msg.headers() or []
    return DeadLetterMessage(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp_ms=None if kind == TIMESTAMP_NOT_AVAILABLE else stamp,
        key=msg.key(),
        value=msg.value(),
        headers=tuple((str(k), bytes(v or b"")) for k, v in raw_headers),
    )


def _partitions(consumer: Consumer, topic: str) -> list[int] | None:
    """The topic's partitions; None when the topic does not exist (nothing dead-lettered)."""
    metadata = consumer.list_topics(topic, timeout=_READ_TIMEOUT_S)
    found = metadata.topics.get(topic)
    missing = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
    if found is None or (found.error is not None and found.error.code() in missing):
        return None
    if found.error is not None:
        raise LandfallError(f"cannot read the dead-letter topic {topic}: {found.error}")
    return sorted(found.partitions)


def read_dead_letters(
    settings: Settings, *, newest: int | None = None
) -> Iterator[DeadLetterMessage]:
    """Every message on the dead-letter topic, partition by partition, oldest first.

    ``newest``: only the last that many of each partition (a page shows a bounded few).
    """
    topic = settings.kafka.topics.dead_letter.name
    consumer = _consumer(settings)
    try:
        partitions = _partitions(consumer, topic)
        if partitions is None:
            return
        ends: dict[int, int] = {}
        starts = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_READ_TIMEOUT_S, cached=False
            )
            if high > low:
                ends[partition] = high
                first = low if newest is None else max(low, high - newest)
                starts.append(TopicPartition(topic, partition, first))
        if not starts:
            return
        consumer.assign(starts)
        # Read up to the ends found now: what is dead-lettered meanwhile waits for the
        # next listing instead of keeping this one from finishing.
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while ends:
            msg = consumer.poll(1.0)
            if msg is None:
                if time.monotonic() > deadline:
                    missing = ", ".join(f"{p} (up to {e})" for p, e in sorted(ends.items()))
                    raise LandfallError(
                        f"reading {topic} stalled: no message for {_READ_TIMEOUT_S:g}s "
                        f"from partition(s) {missing}"
                    )
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise LandfallError(f"cannot read the dead-letter topic {topic}: {error}")
            deadline = time.monotonic() + _READ_TIMEOUT_S
            place, offset = msg.partition(), msg.offset()
            if place is None or offset is None or place not in ends:
                continue
            if offset + 1 >= ends[place]:
                del ends[place]
                consumer.incremental_unassign([TopicPartition(topic, place)])
            yield _message(msg)
    except KafkaException as exc:
        raise LandfallError(f"cannot read the dead-letter topic {topic}: {exc}") from exc
    finally:
        consumer.close()


def read_one(settings: Settings, ref: str) -> DeadLetterMessage:
    """The dead letter at ``partition@offset`` on the dead-letter topic."""
    partition, offset = parse_ref(ref)
    topic = settings.kafka.topics.dead_letter.name
    consumer = _consumer(settings)
    try:
        partitions = _partitions(consumer, topic)
        if partitions is None:
            raise LandfallError(f"there is no dead-letter topic {topic} yet: nothing is in it")
        if partition not in partitions:
            raise LandfallError(
                f"{topic} has no partition {partition} (it has {len(partitions)}: 0..."
                f"{len(partitions) - 1})"
            )
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=_READ_TIMEOUT_S, cached=False
        )
        if not low <= offset < high:
            raise LandfallError(
                f"{topic} partition {partition} has no offset {offset}: it holds "
                + (f"{low}..{high - 1}" if high > low else "nothing")
                + " (an older one may have expired with the topic's retention)"
            )
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                continue
            if error is not None:
                raise LandfallError(f"cannot read {topic} at {ref}: {error}")
            if msg.offset() == offset:
                return _message(msg)
            # A compacted or transactional log may have no record at exactly this offset.
            raise LandfallError(f"{topic} has no message at {ref} (the next is at {msg.offset()})")
        raise LandfallError(f"no message came from {topic} at {ref} within {_READ_TIMEOUT_S:g}s")
    except KafkaException as exc:
        raise LandfallError(f"cannot read the dead-letter topic {topic}: {exc}") from exc
    finally:
        consumer.close()


def summarize(letters: Iterable[DeadLetterMessage]) -> dict[str, Any]:
    """Counts of dead letters by reason and by source topic (what ``dlq list`` ends with)."""
    by_reason: dict[str, int] = {}
    by_topic: dict[str, int] = {}
    total = 0
    for letter in letters:
        total += 1
        by_reason[letter.reason] = by_reason.get(letter.reason, 0) + 1
        topic = letter.source_topic or "(unknown)"
        by_topic[topic] = by_topic.get(topic, 0) + 1

    def ranked(counts: dict[str, int]) -> dict[str, int]:
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    return {"total": total, "by_reason": ranked(by_reason), "by_source_topic": ranked(by_topic)}


def decode_preview(settings: Settings, letter: DeadLetterMessage) -> dict[str, Any]:
    """The value as an operator may see it: the decoded event, else a safe preview.

    Decoded with landfall's codec (Avro single-object or Confluent framing, JSON on the
    ingress topic); what does not decode is shown as text when it is UTF-8, else in hex,
    cut to :data:`PREVIEW_BYTES`. Every string is redacted.
    """
    value = letter.value or b""
    shown: dict[str, Any] = {"bytes": len(value), "original_bytes": letter.original_bytes}
    topic = letter.source_topic or letter.topic
    if letter.original_bytes is None and value:
        try:
            event_type, record = event_codec(settings).decode(
                value, topic=topic, accept_json=topic == settings.kafka.topics.landed.name
            )
        except InvalidEventError as exc:
            shown["decode_error"] = redact(str(exc))
        except LandfallError as exc:  # a registry that cannot be reached: say so, preview
            shown["decode_error"] = redact(str(exc))
        else:
            shown["event_type"] = event_type.short_name
            shown["event"] = redact_tree(json.loads(json.dumps(record, default=str)))
            return shown
    elif letter.original_bytes is not None:
        shown["decode_error"] = (
            f"the value was cut to {len(value)} of {letter.original_bytes} bytes when it "
            "was dead-lettered; not decoded"
        )
    try:
        text: str | None = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _mostly_printable(text):
        # Redacted whole, then cut: a secret across the cut is still found.
        shown["text"] = redact(text)[:PREVIEW_BYTES]
        shown["preview_truncated"] = len(text) > PREVIEW_BYTES
    else:
        shown["hex"] = _redacted_bytes(value)[:PREVIEW_BYTES].hex(" ")
        shown["preview_truncated"] = len(value) > PREVIEW_BYTES
    return shown


def _mostly_printable(text: str) -> bool:
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _redacted_bytes(value: bytes) -> bytes:
    # Binary data may still hold a secret in ASCII; hex would only spell it out.
    # Latin-1 maps each byte to one character and back, so nothing else changes.
    return redact(value.decode("latin-1")).encode("latin-1", "replace")


def header_preview(value: bytes) -> str:
    """A header's value as text (redacted), or hex when it is not UTF-8 text."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _mostly_printable(text):
        return redact(text)
    return "0x" + _redacted_bytes(value)[:PREVIEW_BYTES].hex()


@dataclass(frozen=True)
class Redriven:
    """One dead letter's redrive: where it went, or why it was not redriven."""

    ref: str
    source: str
    redriven_to: str | None = None  # topic/partition@offset of the re-produced message
    refused: str | None = None


def redrive_refusal(letter: DeadLetterMessage) -> str | None:
    """Why ``letter`` cannot be redriven as it came; None: it can."""
    if letter.original_bytes is not None:
        return (
            f"its value was cut to {letter.size} of {letter.original_bytes} bytes when it was "
            f"dead-lettered ({DEAD_LETTER_ORIGINAL_BYTES}): re-producing it would publish "
            "another message; publish the original again from its source"
        )
    if letter.source_place is None:
        return (
            f"it names no source topic ({DEAD_LETTER_SOURCE} is "
            f"{letter.source!r}): it was not dead-lettered by landfall"
        )
    return None


def redrive(
    settings: Settings, letters: list[DeadLetterMessage], *, dry_run: bool = False
) -> list[Redriven]:
    """Re-produce each letter to its source topic and partition, recording the redrive.

    A letter that cannot be redriven (:func:`redrive_refusal`) is refused and named;
    the others go. Each produced record is acknowledged by the broker (acks=all,
    idempotent producer) before this returns.
    """
    results: list[Redriven] = []
    to_send: list[tuple[DeadLetterMessage, str]] = []
    for letter in letters:
        refusal = redrive_refusal(letter)
        source = redact(letter.source or "")
        if refusal is not None:
            results.append(Redriven(letter.ref, source, refused=refusal))
        elif dry_run:
            topic, partition, _offset = letter.source_place  # type: ignore[misc]
            results.append(Redriven(letter.ref, source, redriven_to=f"{topic}/{partition}"))
        else:
            to_send.append((letter, source))
    if to_send:
        results.extend(_produce_redrives(settings, to_send))
    order = {letter.ref: i for i, letter in enumerate(letters)}
    return sorted(results, key=lambda r: order[r.ref])


def _produce_redrives(
    settings: Settings, to_send: list[tuple[DeadLetterMessage, str]]
) -> list[Redriven]:
    """Produce each letter to where it came from and wait for the broker's answers."""
    producer = Producer(
        {**kafka_client_config(settings), "acks": "all", "enable.idempotence": True}
    )
    delivered: dict[str, str] = {}
    errors: dict[str, str] = {}
    dlq_topic = settings.kafka.topics.dead_letter.name
    try:
        for letter, _source in to_send:
            topic, partition, _offset = letter.source_place  # type: ignore[misc]
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            headers: list[tuple[str, str | bytes | None]] = [
                *letter.original_headers(),
                (REDRIVE_REF, f"{dlq_topic}/{letter.ref}".encode()),
                (REDRIVE_AT, stamp.encode()),
            ]

            def on_delivery(err: Any, msg: Any, ref: str = letter.ref) -> None:
                if err is not None:
                    errors[ref] = str(err)
                else:
                    delivered[ref] = f"{msg.topic()}/{msg.partition()}@{msg.offset()}"

            producer.produce(
                topic,
                key=letter.key,
                value=letter.value,
                partition=partition,
                headers=headers,
                on_delivery=on_delivery,
            )
            producer.poll(0)
        deadline = time.monotonic() + _READ_TIMEOUT_S
        while producer.flush(1.0) and time.monotonic() < deadline:
            pass
    except KafkaException as exc:
        raise LandfallError(f"cannot redrive to the source topics: {exc}") from exc
    finally:
        del producer
    results = []
    for letter, source in to_send:
        if letter.ref in delivered:
            results.append(Redriven(letter.ref, source, redriven_to=delivered[letter.ref]))
        else:
            reason = errors.get(letter.ref, f"not acknowledged within {_READ_TIMEOUT_S:g}s")
            results.append(Redriven(letter.ref, source, refused=f"the broker refused it: {reason}"))
    return results
