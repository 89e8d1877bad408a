"""The one vocabulary of failures in landfall.

Every error a service can meet is translated at its boundary into one of these, and
the runner decides what happens from the class alone::

    LandfallError
    ├── ConfigError          bad or missing configuration: the process refuses to start
    ├── InvalidEventError    bytes that are not a valid event: sent to the dead-letter topic
    ├── RetryableError       a transient fault (broker, registry, executor loss): retried
    └── StageFailedError     the batch cannot be processed: published as batch-failed
        └── PathOutsideLakeError   an event named a path landfall may not read: outside
                                   the lake root or its zone, or through a symlink
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InvalidEventError",
    "LandfallError",
    "PathOutsideLakeError",
    "RetryableError",
    "StageFailedError",
]


class LandfallError(Exception):
    """Root of every error landfall raises on purpose."""


class ConfigError(LandfallError):
    """The configuration is missing, malformed or inconsistent."""


class InvalidEventError(LandfallError):
    """A message could not be decoded or breaks its contract; it is dead-lettered."""


class RetryableError(LandfallError):
    """A transient fault; the same work may succeed if tried again."""


class StageFailedError(LandfallError):
    """A stage cannot process this batch; the batch is reported as failed.

    ``retryable`` tells operators whether a replay of the same input may succeed
    (a missing partition may land later; a schema violation will not fix itself).
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool = False,
        details: dict[str, str] | None = None,
        setting: tuple[str | int, ...] | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        # Machine-readable figures behind the reason (e.g. failing rules and counts).
        self.details = dict(details or {})
        # The dataset's setting at fault, as a path inside its config block, e.g.
        # ("rules", 2, "expr"): `landfall check` names it with its line in the file.
        self.setting = setting


class PathOutsideLakeError(StageFailedError):
    """An event named a path landfall may not read.

    It resolves outside the configured lake root, or outside the zone of its dataset
    the stage reads (``<dataset>/raw/`` for landed data), or it passes through a
    symlink, or it is not a plain lake-relative path at all. Never retryable: the same
    event names the same path again.
    """
