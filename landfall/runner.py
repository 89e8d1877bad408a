"""The one consume -> handle -> produce -> commit loop that every service runs.

A service only says which topics it reads and how it turns an event into outgoing
events (``Service.handle``); the runner owns everything Kafka (DESIGN.md §4):

1. poll one message and decode it; what cannot be decoded, or is not an event this
   service handles, goes to the dead-letter topic with its original bytes and headers;
2. run the handler in a worker thread while the main thread keeps polling with the
   assignment paused, so a Spark job of many minutes never costs the group membership;
3. turn failures into events: a ``StageFailedError`` (or an unexpected exception)
   becomes batch-failed; a ``RetryableError`` is retried with bounded backoff first;
4. produce the outgoing events and wait for the broker to acknowledge them;
5. only then commit the consumed offset.

Delivery is at least once; stages replace their outputs atomically and events carry
ids, so a redelivered message has the same effect as the first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from landfall.config import Settings
from landfall.contracts import EventCodec, EventType, follow_up, partition_key
from landfall.errors import InvalidEventError, LandfallError, RetryableError, StageFailedError
from landfall.ingress import complete_landed_event
from landfall.spark import spark_failure
from landfall.telemetry import (
    BATCH_DURATION,
    BATCHES_IN_PROGRESS,
    LAST_SUCCESS,
    PROCESSING_ERRORS,
    RECORDS_PROCESSED,
    ROWS_QUARANTINED,
    LagReporter,
    attached,
    dataset_label,
    extract_context,
    inject_context,
    tracer,
)

__all__ = ["Outgoing", "RunStats", "Runner", "Service", "kafka_client_config"]

log = logging.getLogger(__name__)

# Kafka record headers, as confluent-kafka hands them out and takes them.
Headers = list[tuple[str, str | bytes | None]]

DEAD_LETTER_REASON = "landfall.dead_letter.reason"
DEAD_LETTER_SOURCE = "landfall.dead_letter.source"
DEAD_LETTER_SERVICE = "landfall.dead_letter.service"


@dataclass(frozen=True)
class Outgoing:
    """An event a handler wants published, and where."""

    topic: str
    event_type: EventType
    record: dict[str, Any]


class Service(Protocol):
    """What a stage service gives the runner: its inputs and its handler."""

    name: str  # e.g. "validator": the consumer group and the producer name
    stage: str  # e.g. "validation": what batch-failed events name
    consumes: Mapping[str, frozenset[EventType]]  # topic -> the event types it may carry

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
    produced: list[Outgoing] = field(default_factory=list)


class _Abandoned(Exception):
    """The worker gave up because the service is shutting down."""


def kafka_client_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka settings every client shares, built in one place."""
    bootstrap = settings.kafka.bootstrap
    if not bootstrap:
        raise StageFailedError("no Kafka bootstrap configured (kafka.bootstrap)")
    return {"bootstrap.servers": bootstrap, **settings.kafka.client_config}


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
        self.codec = codec or EventCodec(settings.kafka.schema_registry_url)
        self.producer_name = producer_name or service.name
        self._stop = threading.Event()
        self._ingress_topic = settings.kafka.topics.landed.name
        self._dead_letter_topic = settings.kafka.topics.dead_letter.name
        self._failed_topic = settings.kafka.topics.failed.name
        common = kafka_client_config(settings)
        self._consumer = Consumer(
            {
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
        )
        self._producer = Producer({**common, "acks": "all", "linger.ms": 5})
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{service.name}-stage")
        self._lag = LagReporter(service.name)

    def stop(self) -> None:
        """Ask the loop to finish: the current batch is abandoned and not committed."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    def run(self, *, max_messages: int | None = None, timeout: float | None = None) -> RunStats:
        """Consume until stopped, or until ``max_messages`` were processed or ``timeout`` passed."""
        stats = RunStats()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._consumer.subscribe(list(self.service.consumes))
        log.info("%s consuming %s", self.service.name, ", ".join(self.service.consumes))
        while not self._stop.is_set():
            if max_messages is not None and stats.consumed >= max_messages:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            message = self._consumer.poll(self.settings.runner.poll_timeout_s)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                self._log_consumer_error(error)
                continue
            stats.consumed += 1
            self._process(message, stats)
        return stats

    def close(self) -> None:
        """Leave the group, flush the producer and release the service."""
        self._worker.shutdown(wait=True, cancel_futures=True)
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
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.kafka.destination.partition": message.partition() or 0,
            "messaging.kafka.message.offset": message.offset() or 0,
            "messaging.consumer.group.name": f"{self.settings.kafka.group_prefix}-"
            f"{self.service.name}",
        }
        # The consume span continues the trace the event's producer started.
        with (
            attached(extract_context(inbound if isinstance(inbound, list) else None)),
            tracer().start_as_current_span(
                f"consume {topic}", kind=SpanKind.CONSUMER, attributes=attributes
            ),
        ):
            self._process_traced(message, topic, stats)
        self._lag.maybe_update(self._consumer)

    def _process_traced(self, message: Message, topic: str, stats: RunStats) -> None:
        try:
            event_type, record = self.codec.decode(
                message.value(), topic=topic, accept_json=topic == self._ingress_topic
            )
            accepted = self.service.consumes.get(topic, frozenset())
            if event_type not in accepted:
                raise InvalidEventError(
                    f"topic {topic} carried a {event_type.short_name} event, but "
                    f"{self.service.name} handles only "
                    f"{', '.join(sorted(t.short_name for t in accepted)) or 'nothing'} there"
                )
        except InvalidEventError as exc:
            log.warning("dead-lettering %s: %s", _where(message), exc)
            trace.get_current_span().set_status(Status(StatusCode.ERROR, str(exc)))
            self._publish_dead_letter(message, str(exc))
            PROCESSING_ERRORS.labels(self.service.name, "unknown", "dead_letter").inc()
            stats.dead_lettered += 1
            self._commit(message)
            return
        if event_type is EventType.DATA_LANDED:
            record = complete_landed_event(record)
        dataset = dataset_label(self.settings, record.get("dataset"))
        started = time.monotonic()
        BATCHES_IN_PROGRESS.labels(self.service.name).inc()
        try:
            parent = otel_context.get_current()
            outgoing = self._while_polling(
                lambda: self._handle_traced(parent, event_type, record, dataset)
            )
        except _Abandoned:
            log.warning("abandoned %s on shutdown; it stays uncommitted", _where(message))
            stats.abandoned += 1
            return
        except StageFailedError as exc:
            outgoing = [self._failure(event_type, record, exc.reason, exc.retryable, exc.details)]
        except RetryableError as exc:
            reason = f"gave up after {self.settings.runner.max_attempts} attempts: {exc}"
            outgoing = [self._failure(event_type, record, reason, True)]
        except Exception as exc:
            log.exception("%s failed on %s", self.service.name, _where(message))
            outgoing = [self._failure(event_type, record, f"{type(exc).__name__}: {exc}", False)]
        finally:
            BATCHES_IN_PROGRESS.labels(self.service.name).dec()
        failed = any(o.event_type is EventType.BATCH_FAILED for o in outgoing)
        if failed:
            stats.failed += 1
        else:
            stats.handled += 1
        self._publish(outgoing)
        stats.produced.extend(outgoing)
        self._commit(message)
        self._count(dataset, outgoing, failed, time.monotonic() - started)

    def _handle_traced(
        self, parent: Context, event_type: EventType, record: dict[str, Any], dataset: str
    ) -> list[Outgoing]:
        """The stage's work, in the worker thread, as a span of the consume span's trace."""
        attributes = {
            "landfall.service": self.service.name,
            "landfall.dataset": str(record.get("dataset")),
            "landfall.partition": str(record.get("partition")),
            "landfall.batch_id": str(record.get("batch_id")),
            "landfall.run_id": str(record.get("run_id")),
            "landfall.event_type": event_type.value,
        }
        with (
            attached(parent),
            tracer().start_as_current_span(
                f"{self.service.stage} {record.get('dataset')}/{record.get('partition')}",
                attributes=attributes,
            ) as span,
        ):
            outgoing = self._handle_with_retries(event_type, record, dataset)
            for event in outgoing:
                for key in ("rows", "rows_landed", "rows_valid", "rows_quarantined"):
                    if isinstance(event.record.get(key), int):
                        span.set_attribute(f"landfall.{key}", event.record[key])
                for key in ("model_name", "model_version", "model_uri"):
                    if event.record.get(key):
                        span.set_attribute(f"landfall.{key}", str(event.record[key]))
            return outgoing

    def _count(
        self, dataset: str, outgoing: Sequence[Outgoing], failed: bool, seconds: float
    ) -> None:
        """The batch's metrics, once its events are published and its offset committed."""
        service = self.service.name
        BATCH_DURATION.labels(service, dataset, "failed" if failed else "succeeded").observe(
            seconds
        )
        if failed:
            PROCESSING_ERRORS.labels(service, dataset, "batch_failed").inc()
            return
        LAST_SUCCESS.labels(service, dataset).set(time.time())
        for event in outgoing:
            rows = _rows_processed(event.record)
            if rows:
                RECORDS_PROCESSED.labels(service, dataset).inc(rows)
            quarantined = event.record.get("rows_quarantined")
            if event.event_type is EventType.BATCH_VALIDATED and quarantined:
                ROWS_QUARANTINED.labels(service, dataset).inc(quarantined)

    def _handle_with_retries(
        self, event_type: EventType, record: dict[str, Any], dataset: str
    ) -> list[Outgoing]:
        runner = self.settings.runner
        for attempt in range(1, runner.max_attempts + 1):
            try:
                return self._attempt(event_type, record)
            except RetryableError as exc:
                if self._stop.is_set():
                    raise _Abandoned() from exc
                if attempt == runner.max_attempts:
                    raise
                PROCESSING_ERRORS.labels(self.service.name, dataset, "retry").inc()
                trace.get_current_span().add_event(
                    "retry", {"attempt": attempt, "error": str(exc)[:500]}
                )
                delay = min(runner.retry_backoff_s * 2 ** (attempt - 1), runner.retry_backoff_max_s)
                log.warning("attempt %d failed (%s); retrying in %.1fs", attempt, exc, delay)
                if self._stop.wait(delay):
                    raise _Abandoned() from exc
            except Exception:
                if self._stop.is_set():
                    raise _Abandoned() from None
                raise
        raise AssertionError("unreachable: the loop returns or raises")

    def _attempt(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """One call of the service; a failed Spark job is named as transient or not."""
        try:
            return self.service.handle(event_type, record)
        except LandfallError:
            raise
        except Exception as exc:
            translated = spark_failure(exc)
            if translated is None:
                raise
            raise translated from exc

    def _while_polling(self, work: Callable[[], list[Outgoing]]) -> list[Outgoing]:
        """Run ``work`` in the worker thread; poll meanwhile so the group keeps us."""
        assignment = self._consumer.assignment()
        self._consumer.pause(assignment)
        future: Future[list[Outgoing]] = self._worker.submit(work)
        cancelled = False
        try:
            while not future.done():
                stray = self._consumer.poll(self.settings.runner.poll_timeout_s)
                if stray is not None and not stray.error():
                    # Fetched before the pause took effect: rewind so it comes back later.
                    self._consumer.seek(
                        TopicPartition(
                            stray.topic() or "", stray.partition() or 0, stray.offset() or 0
                        )
                    )
                if self._stop.is_set() and not cancelled:
                    self.service.cancel()
                    cancelled = True
            return future.result()
        finally:
            self._consumer.resume(self._consumer.assignment())

    # -- producing and committing ----------------------------------------------

    def _failure(
        self,
        event_type: EventType,
        record: dict[str, Any],
        reason: str,
        retryable: bool,
        details: dict[str, str] | None = None,
    ) -> Outgoing:
        log.warning("batch %s failed in %s: %s", record.get("batch_id"), self.service.stage, reason)
        failed = follow_up(
            EventType.BATCH_FAILED,
            record,
            producer=self.producer_name,
            stage=self.service.stage,
            reason=reason,
            retryable=retryable,
            failed_event_type=event_type.value,
            details=details or {},
        )
        return Outgoing(self._failed_topic, EventType.BATCH_FAILED, failed)

    def _publish(self, outgoing: Sequence[Outgoing]) -> None:
        for event in outgoing:
            value = self.codec.encode(event.event_type, event.record, topic=event.topic)
            attributes = {
                "messaging.system": "kafka",
                "messaging.destination.name": event.topic,
                "landfall.event_type": event.event_type.value,
            }
            with tracer().start_as_current_span(
                f"produce {event.topic}", kind=SpanKind.PRODUCER, attributes=attributes
            ):
                # The event's consumers continue the trace from this span.
                headers: Headers = [
                    *inject_context(),
                    ("landfall.event_type", event.event_type.value.encode()),
                ]
                self._produce_acknowledged(event.topic, partition_key(event.record), value, headers)

    def _publish_dead_letter(self, message: Message, reason: str) -> None:
        inbound = message.headers()
        headers: Headers = [
            *(inbound if isinstance(inbound, list) else []),
            (DEAD_LETTER_REASON, reason.encode()),
            (DEAD_LETTER_SOURCE, _where(message).encode()),
            (DEAD_LETTER_SERVICE, self.service.name.encode()),
        ]
        self._produce_acknowledged(self._dead_letter_topic, message.key(), message.value(), headers)

    def _produce_acknowledged(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        """Produce one record and block until the broker acknowledged it."""
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        for attempt in range(1, self.settings.runner.max_attempts + 1):
            errors.clear()
            self._producer.produce(
                topic, value=value, key=key, headers=headers, on_delivery=on_delivery
            )
            remaining = self._producer.flush(30)
            if remaining == 0 and not errors:
                return
            log.warning("produce to %s not acknowledged (attempt %d): %s", topic, attempt, errors)
            time.sleep(min(self.settings.runner.retry_backoff_s * attempt, 10))
        # Not committing is the safe outcome: the input is redelivered after a restart.
        raise RetryableError(f"the broker did not acknowledge a record for {topic}: {errors}")

    def _commit(self, message: Message) -> None:
        try:
            self._consumer.commit(message=message, asynchronous=False)
        except KafkaException as exc:
            # Outputs are replaced atomically, so a redelivery after a lost commit
            # (e.g. the partition moved to another instance) has the same effect.
            log.warning("offset commit for %s failed: %s", _where(message), exc)

    def _log_consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("%s consumer: %s", self.service.name, error)


def _where(message: Message) -> str:
    return f"{message.topic()}/{message.partition()}@{message.offset()}"


def _rows_processed(record: Mapping[str, Any]) -> int:
    """The rows a completion event says its stage processed."""
    for key in ("rows_landed", "rows", "rows_scored"):
        value = record.get(key)
        if isinstance(value, int):
            return value
    return 0
