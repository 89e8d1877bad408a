"""The runner's partitions: one message in flight at a time, through pauses and rebalances.

While the runner works on a message, :class:`Partitions` keeps every other message of
the assignment back (paused, the consumer can still be polled, which keeps it in the
group), rewinds what slipped through, and follows rebalances: a partition that comes
in is paused at once, and one taken away with the message in flight marks that
message revoked, so that its result is neither published nor committed
(landfall/runner.py says what the runner does then).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from landfall.config import Settings
from landfall.errors import ConfigError
from landfall.kafka_clients import kafka_client_config
from landfall.topics import explain_kafka_error

__all__ = ["Partitions", "check_consumer_error", "names", "runner_consumer_config", "where"]

log = logging.getLogger(__name__)


def runner_consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    """The librdkafka settings of a runner's consumer in ``group``."""
    return {
        # A partition resumed after a stage joins the fetch only once the fetch in flight
        # returns: librdkafka's 500 ms wait showed as half-second hops between stages. A
        # broker answers ten idle fetches a second per service instead of two.
        # kafka.client_config may set it otherwise.
        "fetch.wait.max.ms": 100,
        **kafka_client_config(settings),
        "group.id": group,
        # Offsets are committed by the runner, once a message's events are published.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # A new group starts at the beginning: an event published before the service
        # first joined is still processed.
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        "max.poll.interval.ms": settings.kafka.max_poll_interval_ms,
    }


class Partitions:
    """The assignment of one runner's consumer, and the message in flight on it.

    ``on_taken_away(how)`` is called (inside a poll) when a rebalance takes the partition
    of the message in flight away; ``on_assigned(consumer, partitions)`` before newly
    assigned partitions are set up.
    """

    def __init__(
        self,
        consumer: Consumer,
        config: Mapping[str, Any],
        settings: Settings,
        *,
        service: str,
        topics: Sequence[str],
        on_taken_away: Callable[[str], None],
        on_assigned: Callable[[Consumer, list[TopicPartition]], None],
    ) -> None:
        self._consumer = consumer
        self._settings = settings
        self._service = service
        self._topics = list(topics)
        self._on_taken_away = on_taken_away
        self._on_assigned = on_assigned
        self._incremental = _incremental_rebalancing(config)
        # Touched by the main thread only: rebalance callbacks run inside its polls.
        self.in_flight: tuple[str, int] | None = None
        self.revoked = False  # the partition of the message in flight was taken away
        # A fatal consumer error met while a message was processed: raised after it.
        self.fatal: KafkaError | None = None
        self._rewound: dict[tuple[str, int], int] = {}
        # Every partition paused while the message is processed. A pause outlives an
        # unassignment (librdkafka keeps it on the partition, to apply again if it
        # comes back), so each of these is resumed at the end, assigned or not.
        self._paused: set[tuple[str, int]] = set()
        self._holding = False  # the whole assignment is paused for the message in flight
        # When the group took this instance's partitions away as lost (its session
        # expired) with no rebalance completed since: see rejoin_if_stranded.
        self._lost_at: float | None = None

    def subscribe(self) -> None:
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    @contextmanager
    def one_in_flight(self, message: Message) -> Iterator[None]:
        """Keep every other message back from poll to commit of ``message``.

        Work that polls meanwhile (a stage, a backoff before a redo) pauses the whole
        assignment first (:meth:`hold`): paused, the consumer can be polled, which keeps
        it in the group and serves rebalances, without handing out another message
        before this one is committed or rewound. Everything paused is resumed after.
        A message set aside without polling (a dead letter) pauses nothing: a pause
        drops what the client fetched ahead and a resume waits out a fetch, which
        would cap a flood of bad messages at two a second.
        """
        self.in_flight = (message.topic() or "", message.partition() or 0)
        self.revoked = False
        self._rewound = {}
        try:
            yield
        finally:
            self.in_flight = None
            paused = set(self._paused)
            if self._holding:
                paused |= {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
            self._holding = False
            self._paused = set()
            self._resume([TopicPartition(topic, number) for topic, number in sorted(paused)])

    def hold(self) -> None:
        """Pause the whole assignment for the rest of the message in flight (once)."""
        if not self._holding:
            self._holding = True
            self._pause(self._consumer.assignment())

    def poll_paused(self, timeout: float) -> None:
        """Poll while the assignment is paused: serve rebalances, rewind any stray."""
        stray = self._consumer.poll(timeout)
        if stray is None:
            return
        error = stray.error()
        if error is not None:
            if error.fatal():
                # Raised from here it would pass for the stage's own failure.
                self.fatal = self.fatal or error
            else:
                check_consumer_error(error, self._settings, self._service)
            return
        # Fetched before the pause took effect, or from a partition that came in a
        # rebalance: rewind it so it comes back once the message in flight is done.
        topic, partition = stray.topic() or "", stray.partition() or 0
        self.rewind(topic, partition, stray.offset() or 0)
        self._pause([TopicPartition(topic, partition)])

    def rewind(self, topic: str, partition: int, offset: int) -> None:
        """Seek a partition back to ``offset`` (unless already back before it)."""
        key = (topic, partition)
        if self._rewound.get(key, offset + 1) <= offset:
            return  # an earlier message of this partition comes back first anyway
        try:
            self._consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            # Not ours any more: its next owner starts from the committed offset.
            log.info("not rewinding %s/%d to %d: %s", topic, partition, offset, exc)
            return
        self._rewound[key] = offset

    def rejoin_if_stranded(self) -> None:
        """Join the group anew when no rebalance followed a loss of the partitions.

        Seen with a broker that was away longer than the session: the client said it
        would rejoin the group, but minutes later it had joined no rebalance and held
        no partition, so its topics went unread while the service looked healthy.
        Any rebalance since the loss, even one that gives this instance nothing, ends
        the wait (_on_assign); a consumer still outside the group after several
        session timeouts subscribes again, which makes it join afresh.
        """
        if self._lost_at is None:
            return
        patience = max(3 * self._settings.kafka.session_timeout_ms / 1000, 20.0)
        if time.monotonic() - self._lost_at < patience:
            return
        log.warning(
            "%s has been outside its consumer group for %.0fs since its partitions were "
            "lost; subscribing again to rejoin",
            self._service,
            time.monotonic() - self._lost_at,
        )
        self._lost_at = time.monotonic()
        try:
            self._consumer.unsubscribe()
            self.subscribe()
        except KafkaException as exc:
            log.warning("subscribing again failed (tried again later): %s", exc)

    def _pause(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        self._paused.update((tp.topic, tp.partition) for tp in partitions)
        try:
            self._consumer.pause(partitions)
        except KafkaException as exc:
            # A partition that left in a rebalance meanwhile: strays are rewound anyway.
            log.info("pausing %s failed: %s", names(partitions), exc)

    def _resume(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        try:
            self._consumer.resume(partitions)
        except KafkaException as exc:
            log.info("resuming %s failed: %s", names(partitions), exc)

    # -- rebalance callbacks (run inside a poll of the main thread) --------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions handed to this instance.

        The partitions are assigned here, then their pause state set explicitly: while
        a message is in flight they are paused at once, so none of their messages is
        handed out before that one is committed; otherwise they are resumed, in case a
        pause from before they were taken away still clung to them.
        """
        log.info("%s assigned %s", self._service, names(partitions))
        self._lost_at = None  # back in the group
        if not partitions:
            return  # the client records the (unchanged) assignment itself
        try:
            self._on_assigned(consumer, partitions)
            self._assign(consumer, partitions)
            if self.in_flight is not None:
                self._pause(partitions)
            else:
                consumer.resume(partitions)
        except Exception:
            # Raised here, it would escape poll() and the loop; strays are rewound.
            log.exception("setting up newly assigned %s failed", names(partitions))

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take the partitions of an assign callback, as the group's protocol wants it."""
        first, second = consumer.assign, consumer.incremental_assign
        if self._incremental:
            first, second = second, first
        try:
            first(partitions)
        except KafkaException:
            # The guess from the configuration was wrong: the client refuses an eager
            # assign under a cooperative protocol and the other way round.
            second(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions taken back in an orderly rebalance."""
        self._taken_away(partitions, "revoked")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions lost (the session expired, e.g. broker away)."""
        self._lost_at = time.monotonic()
        self._taken_away(partitions, "lost")

    def _taken_away(self, partitions: list[TopicPartition], how: str) -> None:
        log.info("%s %s %s", self._service, how, names(partitions))
        if self.in_flight is None or self.revoked:
            return
        if not any((tp.topic, tp.partition) == self.in_flight for tp in partitions):
            return
        # Another instance may own the partition now and redo the batch: this one's
        # result must not be published or committed.
        self.revoked = True
        self._on_taken_away(how)


def check_consumer_error(error: KafkaError, settings: Settings, service: str) -> None:
    """Log a consumer error the client recovers from; raise one it never recovers from."""
    if error.code() == KafkaError._PARTITION_EOF:
        return
    if error.code() in _REFUSED:
        # A missing ACL or a refused login never heals by polling again: stop with
        # the one line that names the setting or the grant to fix.
        group = f"{settings.kafka.group_prefix}-{service}"
        explained = explain_kafka_error(
            error,
            str(settings.kafka.bootstrap),
            kafka_client_config(settings),
            action=f"consume as group {group!r}",
            resource=group,
        )
        if explained is not None:
            raise ConfigError(explained)
    if error.fatal():
        raise KafkaException(error)
    log.warning("%s consumer: %s", service, error)


_REFUSED = frozenset(
    {
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }
)


def _incremental_rebalancing(config: Mapping[str, Any]) -> bool:
    """Whether rebalances move partitions one by one (cooperative) or all at once (eager)."""
    if str(config.get("group.protocol", "classic")).lower() == "consumer":
        return True  # KIP-848: the broker hands out incremental changes
    return "cooperative" in str(config.get("partition.assignment.strategy", "")).lower()


def names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions) or "nothing"


def where(message: Message) -> str:
    return f"{message.topic()}/{message.partition()}@{message.offset()}"
