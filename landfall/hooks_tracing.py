"""The loops' hooks as OpenTelemetry spans: one trace per batch run, across the services.

For each message: a consumer span ``consume <topic>`` continuing the trace its
producer started (from the W3C headers), with a child span named after the stage for
the stage's work (the batch, its row counts and model version as attributes) and a
producer span ``produce <topic>`` per event published, whose context travels on in
the event's headers. Span names stay few (no dataset, partition or run in them);
attributes follow OpenTelemetry's messaging semantic conventions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from landfall.contracts import EventType
from landfall.telemetry import attached, extract_context, inject_context, tracer

if TYPE_CHECKING:
    from landfall.hooks import Delivery
    from landfall.processing import Headers, Outgoing

__all__ = ["TracingHooks", "run_attributes"]

# Figures of a stage's outgoing events worth seeing on its span.
_COUNT_FIELDS = ("rows", "rows_landed", "rows_valid", "rows_quarantined")
_TEXT_FIELDS = ("model_name", "model_version", "model_uri", "status")


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


def _mark_error(description: str) -> None:
    trace.get_current_span().set_status(Status(StatusCode.ERROR, description[:500]))


class TracingHooks:
    """Spans of one service's loop; ``stage`` names the span of its work (default: service).

    ``provider`` is the tracer provider to use; by default the process's, which
    :func:`landfall.telemetry.init_telemetry` sets up (asked at each span, so hooks
    made before that still trace).
    """

    def __init__(
        self,
        service: str,
        stage: str | None = None,
        *,
        provider: trace.TracerProvider | None = None,
    ) -> None:
        self.service = service
        self.stage = stage
        self._provider = provider

    def _tracer(self) -> trace.Tracer:
        return tracer() if self._provider is None else self._provider.get_tracer("landfall")

    @contextmanager
    def consuming(self, delivery: Delivery) -> Iterator[None]:
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.destination.name": delivery.topic,
            "messaging.operation.type": "process",
            "messaging.operation.name": "consume",
        }
        if delivery.partition is not None:
            attributes["messaging.destination.partition.id"] = str(delivery.partition)
        if delivery.offset is not None:
            attributes["messaging.kafka.offset"] = delivery.offset
        if delivery.consumer_group is not None:
            attributes["messaging.consumer.group.name"] = delivery.consumer_group
        # The consume span continues the trace the event's producer started.
        with (
            attached(extract_context(delivery.headers)),
            self._tracer().start_as_current_span(
                f"consume {delivery.topic}", kind=SpanKind.CONSUMER, attributes=attributes
            ),
        ):
            yield

    @contextmanager
    def working(self, event_type: EventType, record: dict[str, Any]) -> Iterator[None]:
        # Entered in the worker thread, which runs in a copy of the loop's context: the
        # span is a child of the consume span. An exception leaving it marks it failed.
        with self._tracer().start_as_current_span(
            self.stage or self.service,
            attributes=run_attributes(self.service, event_type, record),
        ):
            yield

    def on_stage_result(self, outgoing: Sequence[Outgoing]) -> None:
        span = trace.get_current_span()
        for event in outgoing:
            for key in _COUNT_FIELDS:
                if isinstance(event.record.get(key), int):
                    span.set_attribute(f"landfall.{key}", event.record[key])
            for key in _TEXT_FIELDS:
                if event.record.get(key):
                    span.set_attribute(f"landfall.{key}", str(event.record[key]))

    @contextmanager
    def producing(self, topic: str, event_type: EventType) -> Iterator[Headers]:
        """The span of producing one event; its consumers continue the trace from it."""
        attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.operation.type": "send",
            "messaging.operation.name": "produce",
            "landfall.event_type": event_type.value,
        }
        with self._tracer().start_as_current_span(
            f"produce {topic}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            yield list(inject_context())

    def on_retry(self, dataset: str, attempt: int, error: Exception) -> None:
        trace.get_current_span().add_event("retry", {"attempt": attempt, "error": str(error)[:500]})

    def on_revoked(self, dataset: str) -> None:
        _mark_error("partition revoked")

    def on_abandoned(self, dataset: str) -> None:
        _mark_error("abandoned on shutdown")

    def on_unpublished(self, dataset: str, error: Exception) -> None:
        _mark_error(str(error))

    def on_dead_letter(self, kind: str, reason: str) -> None:
        _mark_error(reason)

    # Counts and timings are the metrics' business.
    def on_stage_start(self, dataset: str) -> None:
        return None

    def on_stage_end(self, dataset: str) -> None:
        return None

    def on_batch_done(
        self, dataset: str, outgoing: Sequence[Outgoing], failed: bool, seconds: float
    ) -> None:
        return None

    def after_message(self, consumer: Any) -> None:
        return None
