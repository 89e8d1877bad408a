"""The one consume -> handle -> produce -> commit loop that every service runs.

A service only says which topics it reads and how it turns an event into outgoing
events (``Service.handle``); the runner owns everything Kafka (DESIGN.md §4):

1. poll one message and decode it; what cannot be decoded, or is not an event this
   service handles, goes to the dead-letter topic with its original bytes and headers;
2. run the handler in a worker thread while the main thread keeps polling with the
   assignment paused, so a Spark job of many minutes never costs the group membership;
3. turn failures into events: a ``StageFailedError`` (or an unexpected exception)
   becomes batch-failed; a ``RetryableError`` is retried with bounded backoff first;
4. produce the outgoing events with the idempotent producer and wait for the broker to
   acknowledge them;
5. only then commit the consumed offset.

Delivery is at least once; stages replace their outputs atomically and events carry
ids, so a redelivered message has the same effect as the first. Two things send a
message round again instead of committing it:

- a record the broker did not acknowledge within ``runner.publish_timeout_s`` (the
  producer's own, idempotent, retries included): the runner never produces it a second
  time itself; it rewinds to the input message and redoes the batch after a backoff;
- a rebalance that takes the partition of the message in flight away: the stage is
  cancelled and its result dropped unpublished and uncommitted, and whoever owns the
  partition next redoes the batch;
- a stop whose grace period (``runner.shutdown_grace_s``) ends before the stage does:
  the stage is abandoned the same way (landfall/shutdown.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_future
from contextlib import contextmanager
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from landfall.config import Settings
from landfall.contracts import EventCodec, EventType, partition_key
from landfall.dead_letters import dead_letter
from landfall.deliveries import replayed_run_id, replaying
from landfall.errors import (
    ConfigError,
    InvalidEventError,
    RetryableError,
    StageFailedError,
)
from landfall.ingress import complete_landed_event
from landfall.kafka_clients import event_codec, kafka_client_config
from landfall.poison import StartLedger
from landfall.processing import (
    Abandoned,
    Headers,
    Outgoing,
    backoff_s,
    batch_failed,
    call_with_retries,
    count_batch,
    decode_incoming,
    produce_span,
    run_attributes,
)
from landfall.shutdown import ABANDON_WAIT_S, StopClock
from landfall.telemetry import (
    BATCHES_IN_PROGRESS,
    PROCESSING_ERRORS,
    LagReporter,
    attached,
    dataset_label,
    extract_context,
    tracer,
)
from landfall.topics import explain_kafka_error

__all__ = ["Outgoing", "RunStats", "Runner", "Service"]

log = logging.getLogger(__name__)


class Service(Protocol):
    """What a stage service gives the runner: its inputs and its handler."""

    name: str  # e.g. "validator": the consumer group and the producer name
    stage: str  # e.g. "validation": what batch-failed events name
    consumes: Mapping[str, frozenset[EventType]]  # topic -> the event types it may carry
    # Optional: ``dead_letter_topics``, the consumed topics whose malformed messages this
    # service dead-letters (unset: all). A topic that another service also reads and
    # dead-letters is left out, so that a bad message becomes one dead letter.

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """Process one event; return the events to publish."""
        ...

    def cancel(self) -> None:
        """Abandon the work in progress as fast as possible (called on shutdown)."""
        ...

    def close(self) -> None:
        """Release what the service holds (its Spark session, connections)."""
        ...


@dataclass
class RunStats:
    """What one ``Runner.run`` call did: tests drive the loop with these."""

    consumed: int = 0
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    abandoned: int = 0
    # Batches dropped unpublished because a rebalance took their partition mid-stage.
    revoked: int = 0
    # Messages rewound because the broker did not acknowledge what they produced.
    unpublished: int = 0
    produced: list[Outgoing] = field(default_factory=list)


class _Revoked(Exception):
    """The partition of the message in flight was revoked: its result is dropped."""


# How much longer than delivery.timeout.ms to wait for the producer's verdict on a
# record: librdkafka scans for timed-out records about once a second.
_VERDICT_GRACE_S = 5.0


class Runner:
    """Runs one service against the broker until stopped."""

    def __init__(
        self,
        service: Service,
        settings: Settings,
        *,
        codec: EventCodec | None = None,
        producer_name: str | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.codec = codec or event_codec(settings)
        self.producer_name = producer_name or service.name
        self._stop = threading.Event()
        self._stop_clock = StopClock()
        # The work of a stage abandoned on shutdown, which may still be unwinding.
        self._abandoned_work: Future[list[Outgoing]] | None = None
        self._dead_letter_topic = settings.kafka.topics.dead_letter.name
        common = kafka_client_config(settings)
        consumer_config = {
            **common,
            "group.id": f"{settings.kafka.group_prefix}-{service.name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # A new group starts at the beginning: an event published before the
            # service first joined is still processed.
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.kafka.session_timeout_ms,
            "max.poll.interval.ms": settings.kafka.max_poll_interval_ms,
        }
        self._incremental = _incremental_rebalancing(consumer_config)
        self._consumer = Consumer(consumer_config)
        self._ledger = StartLedger(self._consumer)
        publish_timeout_ms = int(settings.runner.publish_timeout_s * 1000)
        self._producer_config = {
            **common,
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
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{service.name}-stage")
        self._lag = LagReporter(service.name)
        # The state of the message being processed, touched by the main thread only
        # (rebalance callbacks run inside its polls) except _interrupt, which the
        # worker reads: set, the stage in flight gives up (stop, or its partition moved).
        self._in_flight: tuple[str, int] | None = None
        self._in_flight_revoked = False
        self._stage_running = False
        self._interrupt = threading.Event()
        self._rewound: dict[tuple[str, int], int] = {}
        # Every partition paused while the message is processed. A pause outlives an
        # unassignment (librdkafka keeps it on the partition, to apply again if it
        # comes back), so each of these is resumed at the end, assigned or not.
        self._paused: set[tuple[str, int]] = set()
        self._holding = False  # the whole assignment is paused for the message in flight
        self._unpublished_in_a_row = 0
        # A fatal consumer error met while a message was processed: raised after it.
        self._fatal: KafkaError | None = None
        # Offsets (the next to read) of published messages whose commit failed.
        self._uncommitted: dict[tuple[str, int], int] = {}
        # When the group took this instance's partitions away as lost (its session
        # expired) with no rebalance completed since: see _rejoin_if_stranded.
        self._lost_at: float | None = None

    def stop(self, grace_s: float | None = None) -> None:
        """Ask the loop to finish; no further message is taken.

        The stage in flight may still finish, and its batch be published and committed,
        within ``grace_s`` (default ``runner.shutdown_grace_s``); then it is abandoned,
        nothing published or committed. A second call abandons it at once.
        """
        grace = self.settings.runner.shutdown_grace_s if grace_s is None else grace_s
        self._stop_clock.request(grace)
        self._stop.set()
        if self._stop_clock.overdue:
            self._interrupt.set()

    @property
    def stage_still_running(self) -> bool:
        """Whether a stage abandoned on shutdown is still running in the worker thread."""
        return self._abandoned_work is not None and not self._abandoned_work.done()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    def run(self, *, max_messages: int | None = None, timeout: float | None = None) -> RunStats:
        """Consume until stopped, or until ``max_messages`` were processed or ``timeout`` passed."""
        stats = RunStats()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._subscribe()
        log.info("%s consuming %s", self.service.name, ", ".join(self.service.consumes))
        while not self._stop.is_set():
            if max_messages is not None and stats.consumed >= max_messages:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            message = self._consumer.poll(self.settings.runner.poll_timeout_s)
            self._rejoin_if_stranded()
            if message is None or self._stop.is_set():
                continue  # one fetched as the stop came is left uncommitted, for the next owner
            error = message.error()
            if error is not None:
                self._log_consumer_error(error)
                continue
            stats.consumed += 1
            self._process(message, stats)
            if self._fatal is not None:
                raise KafkaException(self._fatal)
        return stats

    def close(self) -> None:
        """Leave the group, flush the producer and release the service."""
        # An abandoned stage still running is not waited for: see landfall/shutdown.py.
        self._worker.shutdown(wait=not self.stage_still_running, cancel_futures=True)
        try:
            self._consumer.close()
        finally:
            self._producer.flush(10)
            self.service.close()

    # -- one message ------------------------------------------------------------

    def _process(self, message: Message, stats: RunStats) -> None:
        topic = message.topic() or ""
        inbound = message.headers()
        attributes: dict[str, str | int] = {
            # OpenTelemetry's messaging semantic conventions (Kafka).
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(message.partition() or 0),
            "messaging.kafka.offset": message.offset() or 0,
            "messaging.operation.type": "process",
            "messaging.operation.name": "consume",
            "messaging.consumer.group.name": f"{self.settings.kafka.group_prefix}-"
            f"{self.service.name}",
        }
        # The consume span continues the trace the event's producer started.
        with (
            self._paused_while_processing(message),
            attached(extract_context(inbound if isinstance(inbound, list) else None)),
            tracer().start_as_current_span(
                f"consume {topic}", kind=SpanKind.CONSUMER, attributes=attributes
            ),
        ):
            self._process_traced(message, topic, stats)
        self._lag.maybe_update(self._consumer)

    @contextmanager
    def _paused_while_processing(self, message: Message) -> Iterator[None]:
        """Keep every other message back from poll to commit of ``message``.

        Work that polls meanwhile (a stage, a backoff before a redo) pauses the whole
        assignment first (:meth:`_hold`): paused, the consumer can be polled, which keeps
        it in the group and serves rebalances, without handing out another message
        before this one is committed or rewound. Everything paused is resumed after.
        A message set aside without polling (a dead letter) pauses nothing: a pause
        drops what the client fetched ahead and a resume waits out a fetch, which
        would cap a flood of bad messages at two a second.
        """
        self._in_flight = (message.topic() or "", message.partition() or 0)
        self._in_flight_revoked = False
        self._rewound = {}
        self._interrupt.clear()
        if self._stop.is_set():
            self._interrupt.set()
        try:
            yield
        finally:
            self._in_flight = None
            paused = set(self._paused)
            if self._holding:
                paused |= {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
            self._holding = False
            self._paused = set()
            self._resume([TopicPartition(topic, number) for topic, number in sorted(paused)])

    def _hold(self) -> None:
        """Pause the whole assignment for the rest of the message in flight (once)."""
        if not self._holding:
            self._holding = True
            self._pause(self._consumer.assignment())

    def _process_traced(self, message: Message, topic: str, stats: RunStats) -> None:
        starts = self._ledger.unfinished_starts(message)
        if starts >= self.settings.runner.max_crashes:
            reason = (
                f"poison pill: {starts} processes started this message and died before "
                f"finishing it (runner.max_crashes = {self.settings.runner.max_crashes})"
            )
            self._set_aside(message, stats, reason, "poison_pill")
            return
        self._ledger.mark_started(message, starts)
        try:
            event_type, record = decode_incoming(
                self.codec,
                self.settings,
                topic,
                message.value(),
                self.service.consumes.get(topic, frozenset()),
                self.service.name,
            )
        except InvalidEventError as exc:
            if topic in getattr(self.service, "dead_letter_topics", (topic,)):
                self._set_aside(message, stats, str(exc), "dead_letter")
            else:  # another service reads this topic and dead-letters it: one letter
                log.info("skipping %s, dead-lettered by its stage: %s", _where(message), exc)
                self._publish_then_commit(message, stats, "unknown", lambda: None)
            return
        if event_type is EventType.DATA_LANDED:
            # Ids derived from the message's place in the log: a redelivery is the same run.
            kind, logged_ms = message.timestamp()
            record = complete_landed_event(
                record,
                origin=_where(message),
                logged_ms=logged_ms if kind != TIMESTAMP_NOT_AVAILABLE else None,
            )
        # Read again on purpose (landfall replay): the work is redone, under new event ids,
        # and a batch handled before the replay as a new run of it.
        note = self._ledger.read(message)
        if note.replay is not None and note.redoes(message.offset() or 0):
            record = {**record, "run_id": replayed_run_id(str(record["run_id"]), note.replay)}
        with replaying(note.replay):
            self._handle_and_publish(message, topic, event_type, record, starts, stats)

    def _handle_and_publish(
        self,
        message: Message,
        topic: str,
        event_type: EventType,
        record: dict[str, Any],
        starts: int,
        stats: RunStats,
    ) -> None:
        dataset = dataset_label(self.settings, record.get("dataset"))
        started = time.monotonic()
        BATCHES_IN_PROGRESS.labels(self.service.name).inc()
        try:
            parent = otel_context.get_current()
            outgoing = self._while_polling(
                lambda: self._handle_traced(parent, event_type, record, dataset)
            )
        except _Revoked:
            log.warning(
                "%s was revoked while %s worked on it: result dropped, nothing published or "
                "committed; the partition's next owner redoes the batch",
                _where(message),
                self.service.name,
            )
            trace.get_current_span().set_status(Status(StatusCode.ERROR, "partition revoked"))
            PROCESSING_ERRORS.labels(self.service.name, dataset, "revoked").inc()
            stats.revoked += 1
            return
        except Abandoned:
            log.warning("abandoned %s on shutdown; it stays uncommitted", _where(message))
            self._ledger.unmark(message, starts)  # a clean stop is not a crash
            stats.abandoned += 1
            return
        except Exception as exc:
            if not isinstance(exc, StageFailedError | RetryableError):
                log.exception("%s failed on %s", self.service.name, _where(message))
            failure = batch_failed(
                exc,
                event_type,
                record,
                settings=self.settings,
                producer=self.producer_name,
                stage=self.service.stage,
            )
            outgoing = [failure]
        finally:
            BATCHES_IN_PROGRESS.labels(self.service.name).dec()
        if not self._publish_then_commit(message, stats, dataset, lambda: self._publish(outgoing)):
            return
        failed = any(o.event_type is EventType.BATCH_FAILED for o in outgoing)
        if failed:
            stats.failed += 1
        else:
            stats.handled += 1
        stats.produced.extend(outgoing)
        count_batch(self.service.name, dataset, outgoing, failed, time.monotonic() - started)

    def _set_aside(self, message: Message, stats: RunStats, reason: str, kind: str) -> None:
        """Dead-letter ``message`` with ``reason``, then commit past it (``kind``: the metric)."""
        log.warning("dead-lettering %s: %s", _where(message), reason)
        trace.get_current_span().set_status(Status(StatusCode.ERROR, reason))
        if self._publish_then_commit(
            message, stats, "unknown", lambda: self._publish_dead_letter(message, reason)
        ):
            PROCESSING_ERRORS.labels(self.service.name, "unknown", kind).inc()
            stats.dead_lettered += 1

    def _handle_traced(
        self, parent: Context, event_type: EventType, record: dict[str, Any], dataset: str
    ) -> list[Outgoing]:
        """The stage's work, in the worker thread, as a span of the consume span's trace."""
        with (
            attached(parent),
            # One name per stage (the batch is in the attributes): bounded cardinality.
            tracer().start_as_current_span(
                self.service.stage,
                attributes=run_attributes(self.service.name, event_type, record),
            ) as span,
        ):
            outgoing = call_with_retries(
                lambda: self.service.handle(event_type, record),
                self.settings,
                service=self.service.name,
                dataset=dataset,
                interrupt=self._interrupt,
            )
            for event in outgoing:
                for key in ("rows", "rows_landed", "rows_valid", "rows_quarantined"):
                    if isinstance(event.record.get(key), int):
                        span.set_attribute(f"landfall.{key}", event.record[key])
                for key in ("model_name", "model_version", "model_uri"):
                    if event.record.get(key):
                        span.set_attribute(f"landfall.{key}", str(event.record[key]))
            return outgoing

    def _while_polling(self, work: Callable[[], list[Outgoing]]) -> list[Outgoing]:
        """Run ``work`` in the worker thread; poll meanwhile so the group keeps us.

        Raises _Revoked, whatever the work returned, when a rebalance took the
        partition of the message in flight away meanwhile, and Abandoned when a stop's
        grace period ran out before the work was done.
        """
        # The worker sees this thread's context variables (the replay being handled).
        self._hold()
        future: Future[list[Outgoing]] = self._worker.submit(copy_context().run, work)
        self._stage_running = True
        abandoned_at: float | None = None
        try:
            while True:
                # Waiting on the future, not in poll(), wakes up the moment the work
                # is done: its result is published without waiting out a poll timeout.
                wait_for_future([future], timeout=self.settings.runner.poll_timeout_s)
                # Serves rebalance callbacks (a revocation cancels the stage) and keeps
                # within max.poll.interval.ms however long the stage runs.
                self._poll_paused(0)
                if future.done():
                    break
                if self._stop.is_set() and self._stop_clock.overdue:
                    if abandoned_at is None:
                        abandoned_at = time.monotonic()
                        self._abandon_stage()
                    elif time.monotonic() - abandoned_at > ABANDON_WAIT_S:
                        break  # it does not unwind: the process goes without it
                    # At every round: a cancel reaches only the jobs running then, and a
                    # stage cancelled between two jobs would run its next one to the end.
                    self._cancel_stage()
        finally:
            self._stage_running = False
        if self._in_flight_revoked and future.done():
            future.exception()  # read, so an error of the dropped work is not reported
            raise _Revoked()
        if abandoned_at is not None:
            # Whatever it returns, or returned just now, is dropped.
            self._abandoned_work = future
            raise Abandoned()
        return future.result()

    def _abandon_stage(self) -> None:
        """The stop's grace period is over (or a second stop came): give the stage up."""
        log.warning(
            "%s is stopping and its stage in flight is past its grace period: cancelling "
            "%s; nothing of it is published or committed",
            self.service.name,
            self.service.stage,
        )
        self._interrupt.set()

    def _cancel_stage(self) -> None:
        try:
            self.service.cancel()
        except Exception:
            log.exception("cancelling %s failed", self.service.stage)

    # -- pausing, rewinding and rebalancing -------------------------------------

    def _poll_paused(self, timeout: float) -> None:
        """Poll while the assignment is paused: serve rebalances, rewind any stray."""
        stray = self._consumer.poll(timeout)
        if stray is None:
            return
        error = stray.error()
        if error is not None:
            if error.fatal():
                # Raised from here it would pass for the stage's own failure.
                self._fatal = self._fatal or error
            else:
                self._log_consumer_error(error)
            return
        # Fetched before the pause took effect, or from a partition that came in a
        # rebalance: rewind it so it comes back once the message in flight is done.
        topic, partition = stray.topic() or "", stray.partition() or 0
        self._rewind(topic, partition, stray.offset() or 0)
        self._pause([TopicPartition(topic, partition)])

    def _rewind(self, topic: str, partition: int, offset: int) -> None:
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

    def _pause(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        self._paused.update((tp.topic, tp.partition) for tp in partitions)
        try:
            self._consumer.pause(partitions)
        except KafkaException as exc:
            # A partition that left in a rebalance meanwhile: strays are rewound anyway.
            log.info("pausing %s failed: %s", _names(partitions), exc)

    def _resume(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        try:
            self._consumer.resume(partitions)
        except KafkaException as exc:
            log.info("resuming %s failed: %s", _names(partitions), exc)

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            list(self.service.consumes),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: partitions handed to this instance.

        The partitions are assigned here, then their pause state set explicitly: while
        a message is in flight they are paused at once, so none of their messages is
        handed out before that one is committed; otherwise they are resumed, in case a
        pause from before they were taken away still clung to them.
        """
        log.info("%s assigned %s", self.service.name, _names(partitions))
        self._lost_at = None  # back in the group
        if not partitions:
            return  # the client records the (unchanged) assignment itself
        try:
            self._commit_what_failed(consumer, partitions)
            self._assign(consumer, partitions)
            if self._in_flight is not None:
                self._pause(partitions)
            else:
                consumer.resume(partitions)
        except Exception:
            # Raised here, it would escape poll() and the loop; strays are rewound.
            log.exception("setting up newly assigned %s failed", _names(partitions))

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

    def _rejoin_if_stranded(self) -> None:
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
        patience = max(3 * self.settings.kafka.session_timeout_ms / 1000, 20.0)
        if time.monotonic() - self._lost_at < patience:
            return
        log.warning(
            "%s has been outside its consumer group for %.0fs since its partitions were "
            "lost; subscribing again to rejoin",
            self.service.name,
            time.monotonic() - self._lost_at,
        )
        self._lost_at = time.monotonic()
        try:
            self._consumer.unsubscribe()
            self._subscribe()
        except KafkaException as exc:
            log.warning("subscribing again failed (tried again later): %s", exc)

    def _taken_away(self, partitions: list[TopicPartition], how: str) -> None:
        log.info("%s %s %s", self.service.name, how, _names(partitions))
        if self._in_flight is None or self._in_flight_revoked:
            return
        if not any((tp.topic, tp.partition) == self._in_flight for tp in partitions):
            return
        # Another instance may own the partition now and redo the batch: this one's
        # result must not be published or committed, so stop spending on it.
        self._in_flight_revoked = True
        if self._stage_running:
            log.warning(
                "%s/%d %s mid-stage: cancelling %s", *self._in_flight, how, self.service.stage
            )
            self._interrupt.set()
            try:
                self.service.cancel()
            except Exception:
                # Raised here, it would escape poll() and the loop.
                log.exception("cancelling %s failed", self.service.stage)

    # -- producing and committing ----------------------------------------------

    def _publish_then_commit(
        self, message: Message, stats: RunStats, dataset: str, publish: Callable[[], None]
    ) -> bool:
        """Publish what ``message`` produced, then commit it; False if it was rewound instead.

        A publish the broker did not acknowledge never kills the service: the message
        stays uncommitted, the consumer is rewound to it and, after a backoff that
        grows while publishing keeps failing, it comes back and its batch is redone.
        """
        if self._in_flight_revoked:
            return False  # the partition moved while the message waited: not ours to publish
        try:
            publish()
        except RetryableError as exc:
            stats.unpublished += 1
            PROCESSING_ERRORS.labels(self.service.name, dataset, "unpublished").inc()
            self._redo_later(message, exc)
            return False
        self._unpublished_in_a_row = 0
        self._commit(message)
        return True

    def _redo_later(self, message: Message, exc: RetryableError) -> None:
        """Rewind to ``message`` and wait a backoff, polling, before it comes back."""
        self._hold()
        self._unpublished_in_a_row += 1
        delay = backoff_s(self.settings.runner, self._unpublished_in_a_row)
        log.error(
            "%s not committed: %s; rewound, its batch is redone in %.1fs",
            _where(message),
            exc,
            delay,
        )
        trace.get_current_span().set_status(Status(StatusCode.ERROR, str(exc)[:500]))
        self._rewind(message.topic() or "", message.partition() or 0, message.offset() or 0)
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and not self._in_flight_revoked:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._poll_paused(min(left, self.settings.runner.poll_timeout_s))

    def _publish(self, outgoing: Sequence[Outgoing]) -> None:
        for event in outgoing:
            value = self.codec.encode(event.event_type, event.record, topic=event.topic)
            with produce_span(event.topic, event.event_type) as headers:
                self._produce_acknowledged(event.topic, partition_key(event.record), value, headers)

    def _publish_dead_letter(self, message: Message, reason: str) -> None:
        inbound = message.headers()
        letter = dead_letter(
            message.value(),
            inbound if isinstance(inbound, list) else [],
            reason=reason,
            source=_where(message),
            service=self.service.name,
            keep_bytes=self.settings.runner.dead_letter_max_bytes,
        )
        headers: Headers = list(letter.headers)
        self._produce_acknowledged(self._dead_letter_topic, message.key(), letter.value, headers)

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
        self._producer.flush(self.settings.runner.publish_timeout_s + _VERDICT_GRACE_S)
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
            f"{self.settings.runner.publish_timeout_s:g}s: {error or 'no verdict'}"
        )

    def _commit(self, message: Message) -> None:
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
            # if the partition comes back here, the commit is made then (_on_assign).
            log.warning("offset commit for %s failed: %s", _where(message), exc)
            self._uncommitted[key] = max(self._uncommitted.get(key, 0), following)
        else:
            self._ledger.finished(message)
            if self._uncommitted.get(key, following) <= following:
                self._uncommitted.pop(key, None)

    def _commit_what_failed(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
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
                log.info("committed %s now, after the commit failed", _names(behind))
        except KafkaException as exc:
            log.warning("could not commit %s now either: %s", _names(pending), exc)

    def _log_consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() in _REFUSED:
            # A missing ACL or a refused login never heals by polling again: stop with
            # the one line that names the setting or the grant to fix.
            group = f"{self.settings.kafka.group_prefix}-{self.service.name}"
            explained = explain_kafka_error(
                error,
                str(self.settings.kafka.bootstrap),
                kafka_client_config(self.settings),
                action=f"consume as group {group!r}",
                resource=group,
            )
            if explained is not None:
                raise ConfigError(explained)
        if error.fatal():
            raise KafkaException(error)
        log.warning("%s consumer: %s", self.service.name, error)


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


def _names(partitions: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions) or "nothing"


def _where(message: Message) -> str:
    return f"{message.topic()}/{message.partition()}@{message.offset()}"
