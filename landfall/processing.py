"""What handling one event involves, whichever loop consumes it.

The shared runner (:mod:`landfall.runner`) and the faust reporter
(:mod:`services.reporter.app`) consume differently, but they decode and vet a message,
retry a transient fault and turn a failure into batch-failed the same way, with the
functions here; what they record of it goes through the same hooks (landfall/hooks.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from landfall.backoff import backoff_delay, backoff_wait
from landfall.codec import EventCodec
from landfall.config import RunnerSettings, Settings
from landfall.contracts import EventType, follow_up
from landfall.errors import InvalidEventError, LandfallError, RetryableError, StageFailedError
from landfall.hooks import RunHooks, telemetry_hooks
from landfall.object_store import store_failure
from landfall.redact import redact
from landfall.spark import spark_failure

__all__ = [
    "Abandoned",
    "Headers",
    "Outgoing",
    "backoff_s",
    "batch_failed",
    "call_with_retries",
    "decode_incoming",
    "failure_of",
    "outgoing_headers",
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


def outgoing_headers(event: Outgoing, carried: Headers) -> Headers:
    """The headers of a published event: its type, after what telemetry carries on."""
    return [*carried, ("landfall.event_type", event.event_type.value.encode())]


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


def backoff_s(runner: RunnerSettings, attempt: int) -> float:
    """How long to wait after failed attempt number ``attempt`` (1, 2, ...): doubling from
    ``runner.retry_backoff_s`` up to ``runner.retry_backoff_max_s``, with jitter."""
    return backoff_delay(runner.retry_backoff_s, runner.retry_backoff_max_s, attempt)


def failure_of(exc: BaseException, settings: Settings) -> LandfallError | None:
    """A failure of Spark or of the lake's store in landfall's words; None: neither."""
    return spark_failure(exc) or store_failure(exc, settings.lake_uri, settings.object_store)


def _attempt(work: Callable[[], T], settings: Settings, interrupt: threading.Event) -> T:
    """One call of ``work``; its failure in landfall's words, or Abandoned if interrupted."""
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
    except Exception as exc:
        # Interrupted, the work may have failed only because it was (a cancelled
        # Spark job): no retry, whatever it raised.
        if interrupt.is_set():
            raise Abandoned() from exc
        raise


def call_with_retries(
    work: Callable[[], T],
    settings: Settings,
    *,
    service: str,
    dataset: str,
    interrupt: threading.Event,
    hooks: RunHooks | None = None,
) -> T:
    """Call ``work``, retrying a transient fault after a backoff (``runner.max_attempts``).

    Spark's failures and the object store's are named first (:func:`failure_of`): a
    lost executor is retried, a corrupt file is not. ``interrupt`` set (a stop past its
    grace, a partition taken away) ends the attempts with :class:`Abandoned`, also in
    the middle of a backoff. Runs in the caller's thread, inside the caller's span.
    Each retry is told to ``hooks`` (default: the service's metrics and spans).
    """
    if hooks is None:
        hooks = telemetry_hooks(service)
    on_retry = hooks.on_retry

    def before_backoff(state: RetryCallState) -> None:
        assert state.outcome is not None
        exc = state.outcome.exception()
        assert isinstance(exc, RetryableError)  # the only kind retried
        on_retry(dataset, state.attempt_number, exc)
        log.warning(
            "attempt %d failed (%s); retrying in %.1fs",
            state.attempt_number,
            exc,
            state.upcoming_sleep,
        )

    def back_off(seconds: float) -> None:
        if interrupt.wait(seconds):
            raise Abandoned()

    retrying = Retrying(
        stop=stop_after_attempt(settings.runner.max_attempts),
        wait=backoff_wait(settings.runner.retry_backoff_s, settings.runner.retry_backoff_max_s),
        retry=retry_if_exception_type(RetryableError),
        before_sleep=before_backoff,
        sleep=back_off,
        reraise=True,  # the last RetryableError itself, not tenacity's RetryError
    )
    return retrying(_attempt, work, settings, interrupt)


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
