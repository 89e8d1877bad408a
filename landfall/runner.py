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
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_future
from contextvars import copy_context
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, Message

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.deliveries import replayed_run_id, replaying
from landfall.errors import InvalidEventError, RetryableError, StageFailedError
from landfall.hooks import Delivery, RunHooks, telemetry_hooks
from landfall.ingress import complete_landed_event
from landfall.kafka_clients import event_codec
from landfall.logs import batch_logging
from landfall.poison import StartLedger
from landfall.processing import (
    Abandoned,
    Outgoing,
    backoff_s,
    batch_failed,
    call_with_retries,
    decode_incoming,
)
from landfall.runner_output import OffsetCommits, Publisher
from landfall.runner_partitions import (
    Partitions,
    check_consumer_error,
    runner_consumer_config,
    where,
)
from landfall.shutdown import ABANDON_WAIT_S, StopClock
from landfall.telemetry import dataset_label

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


class Runner:
    """Runs one service against the broker until stopped.

    What it records (metrics, spans) it tells ``hooks`` (default: the service's
    Prometheus metrics and OpenTelemetry spans, :func:`landfall.hooks.telemetry_hooks`).
    """

    def __init__(
        self,
        service: Service,
        settings: Settings,
        *,
        codec: EventCodec | None = None,
        producer_name: str | None = None,
        hooks: RunHooks | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.codec = codec or event_codec(settings)
        self.producer_name = producer_name or service.name
        self.hooks = hooks or telemetry_hooks(service.name, service.stage)
        self._stop = threading.Event()
        self._stop_clock = StopClock()
        # The work of a stage abandoned on shutdown, which may still be unwinding.
        self._abandoned_work: Future[list[Outgoing]] | None = None
        self._group = f"{settings.kafka.group_prefix}-{service.name}"
        consumer_config = runner_consumer_config(settings, self._group)
        self._consumer = Consumer(consumer_config)
        self._ledger = StartLedger(self._consumer)
        self._commits = OffsetCommits(self._consumer, self._ledger)
        self._partitions = Partitions(
            self._consumer,
            consumer_config,
            settings,
            service=service.name,
            topics=list(service.consumes),
            on_taken_away=self._cancel_revoked_stage,
            on_assigned=self._commits.commit_what_failed,
        )
        self._publisher = Publisher(settings, self.codec, self.hooks, service.name)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{service.name}-stage")
        # Set, the stage in flight gives up (a stop, or its partition moved): the only
        # state the worker thread reads. The rest is the main thread's.
        self._interrupt = threading.Event()
        self._stage_running = False
        self._unpublished_in_a_row = 0

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
        self._partitions.subscribe()
        log.info("%s consuming %s", self.service.name, ", ".join(self.service.consumes))
        while not self._stop.is_set():
            if max_messages is not None and stats.consumed >= max_messages:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            message = self._consumer.poll(self.settings.runner.poll_timeout_s)
            self._partitions.rejoin_if_stranded()
            if message is None or self._stop.is_set():
                continue  # one fetched as the stop came is left uncommitted, for the next owner
            error = message.error()
            if error is not None:
                check_consumer_error(error, self.settings, self.service.name)
                continue
            stats.consumed += 1
            self._process(message, stats)
            if self._partitions.fatal is not None:
                raise KafkaException(self._partitions.fatal)
        return stats

    def close(self) -> None:
        """Leave the group, flush the producer and release the service."""
        # An abandoned stage still running is not waited for: see landfall/shutdown.py.
        self._worker.shutdown(wait=not self.stage_still_running, cancel_futures=True)
        try:
            self._consumer.close()
        finally:
            self._publisher.flush(10)
            self.service.close()

    # -- one message ------------------------------------------------------------

    def _process(self, message: Message, stats: RunStats) -> None:
        """Step 1 to 5 for one message, with every other message held back meanwhile."""
        self._interrupt.clear()
        if self._stop.is_set():
            self._interrupt.set()
        inbound = message.headers()
        delivery = Delivery(
            topic=message.topic() or "",
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            headers=inbound if isinstance(inbound, list) else None,
            consumer_group=self._group,
        )
        with self._partitions.one_in_flight(message), self.hooks.consuming(delivery):
            self._decode_then_handle(message, delivery.topic, stats)
        self.hooks.after_message(self._consumer)

    def _decode_then_handle(self, message: Message, topic: str, stats: RunStats) -> None:
        """Step 1: set aside what cannot be handled; hand the rest on, as the run it is."""
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
                log.info("skipping %s, dead-lettered by its stage: %s", where(message), exc)
                self._publish_then_commit(message, stats, "unknown", lambda: None)
            return
        if event_type is EventType.DATA_LANDED:
            # Ids derived from the message's place in the log: a redelivery is the same run.
            kind, logged_ms = message.timestamp()
            record = complete_landed_event(
                record,
                origin=where(message),
                logged_ms=logged_ms if kind != TIMESTAMP_NOT_AVAILABLE else None,
            )
        # Read again on purpose (landfall replay): the work is redone, under new event ids,
        # and a batch handled before the replay as a new run of it.
        note = self._ledger.read(message)
        if note.replay is not None and note.redoes(message.offset() or 0):
            record = {**record, "run_id": replayed_run_id(str(record["run_id"]), note.replay)}
        with replaying(note.replay), batch_logging(record):
            self._handle_and_publish(message, event_type, record, starts, stats)

    def _handle_and_publish(
        self,
        message: Message,
        event_type: EventType,
        record: dict[str, Any],
        starts: int,
        stats: RunStats,
    ) -> None:
        """Steps 2 to 5: the stage's work in the worker, its events published, then commit."""
        dataset = dataset_label(self.settings, record.get("dataset"))
        started = time.monotonic()
        self.hooks.on_stage_start(dataset)
        try:
            outgoing = self._while_polling(lambda: self._handle(event_type, record, dataset))
        except _Revoked:
            log.warning(
                "%s was revoked while %s worked on it: result dropped, nothing published or "
                "committed; the partition's next owner redoes the batch",
                where(message),
                self.service.name,
            )
            self.hooks.on_revoked(dataset)
            stats.revoked += 1
            return
        except Abandoned:
            log.warning("abandoned %s on shutdown; it stays uncommitted", where(message))
            self._ledger.unmark(message, starts)  # a clean stop is not a crash
            self.hooks.on_abandoned(dataset)
            stats.abandoned += 1
            return
        except Exception as exc:
            if not isinstance(exc, StageFailedError | RetryableError):
                log.exception("%s failed on %s", self.service.name, where(message))
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
            self.hooks.on_stage_end(dataset)
        publish = partial(self._publisher.publish, outgoing)
        if not self._publish_then_commit(message, stats, dataset, publish):
            return
        failed = any(o.event_type is EventType.BATCH_FAILED for o in outgoing)
        if failed:
            stats.failed += 1
        else:
            stats.handled += 1
        stats.produced.extend(outgoing)
        took = time.monotonic() - started
        self.hooks.on_batch_done(dataset, outgoing, failed, took)
        log.info(
            "%s of %s/%s: %s in %.1fs, offset committed",
            self.service.stage, record.get("dataset"), record.get("partition"),
            ", ".join(o.event_type.short_name for o in outgoing) or "nothing published", took,
        )  # fmt: skip

    def _set_aside(self, message: Message, stats: RunStats, reason: str, kind: str) -> None:
        """Dead-letter ``message`` with ``reason``, then commit past it (``kind``: why)."""
        log.warning("dead-lettering %s: %s", where(message), reason)
        if self._publish_then_commit(
            message, stats, "unknown", lambda: self._publisher.dead_letter(message, reason)
        ):
            self.hooks.on_dead_letter(kind, reason)
            stats.dead_lettered += 1

    def _handle(
        self, event_type: EventType, record: dict[str, Any], dataset: str
    ) -> list[Outgoing]:
        """The stage's work, in the worker thread (in a copy of the loop's context)."""
        with self.hooks.working(event_type, record):
            outgoing = call_with_retries(
                lambda: self.service.handle(event_type, record),
                self.settings,
                service=self.service.name,
                dataset=dataset,
                interrupt=self._interrupt,
                hooks=self.hooks,
            )
            self.hooks.on_stage_result(outgoing)
            return outgoing

    def _while_polling(self, work: Callable[[], list[Outgoing]]) -> list[Outgoing]:
        """Run ``work`` in the worker thread; poll meanwhile so the group keeps us.

        Raises _Revoked, whatever the work returned, when a rebalance took the
        partition of the message in flight away meanwhile, and Abandoned when a stop's
        grace period ran out before the work was done.
        """
        # The worker sees this thread's context variables (the replay being handled,
        # the consume span its own span hangs under).
        self._partitions.hold()
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
                self._partitions.poll_paused(0)
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
        if self._partitions.revoked and future.done():
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
        # Never raises: called inside poll() (a rebalance callback) it would escape the loop.
        try:
            self.service.cancel()
        except Exception:
            log.exception("cancelling %s failed", self.service.stage)

    def _cancel_revoked_stage(self, how: str) -> None:
        """A rebalance took the partition in flight away: stop spending on its stage."""
        if not self._stage_running or self._partitions.in_flight is None:
            return
        log.warning(
            "%s/%d %s mid-stage: cancelling %s",
            *self._partitions.in_flight,
            how,
            self.service.stage,
        )
        self._interrupt.set()
        self._cancel_stage()

    # -- publishing and committing ----------------------------------------------

    def _publish_then_commit(
        self, message: Message, stats: RunStats, dataset: str, publish: Callable[[], None]
    ) -> bool:
        """Publish what ``message`` produced, then commit it; False if it was rewound instead.

        A publish the broker did not acknowledge never kills the service: the message
        stays uncommitted, the consumer is rewound to it and, after a backoff that
        grows while publishing keeps failing, it comes back and its batch is redone.
        """
        if self._partitions.revoked:
            return False  # the partition moved while the message waited: not ours to publish
        try:
            publish()
        except RetryableError as exc:
            stats.unpublished += 1
            self.hooks.on_unpublished(dataset, exc)
            self._redo_later(message, exc)
            return False
        self._unpublished_in_a_row = 0
        self._commit(message)
        return True

    def _commit(self, message: Message) -> None:
        """Step 5: commit past ``message``, whose events the broker acknowledged."""
        self._commits.commit(message)

    def _redo_later(self, message: Message, exc: RetryableError) -> None:
        """Rewind to ``message`` and wait a backoff, polling, before it comes back."""
        self._partitions.hold()
        self._unpublished_in_a_row += 1
        delay = backoff_s(self.settings.runner, self._unpublished_in_a_row)
        log.error(
            "%s not committed: %s; rewound, its batch is redone in %.1fs",
            where(message),
            exc,
            delay,
        )
        self._partitions.rewind(
            message.topic() or "", message.partition() or 0, message.offset() or 0
        )
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and not self._partitions.revoked:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._partitions.poll_paused(min(left, self.settings.runner.poll_timeout_s))
