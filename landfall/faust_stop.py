"""Stopping a faust app the way landfall's runner services stop (landfall/shutdown.py).

faust on its own stops at SIGTERM by waiting, without a limit, until every event its
agents took is acknowledged, and it acknowledges an event whenever its agent leaves
it, finished or cancelled. A landfall service instead gives the event in flight the
grace ``runner.shutdown_grace_s`` and, past it, abandons the event uncommitted. So:

- the app's agent acknowledges each event by hand once it is handled, sets
  :attr:`InFlightApp.in_flight` meanwhile, and takes no further event once
  :attr:`GracefulStop.requested` (it waits in :func:`wait_forever` instead);
- :class:`SignalledWorker` hands SIGTERM and SIGINT to :class:`GracefulStop`, which
  starts faust's own stop (leave the group, commit, flush the producer) once no event
  is in flight; the agent abandons its event when :attr:`GracefulStop.overdue`;
- :class:`InFlightApp` waits, at a stop or a rebalance, only for the event in flight:
  an event left unacknowledged on purpose would never be acknowledged, and its offset,
  not committed, makes the partition's next owner redo it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import faust
from faust.worker import Worker

from landfall.faust_consumer import RewindingTransport
from landfall.shutdown import StopClock

__all__ = ["GracefulStop", "InFlightApp", "SignalledWorker", "wait_forever"]

log = logging.getLogger(__name__)


async def wait_forever() -> None:
    """Wait until cancelled (faust cancels its agents when it stops)."""
    await asyncio.get_running_loop().create_future()


class InFlightApp(faust.App):
    """faust's app, waiting at a stop or a rebalance only for the event in flight."""

    in_flight = False  # set by the agent from taking an event until acknowledging it

    def _new_transport(self) -> Any:
        # Reads again what a rebalance dropped (landfall/faust_consumer.py).
        return RewindingTransport(self.conf.broker_consumer, self)

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        while self.in_flight:
            await asyncio.sleep(0.1)
        await consumer.commit()  # what was acknowledged, up to any event left out


class SignalledWorker(Worker):
    """faust's worker, handing SIGTERM and SIGINT to ``on_signal`` instead of stopping."""

    def __init__(self, app: faust.App, on_signal: Callable[[signal.Signals], None]) -> None:
        # The process's logging stays landfall's (landfall/logs.py): faust would put
        # its own handler and format on the root logger, and print to stdout.
        super().__init__(app, loglevel="INFO", quiet=True, override_logging=False)
        self.spinner = None  # a terminal spinner would mangle the log lines around it
        self._on_stop_signal = on_signal

    def _on_sigterm(self) -> None:
        self._on_stop_signal(signal.SIGTERM)

    def _on_sigint(self) -> None:
        self._on_stop_signal(signal.SIGINT)

    def shut_down(self) -> None:
        """faust's own stop: leave the group, commit, flush the producer."""
        super()._on_sigterm()


class GracefulStop:
    """The stop of one faust service: its clock, and what each signal does.

    ``work`` names what is in flight in the log (the reporter's is a report).
    """

    def __init__(self, name: str, grace_s: float, *, work: str = "stage") -> None:
        self.name = name
        self.grace_s = grace_s
        self.work = work
        self.clock = StopClock()
        self._task: asyncio.Task[None] | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for: the agent takes no further event."""
        return self.clock.requested_at is not None

    @property
    def overdue(self) -> bool:
        """Whether the event in flight must be abandoned now."""
        return self.clock.overdue

    def worker(self, app: InFlightApp) -> SignalledWorker:
        """The worker to run ``app`` in, stopped by this."""
        worker = SignalledWorker(app, lambda signum: self.on_signal(app, worker, signum))
        return worker

    def on_signal(self, app: InFlightApp, worker: SignalledWorker, signum: int) -> None:
        """The first signal: stop once the event in flight is done; the second: abandon it."""
        if self.requested:
            log.warning(
                "%s received signal %d again: abandoning the %s in flight now",
                self.name,
                signum,
                self.work,
            )
            self.clock.request(0)
            return
        log.info(
            "%s received signal %d: stopping; a %s in flight has %gs to finish "
            "(runner.shutdown_grace_s) before it is abandoned uncommitted",
            self.name,
            signum,
            self.work,
            self.grace_s,
        )
        self.clock.request(self.grace_s)
        self._task = asyncio.ensure_future(self._stop_when_idle(app, worker))

    async def _stop_when_idle(self, app: InFlightApp, worker: SignalledWorker) -> None:
        while app.in_flight:
            await asyncio.sleep(0.1)
        worker.shut_down()
