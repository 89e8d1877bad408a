"""What handling one event involves, whichever loop consumes it.

The shared runner (:mod:`landfall.runner`) and the faust reporter
(:mod:`services.reporter.app`) consume differently, but they decode and vet a message,
retry a transient fault, turn a failure into batch-failed, count a batch and trace a
produced event the same way, with the functions here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from landfall.config import RunnerSettings, Settings
from landfall.contracts import EventCodec, EventType, follow_up
from landfall.errors import InvalidEventError, LandfallError, RetryableError, StageFailedError
from landfall.object_store import store_failure
from landfall.redact import redact
from landfall.spark import spark_failure
from landfall.telemetry import (
    BATCH_DURATION,
    LAST_SUCCESS,
    PROCESSING_ERRORS,
    RECORDS_PROCESSED,
    ROWS_QUARANTINED,
    inject_context,
    trace_exemplar,
    tracer,
)

__all__ = [
    "Abandoned",
    "Headers",
    "Outgoing",
    "backoff_s",
    "batch_failed",
    "call_with_retries",
    "count_batch",
    "decode_incoming",
    "failure_of",
    "produce_span",
    "run_attributes",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Kafka record headers, as confluent-kafka hands them out and takes them.
Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class Outgoing:
    """An event a handler wants published, and where."""

    topic: str
    event_type: EventType
    record: dict[str, Any]


class Abandoned(Exception):
    """The work in flight gave up: its service is stopping (or lost the partition)."""


def decode_incoming(
    codec: EventCodec,
    settings: Settings,
    topic: str,
    value: bytes | None,
    accepted: frozenset[EventType],
    service: str,
) -> tuple[EventType, dict[str, Any]]:
    """Decode a message of ``topic`` and check it is an event ``service`` handles there.

    Raises InvalidEventError (the message is dead-lettered) for an oversized message,
    one that does not decode, or an event of another type.
    """
    size, limit = len(value or b""), settings.runner.max_message_bytes
    if size > limit:
        # Not decoded at all: parsing megabytes is what a hostile producer wants.
        raise InvalidEventError(
            f"message on topic {topic!r} is {size} bytes, over runner.max_message_bytes ({limit})"
        )
    event_type, record = codec.decode(
        value, topic=topic, accept_json=topic == settings.kafka.topics.landed.name
    )
    if event_type not in accepted:
        raise InvalidEventError(
            f"topic {topic} carried a {event_type.short_name} event, but {service} handles "
            f"only {', '.join(sorted(t.short_name for t in accepted)) or 'nothing'} there"
        )
    return event_type, record


def run_attributes(service: str, event_type: EventType, record: dict[str, Any]) -> dict[str, str]:
    """The attributes of the span of a service's work on one event: whose run, which batch."""
    return {
        "landfall.service": service,
        "landfall.dataset": str(record.get("dataset")),
        "landfall.partition": str(record.get("partition")),
        "landfall.batch_id": str(record.get("batch_id")),
        "landfall.run_id": str(record.get("run_id")),
        "landfall.event_type": event_type.value,
    }


def backoff_s(runner: RunnerSettings, attempt: int) -> float:
    """How long to wait after failed attempt number ``attempt`` (1, 2, ...): doubling, capped."""
    doubled = runner.retry_backoff_s * 2 ** min(attempt - 1, 30)
    return float(min(doubled, runner.retry_backoff_max_s))


def failure_of(exc: BaseException, settings: Settings) -> LandfallError | None:
    """A failure of Spark or of the lake's store in landfall's words; None: neither."""
    return spark_failure(exc) or store_failure(exc, settings.lake_uri, settings.object_store)


def call_with_retries(
    work: Callable[[], T],
    settings: Settings,
    *,
    service: str,
    dataset: str,
    interrupt: threading.Event,
) -> T:
    """Call ``work``, retrying a transient fault after a backoff (``runner.max_attempts``).

    Spark's failures and the object store's are named first (:func:`failure_of`): a
    lost executor is retried, a corrupt file is not. ``interrupt`` set (a stop past its
    grace, a partition taken away) ends the attempts with :class:`Abandoned`, also in
    the middle of a backoff. Runs in the caller's thread, inside the caller's span.
    """
    runner = settings.runner
    for attempt in range(1, runner.max_attempts + 1):
        try:
            try:
                return work()
            except LandfallError:
                raise
            except Exception as exc:
                translated = failure_of(exc, settings)
                if translated is None:
                    raise
                raise translated from exc
        except RetryableError as exc:
            if interrupt.is_set():
                raise Abandoned() from exc
            if attempt == runner.max_attempts:
                raise
            PROCESSING_ERRORS.labels(service, dataset, "retry").inc()
            trace.get_current_span().add_event(
                "retry", {"attempt": attempt, "error": str(exc)[:500]}
            )
            delay = backoff_s(runner, attempt)
            log.warning("attempt %d failed (%s); retrying in %.1fs", attempt, exc, delay)
            if interrupt.wait(delay):
                raise Abandoned() from exc
        except Exception:
            if interrupt.is_set():
                raise Abandoned() from None
            raise
    raise AssertionError("unreachable: the loop returns or raises")


def batch_failed(
    exc: Exception,
    event_type: EventType,
    record: dict[str, Any],
    *,
    settings: Settings,
    producer: str,
    stage: str,
) -> Outgoing:
    """The batch-failed event for a handler that raised ``exc`` on ``record``.

    A StageFailedError says why and whether a retry may help; a RetryableError that
    outlived its attempts may pass on a retry; anything else is named by its type.
    """
    details: dict[str, str] = {}
    if isinstance(exc, StageFailedError):
        reason, retryable, details = exc.reason, exc.retryable, dict(exc.details or {})
    elif isinstance(exc, RetryableError):
        reason = f"gave up after {settings.runner.max_attempts} attempts: {exc}"
        retryable = True
    else:
        reason, retryable = f"{type(exc).__name__}: {exc}", False
    # What a stage's error says travels into events, reports, the results DB and logs;
    # a secret or a URL with credentials in it (a registry, a database) must not.
    reason = redact(reason)
    details = {key: redact(value) for key, value in details.items()}
    log.warning("batch %s failed in %s: %s", record.get("batch_id"), stage, reason)
    failed = follow_up(
        EventType.BATCH_FAILED,
        record,
        producer=producer,
        stage=stage,
        reason=reason,
        retryable=retryable,
        failed_event_type=event_type.value,
        details=details,
    )
    return Outgoing(settings.kafka.topics.failed.name, EventType.BATCH_FAILED, failed)


# The field of each completion event that says how many records its stage processed.
_ROWS_FIELD = {
    EventType.BATCH_VALIDATED: "rows_landed",
    EventType.BATCH_FEATURIZED: "rows",
    EventType.BATCH_PREDICTED: "rows",
    EventType.BATCH_REPORTED: "rows_scored",
}


def count_batch(
    service: str, dataset: str, outgoing: Sequence[Outgoing], failed: bool, seconds: float
) -> None:
    """A batch's metrics, once its events are published (call inside its consume span).

    The duration's exemplar names the batch's trace; a failed batch counts as an
    error, a successful one moves the dataset's last-success time and its row counts.
    """
    BATCH_DURATION.labels(service, dataset, "failed" if failed else "succeeded").observe(
        seconds, exemplar=trace_exemplar()
    )
    if failed:
        PROCESSING_ERRORS.labels(service, dataset, "batch_failed").inc()
        return
    LAST_SUCCESS.labels(service, dataset).set(time.time())
    for event in outgoing:
        rows = event.record.get(_ROWS_FIELD.get(event.event_type, "rows"))
        if isinstance(rows, int) and rows:
            RECORDS_PROCESSED.labels(service, dataset).inc(rows)
        quarantined = event.record.get("rows_quarantined")
        if event.event_type is EventType.BATCH_VALIDATED and quarantined:
            ROWS_QUARANTINED.labels(service, dataset).inc(quarantined)


@contextmanager
def produce_span(topic: str, event_type: EventType) -> Iterator[Headers]:
    """The span of producing one event; yields the headers that carry its trace on.

    The event's consumers continue the trace from this span.
    """
    attributes: Mapping[str, str] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": "send",
        "messaging.operation.name": "produce",
        "landfall.event_type": event_type.value,
    }
    with tracer().start_as_current_span(
        f"produce {topic}", kind=SpanKind.PRODUCER, attributes=attributes
    ):
        yield [*inject_context(), ("landfall.event_type", event_type.value.encode())]
