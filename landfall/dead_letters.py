"""Dead letters: a message no service can handle, kept with why, where and by whom.

Both the shared runner and the faust reporter set messages aside the same way: the
original bytes (cut to ``runner.dead_letter_max_bytes`` so the dead-letter topic can
take them, with the original size in a header), the original headers, and headers
naming the reason, the source (``topic/partition@offset``) and the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from landfall.redact import redact

__all__ = [
    "DEAD_LETTER_ORIGINAL_BYTES",
    "DEAD_LETTER_REASON",
    "DEAD_LETTER_SERVICE",
    "DEAD_LETTER_SOURCE",
    "DeadLetter",
    "dead_letter",
]

DEAD_LETTER_REASON = "landfall.dead_letter.reason"
DEAD_LETTER_SOURCE = "landfall.dead_letter.source"
DEAD_LETTER_SERVICE = "landfall.dead_letter.service"
# Set when the value was cut to runner.dead_letter_max_bytes: the original size.
DEAD_LETTER_ORIGINAL_BYTES = "landfall.dead_letter.original_bytes"
# A reason is one line for an operator, not a dump of the input.
_REASON_MAX_CHARS = 2000


@dataclass(frozen=True)
class DeadLetter:
    """The record to produce on the dead-letter topic."""

    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | str | None]],
    *,
    reason: str,
    source: str,
    service: str,
    keep_bytes: int,
) -> DeadLetter:
    """The dead letter of a message: its value (cut if over ``keep_bytes``) and headers."""
    out = [
        (str(key), item if isinstance(item, bytes) else (item or "").encode())
        for key, item in headers
    ]
    out += [
        # landfall's own text, redacted; the value and headers stay as they came.
        (DEAD_LETTER_REASON, redact(reason)[:_REASON_MAX_CHARS].encode()),
        (DEAD_LETTER_SOURCE, source.encode()),
        (DEAD_LETTER_SERVICE, service.encode()),
    ]
    if value is not None and len(value) > keep_bytes:
        # A record the dead-letter topic cannot take would block the partition for good;
        # its head and its size are what an operator needs to find its source.
        out.append((DEAD_LETTER_ORIGINAL_BYTES, str(len(value)).encode()))
        value = value[:keep_bytes]
    return DeadLetter(value, out)
