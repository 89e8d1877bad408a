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
:func:`replaying`, which salts the ids with the replay pass and turns repeats off, and
a batch the service had handled before becomes a *new run* of the same batch
(:func:`replayed_run_id`): its outputs are committed beside the earlier run's, and the
lake's fencing orders them by when the operator replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from landfall.run_ids import new_run_id, run_started_ms

__all__ = [
    "current_replay",
    "follow_up_id",
    "new_replay_pass",
    "replayed_run_id",
    "replaying",
]

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


def new_replay_pass() -> str:
    """The id of a new replay pass: the 32 hex digits of a UUIDv7 made now.

    So the pass carries when the operator replayed, which every run it redoes starts at.
    """
    return uuid.UUID(new_run_id()).hex


def replayed_run_id(run_id: str, replay: str) -> str:
    """The new run that replay pass ``replay`` makes of run ``run_id``'s batch.

    It starts when the operator replayed, so its outputs fence the earlier run's (the
    lake commits the newer run's), and it is the same at every delivery in the pass, so
    every event of one run (the reporter reads several) goes to one new run. A pass id
    of an earlier release carries no time: the run then starts now.
    """
    started = run_started_ms(replay) or None
    return new_run_id(started, f"replay:{replay}:{run_id}")
