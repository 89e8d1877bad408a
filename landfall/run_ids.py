"""Run ids that sort by when their run started.

A run id is a UUID in the version 7 layout (RFC 9562): its first 48 bits are the
run's start in epoch milliseconds. The lake's commit protocol uses that order as its
fencing token: an output of an older run can never replace a newer run's committed
output (:mod:`landfall.lake`), whichever of two racing writers finishes last.

A run id derived from something stable (an upstream event id, the message's place in
the log) takes its remaining bits from a hash of it, so the same trigger always gets
the same run id; a fresh run takes random bits. A run id without a start (other UUID
versions, from earlier releases or chosen upstream) is ordered by when it is committed.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

__all__ = ["fencing_token", "new_run_id", "run_started_ms"]

_MS_BITS = 48
_MS_MASK = (1 << _MS_BITS) - 1


def new_run_id(started_ms: int | None = None, derived_from: str | None = None) -> str:
    """A version 7 run id for a run started at ``started_ms`` (now if None).

    ``derived_from``: a stable description of the trigger; the same description and
    start give the same id. None: random bits, a run id never seen before.
    """
    if started_ms is None:
        started_ms = time.time_ns() // 1_000_000
    if derived_from is None:
        tail = os.urandom(10)
    else:
        tail = hashlib.sha256(derived_from.encode("utf-8", "surrogatepass")).digest()[:10]
    bits = int.from_bytes(tail, "big")  # 80 bits: 12 for rand_a, 62 for rand_b
    rand_a = bits >> 68
    rand_b = bits & ((1 << 62) - 1)
    value = (started_ms & _MS_MASK) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def run_started_ms(run_id: str) -> int:
    """When the run started, from its id; 0 for ids that carry no time (other versions)."""
    try:
        parsed = uuid.UUID(run_id)
    except (ValueError, TypeError, AttributeError):
        return 0
    if parsed.version != 7:
        return 0
    return parsed.int >> 80


def fencing_token(run_id: str, unknown_start_ms: int = 0) -> str:
    """A string that sorts runs by start, ties broken by id: the lake's commit order.

    A run whose id carries no start (another UUID version, an upstream event that
    named itself but not its time) sorts at ``unknown_start_ms``: a writer passes the
    time of its commit, so such a run is ordered as it is written (the last writer
    wins, as before fencing), never behind every timed run for good.

    It names objects in the lake, so a run id that is not a UUID (an upstream system
    may choose any string) appears only as a hash of it.
    """
    try:
        shown = str(uuid.UUID(run_id))
    except (ValueError, TypeError, AttributeError):
        shown = "h" + hashlib.sha256(str(run_id).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{run_started_ms(run_id) or unknown_start_ms:013d}-{shown}"
