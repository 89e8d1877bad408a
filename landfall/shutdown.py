"""Stopping a stage service: the stage in flight gets a grace period, then is abandoned.

The first SIGTERM or SIGINT stops the service from taking another message and gives
the stage in flight ``runner.shutdown_grace_s`` to finish; finished in time, its
output is committed, its events published and its offset committed as usual. Past
the grace (or at a second signal) the stage is abandoned: its Spark jobs are
cancelled, its staged output is discarded as the cancelled stage unwinds, nothing is
published and the offset stays uncommitted, so whoever consumes the partition next
(this service after a restart, or another instance) redoes the batch. A stage that
does not unwind within :data:`ABANDON_WAIT_S` (work Spark cannot cancel; the cancel is
repeated meanwhile, as it reaches only the jobs running at the time) is not waited for:
the process exits without it, which is no worse than the crash the commit protocol is
built to survive.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from types import FrameType
from typing import Protocol

from landfall.config import Settings

__all__ = [
    "ABANDON_WAIT_S",
    "CLOSE_MARGIN_S",
    "StopClock",
    "exit_without_stage",
    "stop_on_signals",
    "stop_timeout_s",
]

log = logging.getLogger(__name__)

# How long an abandoned stage gets to unwind once its Spark jobs are cancelled: a
# cancelled job fails within a second or two, and its stage then discards its staging;
# a stage still planning its next job (slow on a cold, loaded JVM) needs longer.
ABANDON_WAIT_S = 10.0
# What a service needs after that to leave its consumer group, flush its producer and
# stop its Spark session (about 3 s measured, more on a loaded machine).
CLOSE_MARGIN_S = 20.0


def stop_timeout_s(settings: Settings) -> float:
    """How long a stopping service may take before it is killed: the grace plus a margin."""
    return settings.runner.shutdown_grace_s + ABANDON_WAIT_S + CLOSE_MARGIN_S


class StopClock:
    """When a stop was asked for and when the work in flight must be given up.

    Written from a signal handler and read by the loop, on the main thread: plain
    attribute writes, no lock a handler could deadlock on.
    """

    def __init__(self) -> None:
        self.requested_at: float | None = None
        self.abandon_at = math.inf

    def request(self, grace_s: float) -> None:
        """Note a stop; a later request can only bring the abandon time closer."""
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
        else:
            grace_s = 0.0  # asked twice: do not wait any longer
        self.abandon_at = min(self.abandon_at, now + max(grace_s, 0.0))

    @property
    def overdue(self) -> bool:
        """Whether the work in flight must be abandoned now."""
        return time.monotonic() >= self.abandon_at


class Stoppable(Protocol):
    """What :func:`stop_on_signals` stops: the runner."""

    @property
    def stopping(self) -> bool: ...

    def stop(self, grace_s: float | None = None) -> None: ...


def stop_on_signals(runner: Stoppable, name: str, grace_s: float) -> None:
    """SIGTERM or SIGINT stops ``runner`` with ``grace_s``; a second one at once."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if runner.stopping:
            log.warning(
                "%s received signal %d again: abandoning the stage in flight now", name, signum
            )
        else:
            log.info(
                "%s received signal %d: stopping; a stage in flight has %gs to finish "
                "(runner.shutdown_grace_s) before it is abandoned uncommitted",
                name,
                signum,
                grace_s,
            )
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def exit_without_stage(name: str) -> None:
    """End the process now, not waiting for an abandoned stage that is still running.

    The interpreter would otherwise join the stage's worker thread at exit, however
    long the stage still runs; nothing of it is published or committed.
    """
    log.warning(
        "%s exits without waiting for its abandoned stage, which Spark could not cancel; "
        "nothing of it was published or committed",
        name,
    )
    logging.shutdown()
    os._exit(0)
