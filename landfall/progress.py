"""Progress of long operator commands (backfill, replay): one step per partition.

Three ways to show it, chosen once per command:

- ``bar``: a rich progress bar on a terminal, each step's line printed above it;
- ``lines``: one plain line per step, flushed as it happens, so a pipe or a log file
  shows the partitions done so far even when the command dies at the next one;
- ``json``: one JSON object per line (JSON Lines) for scripts, ending with a
  ``{"event": "summary", ...}`` object.

Whichever the mode, the summary comes last and counts what was done.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Literal

__all__ = ["Progress", "progress_mode"]

Mode = Literal["bar", "lines", "json"]


def progress_mode(as_json: bool, stream: IO[str] | None = None) -> Mode:
    """``json`` when asked, a bar on a terminal, plain lines otherwise."""
    if as_json:
        return "json"
    stream = stream or sys.stdout
    return "bar" if stream.isatty() else "lines"


class Progress:
    """Steps of one operation, shown as they happen, and the counts of their outcomes."""

    def __init__(self, mode: Mode, stream: IO[str] | None = None) -> None:
        self.mode = mode
        self.stream = stream or sys.stdout
        self.counts: Counter[str] = Counter()
        self._bar: Any = None
        self._task: Any = None

    @contextmanager
    def running(self, total: int, description: str) -> Iterator[Progress]:
        """Show a bar of ``total`` steps while the block runs (``bar`` mode only)."""
        if self.mode != "bar" or total == 0:
            yield self
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=self.stream),
            transient=False,
        )
        self._bar, self._task = bar, bar.add_task(description, total=total)
        try:
            with bar:
                yield self
        finally:
            self._bar = self._task = None

    def step(self, outcome: str, text: str, **fields: Any) -> None:
        """One partition done with ``outcome`` (published, skipped, failed, moved...)."""
        self.counts[outcome] += 1
        if self.mode == "json":
            self._json({"event": outcome, **fields})
            return
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
            self._bar.advance(self._task)
            return
        print(text, file=self.stream, flush=True)

    def note(self, text: str, **fields: Any) -> None:
        """A line that is no step (a plan, a warning); in JSON an object of its own."""
        if self.mode == "json":
            self._json(fields)
        else:
            print(text, file=self.stream, flush=True)

    def summary(self, text: str, **fields: Any) -> None:
        """The last line: what was done, counted."""
        if self.mode == "json":
            self._json({"event": "summary", **fields})
        else:
            print(f"summary: {text}", file=self.stream, flush=True)

    def _json(self, document: dict[str, Any]) -> None:
        print(json.dumps(document, default=str, sort_keys=True), file=self.stream, flush=True)
