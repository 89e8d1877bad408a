"""The loops' hooks as Prometheus metrics (the metrics are declared in landfall/telemetry.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from landfall.contracts import EventType
from landfall.telemetry import (
    BATCH_DURATION,
    BATCHES_IN_PROGRESS,
    CONSUMER_LAG,
    LAST_SUCCESS,
    PROCESSING_ERRORS,
    RECORDS_PROCESSED,
    ROWS_QUARANTINED,
    trace_exemplar,
)

if TYPE_CHECKING:
    from landfall.hooks import Delivery
    from landfall.processing import Headers, Outgoing

__all__ = ["LagReporter", "PrometheusHooks"]

log = logging.getLogger(__name__)

# The field of each completion event that says how many records its stage processed.
_ROWS_FIELD = {
    EventType.BATCH_VALIDATED: "rows_landed",
    EventType.BATCH_FEATURIZED: "rows",
    EventType.BATCH_PREDICTED: "rows",
    EventType.BATCH_REPORTED: "rows_scored",
}


class PrometheusHooks:
    """Counts what one service's loop does, under its ``service`` label."""

    def __init__(self, service: str, *, lag_interval_s: float = 15.0) -> None:
        self.service = service
        self._lag = LagReporter(service, lag_interval_s)

    # Spans are tracing's business: nothing to measure around them here.
    def consuming(self, delivery: Delivery) -> AbstractContextManager[None]:
        return nullcontext()

    def working(
        self, event_type: EventType, record: dict[str, Any]
    ) -> AbstractContextManager[None]:
        return nullcontext()

    def producing(self, topic: str, event_type: EventType) -> AbstractContextManager[Headers]:
        return nullcontext([])

    def on_stage_result(self, outgoing: Sequence[Outgoing]) -> None:
        return None

    def on_abandoned(self, dataset: str) -> None:
        return None  # a stop, not an error: the batch is redone by whoever comes next

    def on_stage_start(self, dataset: str) -> None:
        BATCHES_IN_PROGRESS.labels(self.service).inc()

    def on_stage_end(self, dataset: str) -> None:
        BATCHES_IN_PROGRESS.labels(self.service).dec()

    def on_retry(self, dataset: str, attempt: int, error: Exception) -> None:
        PROCESSING_ERRORS.labels(self.service, dataset, "retry").inc()

    def on_revoked(self, dataset: str) -> None:
        PROCESSING_ERRORS.labels(self.service, dataset, "revoked").inc()

    def on_unpublished(self, dataset: str, error: Exception) -> None:
        PROCESSING_ERRORS.labels(self.service, dataset, "unpublished").inc()

    def on_dead_letter(self, kind: str, reason: str) -> None:
        # What cannot be decoded names no dataset to trust.
        PROCESSING_ERRORS.labels(self.service, "unknown", kind).inc()

    def on_batch_done(
        self, dataset: str, outgoing: Sequence[Outgoing], failed: bool, seconds: float
    ) -> None:
        """The duration (its exemplar names the batch's trace), then errors or rows.

        Called inside the message's span, so the exemplar is that span's trace.
        """
        BATCH_DURATION.labels(self.service, dataset, "failed" if failed else "succeeded").observe(
            seconds, exemplar=trace_exemplar()
        )
        if failed:
            PROCESSING_ERRORS.labels(self.service, dataset, "batch_failed").inc()
            return
        LAST_SUCCESS.labels(self.service, dataset).set(time.time())
        for event in outgoing:
            rows = event.record.get(_ROWS_FIELD.get(event.event_type, "rows"))
            if isinstance(rows, int) and rows:
                RECORDS_PROCESSED.labels(self.service, dataset).inc(rows)
            quarantined = event.record.get("rows_quarantined")
            if event.event_type is EventType.BATCH_VALIDATED and quarantined:
                ROWS_QUARANTINED.labels(self.service, dataset).inc(quarantined)

    def after_message(self, consumer: Any) -> None:
        self._lag.maybe_update(consumer)


class LagReporter:
    """Keeps the consumer lag gauge current for one consumer, at most every ``interval_s``."""

    def __init__(self, service: str, interval_s: float = 15.0) -> None:
        self.service = service
        self.interval_s = interval_s
        self._next = 0.0

    def maybe_update(self, consumer: Any) -> None:
        """Refresh the lag of the consumer's assigned partitions if it is time to."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        try:
            assignment = consumer.assignment()
            committed = consumer.committed(assignment, timeout=5) if assignment else []
            for partition in committed:
                _, high = consumer.get_watermark_offsets(partition, timeout=5, cached=False)
                position = partition.offset if partition.offset >= 0 else 0
                CONSUMER_LAG.labels(self.service, partition.topic, str(partition.partition)).set(
                    max(high - position, 0)
                )
        except Exception as exc:  # noqa: BLE001 - lag is best effort; the loop must go on
            log.debug("consumer lag not updated: %s", exc)
