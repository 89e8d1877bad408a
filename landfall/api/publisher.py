"""The seam the job API publishes events through.

The running API publishes through one :class:`landfall.events.EventProducer` that its
lifespan creates at start-up and flushes and closes at shutdown (a producer per request
would pay a broker connection each time). Anything with this ``publish`` fits:
tests that only need to see what a request published give the app a recording one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from landfall.contracts import EventType
from landfall.results import RunKey, RunRecorder

__all__ = ["Publisher", "record_submitted"]


class Publisher(Protocol):
    """Publishes one event and returns once the broker acknowledged it."""

    def publish(self, event_type: EventType, topic: str, record: dict[str, Any]) -> dict[str, Any]:
        """Publish ``record`` to ``topic``; raise RetryableError when it is not acknowledged."""
        ...


def record_submitted(recorder: RunRecorder, event: dict[str, Any]) -> None:
    """Record a data-landed the API published: its run is known before the reporter's word.

    So ``GET /batch/{run_id}`` and the status page answer at once.
    """
    recorder.record_submission(
        RunKey.of(event),
        submitted_at=event.get("occurred_at") or datetime.now(UTC),
        model_version=event.get("model_version"),
    )
