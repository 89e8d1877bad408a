"""What landfall writes beside a committed offset: crash counts and replay passes.

Kafka keeps a short metadata string with each committed offset, stored with the group
on the broker, so whichever replica gets the partition next reads it. landfall puts two
notes there, in one string such as ``landfall:started=2;replay=5f0c...@1200``:

- ``started=N``: N processes started the message at this offset and died before
  finishing it (poison-pill detection, :mod:`landfall.poison`).
- ``replay=ID@END``: ``landfall replay`` moved the group back; every message before
  offset END (the log's end when the operator replayed) is read again *on purpose*.
  Such a delivery is redone as replay pass ID, where a plain redelivery of a message
  whose batch is done only repeats the result (:mod:`landfall.deliveries`).
- ``done=N``: where the group had got to when it was moved back. A message of the
  replay before offset N was handled before, so its batch is redone as a *new run*;
  one from N on was never handled by this group and keeps its run.

Every commit of the runner carries the replay note forward until the group passes END.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["OffsetNote"]

_PREFIX = "landfall:"
_REPLAY = re.compile(r"([0-9a-f]{32})@([0-9]{1,19})")


@dataclass(frozen=True)
class OffsetNote:
    """The notes on one committed offset (all empty: nothing to say)."""

    starts: int = 0
    replay: str | None = None  # the replay pass id
    replay_end: int | None = None  # the first offset not replayed
    replay_done: int | None = None  # the first offset not handled before the replay

    @classmethod
    def parse(cls, metadata: str | None) -> OffsetNote:
        """The notes in ``metadata``; anything not landfall's is ignored, never an error."""
        text = metadata or ""
        if not text.startswith(_PREFIX) or len(text) > 256:
            return cls()
        starts, replay, end, done = 0, None, None, None
        for item in text.removeprefix(_PREFIX).split(";"):
            key, _, value = item.partition("=")
            if key == "started" and value.isdigit() and len(value) < 10:
                starts = int(value)
            elif key == "replay" and (match := _REPLAY.fullmatch(value)):
                replay, end = match.group(1), int(match.group(2))
            elif key == "done" and value.isdigit() and len(value) < 20:
                done = int(value)
        return cls(starts, replay, end, done if replay is not None else None)

    def format(self) -> str:
        """The metadata string to commit ("" when there is nothing to note)."""
        items = []
        if self.starts:
            items.append(f"started={self.starts}")
        if self.replay is not None and self.replay_end is not None:
            items.append(f"replay={self.replay}@{self.replay_end}")
            if self.replay_done is not None:
                items.append(f"done={self.replay_done}")
        return _PREFIX + ";".join(items) if items else ""

    def replays(self, offset: int) -> bool:
        """Whether the message at ``offset`` is read again on purpose (inside the replay)."""
        return self.replay is not None and self.replay_end is not None and offset < self.replay_end

    def redoes(self, offset: int) -> bool:
        """Whether the message at ``offset`` was handled before the replay: a new run.

        A note without ``done`` (written by an earlier release) redoes the whole replay.
        """
        if not self.replays(offset):
            return False
        return self.replay_done is None or offset < self.replay_done

    def with_starts(self, starts: int) -> OffsetNote:
        """The same notes with another start count."""
        return replace(self, starts=starts)

    def after(self, offset: int) -> OffsetNote:
        """The notes to commit with the offset following ``offset``: the replay, if not over."""
        if self.replays(offset + 1):
            return OffsetNote(
                replay=self.replay, replay_end=self.replay_end, replay_done=self.replay_done
            )
        return OffsetNote()
