"""The runner's output: events produced once and acknowledged, then the offset committed.

:class:`Publisher` produces a batch's events (and dead letters) with the idempotent
producer and waits for the broker's acknowledgement of each; a record the broker does
not acknowledge raises :class:`~landfall.errors.RetryableError` and is never produced a
second time here (the runner redoes the batch instead). :class:`OffsetCommits` commits
a message once its events are out, and keeps the commits that failed for when their
partition comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import partition_key
from landfall.dead_letters import dead_letter
from landfall.errors import RetryableError
from landfall.hooks import RunHooks
from landfall.kafka_clients import kafka_client_config
from landfall.poison import StartLedger
from landfall.processing import Headers, Outgoing, outgoing_headers
from landfall.runner_partitions import names, where

__all__ = ["OffsetCommits", "Publisher"]

log = logging.getLogger(__name__)

# How much longer than delivery.timeout.ms to wait for the producer's verdict on a
# record: librdkafka scans for timed-out records about once a second.
_VERDICT_GRACE_S = 5.0


class Publisher:
    """Produces one service's events, each acknowledged before the next."""

    def __init__(
        self, settings: Settings, codec: EventCodec, hooks: RunHooks, service: str
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._hooks = hooks
        self._service = service
        self._dead_letter_topic = settings.kafka.topics.dead_letter.name
        publish_timeout_ms = int(settings.runner.publish_timeout_s * 1000)
        self._producer_config = {
            **kafka_client_config(settings),
            # The producer's own retries never write a record twice (the broker drops
            # a resent batch by its sequence number), and a record counts as published
            # once every in-sync replica has it.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # How long those retries may go on; then the record is given up and the
            # batch redone later, rather than the record being produced again here.
            "delivery.timeout.ms": max(publish_timeout_ms, 100),
        }
        self._producer = Producer(self._producer_config)

    def publish(self, outgoing: Sequence[Outgoing]) -> None:
        """Produce ``outgoing`` in order, each in its produce span (RetryableError: not all)."""
        for event in outgoing:
            value = self._codec.encode(event.event_type, event.record, topic=event.topic)
            with self._hooks.producing(event.topic, event.event_type) as carried:
                headers = outgoing_headers(event, carried)
                self._produce_acknowledged(event.topic, partition_key(event.record), value, headers)

    def dead_letter(self, message: Message, reason: str) -> None:
        """Produce ``message`` to the dead-letter topic, its bytes and headers kept."""
        inbound = message.headers()
        letter = dead_letter(
            message.value(),
            inbound if isinstance(inbound, list) else [],
            reason=reason,
            source=where(message),
            service=self._service,
            keep_bytes=self._settings.runner.dead_letter_max_bytes,
        )
        headers: Headers = list(letter.headers)
        self._produce_acknowledged(self._dead_letter_topic, message.key(), letter.value, headers)

    def flush(self, timeout_s: float) -> None:
        self._producer.flush(timeout_s)

    def _produce_acknowledged(
        self, topic: str, key: str | bytes | None, value: str | bytes | None, headers: Headers
    ) -> None:
        """Produce one record once and block until the broker acknowledged it.

        The idempotent producer retries on its own for ``runner.publish_timeout_s``.
        A record it gives up on (or never settles) raises RetryableError and is not
        produced again here: the caller redoes the batch instead, so a record that did
        reach the broker after all is not joined by a second copy from this call.
        """
        verdicts: list[KafkaError | None] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            verdicts.append(err)

        try:
            self._producer.produce(
                topic, value=value, key=key, headers=headers, on_delivery=on_delivery
            )
        except (BufferError, KafkaException) as exc:
            raise RetryableError(f"could not queue a record for {topic}: {exc}") from exc
        timeout_s = self._settings.runner.publish_timeout_s
        self._producer.flush(timeout_s + _VERDICT_GRACE_S)
        if verdicts and verdicts[0] is None:
            return
        error = verdicts[0] if verdicts else None
        if error is None:
            # No verdict in time: take the record out of the queue if it still waits
            # there, so it cannot go out later beside the redone batch's record.
            self._producer.purge(in_queue=True, in_flight=False)
            self._producer.poll(0)
        elif error.fatal():
            # An idempotent producer that hit a fatal error produces nothing more.
            log.error("the producer failed fatally (%s); replacing it", error)
            self._producer = Producer(self._producer_config)
        raise RetryableError(
            f"the broker did not acknowledge a record for {topic} within "
            f"{timeout_s:g}s: {error or 'no verdict'}"
        )


class OffsetCommits:
    """Commits consumed messages, and retries the commits that failed when it can."""

    def __init__(self, consumer: Consumer, ledger: StartLedger) -> None:
        self._consumer = consumer
        self._ledger = ledger
        # Offsets (the next to read) of published messages whose commit failed.
        self._uncommitted: dict[tuple[str, int], int] = {}

    def commit(self, message: Message) -> None:
        key = (message.topic() or "", message.partition() or 0)
        following = (message.offset() or 0) + 1
        # A replay's note travels with each commit until the group has passed its end.
        mark = TopicPartition(
            key[0], key[1], following, metadata=self._ledger.metadata_after(message)
        )
        try:
            self._consumer.commit(offsets=[mark], asynchronous=False)
        except KafkaException as exc:
            # Outputs are replaced atomically, so a redelivery after a lost commit
            # (e.g. the partition moved to another instance) has the same effect; but
            # if the partition comes back here, the commit is made then.
            log.warning("offset commit for %s failed: %s", where(message), exc)
            self._uncommitted[key] = max(self._uncommitted.get(key, 0), following)
        else:
            self._ledger.finished(message)
            if self._uncommitted.get(key, following) <= following:
                self._uncommitted.pop(key, None)

    def commit_what_failed(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit the offsets whose commit failed, for the partitions back with this instance.

        A commit fails when the group has moved on meanwhile, typically when the
        broker was away longer than the session (its outputs were acknowledged
        before it went). If the partition comes back, and nobody committed further
        in between, the commit is made now, before fetching starts from the committed
        offset: the batch, published already, is not redone.
        """
        pending = [
            TopicPartition(tp.topic, tp.partition, self._uncommitted.pop(key))
            for tp in partitions
            if (key := (tp.topic, tp.partition)) in self._uncommitted
        ]
        if not pending:
            return
        try:
            committed = consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in pending], timeout=10
            )
            now = {(tp.topic, tp.partition): tp.offset for tp in committed}
            behind = [tp for tp in pending if now.get((tp.topic, tp.partition), -1) < tp.offset]
            if behind:
                consumer.commit(offsets=behind, asynchronous=False)
                log.info("committed %s now, after the commit failed", names(behind))
        except KafkaException as exc:
            log.warning("could not commit %s now either: %s", names(pending), exc)
