"""Keeping secrets out of messages: passwords never reach a log, an event or an error.

Kafka client settings travel as plain mappings (librdkafka's ``sasl.password``,
``ssl.key.password`` ...). Whatever text is built from such a mapping, or from an
exception a client raised with it, goes through :func:`redact` first, with the
secrets :func:`secret_values` found in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pydantic import SecretStr

__all__ = [
    "MASK",
    "is_secret_key",
    "mask_url_credentials",
    "redact",
    "redacted",
    "secret_values",
]

MASK = "**********"
# A client setting whose name holds one of these carries a secret.
_SECRET_MARKERS = ("password", "secret", "token", "key.pem", "private", "jaas")


def is_secret_key(key: str) -> bool:
    """Whether a client setting's name says it holds a secret (``sasl.password`` ...)."""
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def _plain(value: object) -> str | None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value if isinstance(value, str) and value else None


def secret_values(config: Mapping[str, object] | None) -> list[str]:
    """The secret values of a settings mapping: those under secret keys, and SecretStrs."""
    found = set()
    for key, value in (config or {}).items():
        plain = _plain(value)
        if plain is not None and (is_secret_key(key) or isinstance(value, SecretStr)):
            found.add(plain)
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by a mask."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redacted(config: Mapping[str, object]) -> dict[str, object]:
    """A copy of a settings mapping fit to print: secret values masked."""
    return {
        key: MASK if (is_secret_key(key) or isinstance(value, SecretStr)) and value else value
        for key, value in config.items()
    }


# scheme://user:password@host: the password part of any URL in free text (a tracking
# URI in an MLflow error, a database URL in a driver's message).
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@")


def mask_url_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL masked."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{MASK}@", text)
