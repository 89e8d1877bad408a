"""Processes of this machine: whether one still runs, and the daemons landfall starts.

The local broker (landfall/broker.py) and the local Jaeger (landfall/jaeger.py) are
both a child process with a folder of its own, a log there and a state file that lets
other landfall commands of the same home find it: :class:`LocalDaemon` is what they
share (stopping, the log, the context manager); each says how to start itself.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["LocalDaemon", "pid_alive", "started_at"]

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists and is not a zombie awaiting its parent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    # A child that exited stays a zombie until its parent reaps it: not running.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def started_at(pid: int) -> str | None:
    """When a process started, in clock ticks since boot (Linux); None if unknown.

    Recorded beside a pid, it tells the same process from a later one given its number.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


class LocalDaemon:
    """A long-running child process with its own folder, log and state file.

    A subclass sets ``name`` (for messages), ``log_name`` and ``state_name`` (files in
    ``data_dir``), starts ``self._proc`` in ``start()`` and returns ``self``.
    """

    name = "daemon"
    log_name = "daemon.log"
    state_name = "daemon.json"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """Its own log (its stdout and stderr)."""
        return self.data_dir / self.log_name

    @property
    def _state_path(self) -> Path:
        return self.data_dir / self.state_name

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop it (SIGTERM, so it shuts down in order; SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %gs; killing it", self.name, timeout)
                proc.kill()
                proc.wait()
        self._state_path.unlink(missing_ok=True)

    def log_tail(self, limit: int = 3000) -> str:
        """The end of its log, for error messages."""
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
