"""The data-landed event as upstream systems publish it, made complete.

The ingress contract is lenient (a shell user may publish only a dataset and a
partition), so ids that upstream left out are filled in here, once, before any stage
runs: the batch id is derived from the partition, so every replay of one partition
is a new run of the same batch. The event and run ids of a bare event are derived
from where it sits in the log (topic, partition, offset), so a redelivery of the same
message (a crash before its offset was committed) continues the same run instead of
starting a second one; an event that carries its own id but no run id gets a run id
derived from its event id, so a second copy of it is the same run too.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from landfall.run_ids import new_run_id

__all__ = ["batch_id_for", "complete_landed_event"]

# A fixed namespace makes batch ids stable across processes, machines and releases.
_BATCH_NAMESPACE = uuid.UUID("6f1d2c3e-8a4b-4e0f-9a51-2b7c9d0e4f11")


def batch_id_for(dataset: str, partition: str) -> str:
    """The batch id of one dataset partition: the same for every run of it."""
    return str(uuid.uuid5(_BATCH_NAMESPACE, f"{dataset}/{partition}"))


def complete_landed_event(
    record: dict[str, Any], origin: str | None = None, logged_ms: int | None = None
) -> dict[str, Any]:
    """Fill the ids and timestamp an upstream publisher may have left out.

    ``origin`` names the message's place in the log (``topic/partition@offset``); the
    missing ids are derived from it, so they are the same at every delivery.
    ``logged_ms`` is the message's timestamp in the log: a derived run id starts then
    (or when the event says it occurred), so run ids sort by when their runs began,
    which is how the lake fences an older run's output from a newer run's.
    """
    completed = dict(record)
    occurred = completed.get("occurred_at")
    given_id = completed.get("event_id")
    # An event that names itself but not its time may come twice at two offsets: its
    # run must not depend on either, so its id carries no start (0), and the lake
    # orders its outputs by when they are committed.
    started_ms = _epoch_ms(occurred) if occurred else (0 if given_id else logged_ms)

    def derived(kind: str) -> str:
        if origin is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(_BATCH_NAMESPACE, f"{kind}:{origin}"))

    # An event that names itself: its run follows from its id, so the same event
    # published twice (at two offsets) is one run, and its second copy a duplicate.
    completed["event_id"] = given_id or derived("event")
    completed["batch_id"] = completed.get("batch_id") or batch_id_for(
        completed["dataset"], completed["partition"]
    )
    if not completed.get("run_id"):
        if given_id:
            completed["run_id"] = new_run_id(started_ms, f"run:event:{given_id}")
        else:
            completed["run_id"] = new_run_id(
                started_ms, None if origin is None else f"run:{origin}"
            )
    completed["occurred_at"] = completed.get("occurred_at") or datetime.now(UTC)
    completed["producer"] = completed.get("producer") or "upstream/unknown"
    return completed


def _epoch_ms(moment: Any) -> int | None:
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return int(aware.timestamp() * 1000)
    if isinstance(moment, int):
        return moment
    return None
