"""Which delivery of an event a service is handling, and what that means for its ids.

Kafka delivers at least once: after a crash, a lost commit or a publish the broker did
not acknowledge, an event comes again, and upstream may publish one event twice. None
of that may change a result, so a completion event's id is derived, not drawn: the
same event type, run and causing event give the same id at every delivery
(:func:`follow_up_id`). A stage whose output for that run and event is committed
already repeats the event it announced then instead of redoing the work
(``StageService.repeat_of``), and the reporter reports each finishing event once.

A replay is different: an operator moved the group back on purpose, to redo the work
(a new model version, a fixed bug). The runner handles such a delivery inside
:func:`replaying`, which salts the ids with the replay pass and turns repeats off.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_replay", "follow_up_id", "replaying"]

# A fixed namespace: the same inputs give the same id in every process and release.
_FOLLOW_UP_NAMESPACE = uuid.UUID("0b8e7c52-3d1f-4a8e-b1f6-7c2d9e4a6f30")
_REPLAY: ContextVar[str | None] = ContextVar("landfall_replay", default=None)


@contextmanager
def replaying(replay: str | None) -> Iterator[None]:
    """Handle the events of the block as part of replay pass ``replay`` (None: not one)."""
    token = _REPLAY.set(replay)
    try:
        yield
    finally:
        _REPLAY.reset(token)


def current_replay() -> str | None:
    """The replay pass being handled, or None for a first delivery or a redelivery."""
    return _REPLAY.get()


def follow_up_id(event_type: str, run_id: object, causation_id: object) -> str:
    """The id of the ``event_type`` event that ``causation_id`` causes in ``run_id``."""
    salt = current_replay() or ""
    return str(uuid.uuid5(_FOLLOW_UP_NAMESPACE, f"{event_type}|{run_id}|{causation_id}|{salt}"))
