"""What every settings section shares: a frozen model, secret settings, path and URL checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
)

from landfall.redact import mask_url_credentials


class Frozen(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silent default.
    model_config = ConfigDict(frozen=True, extra="forbid")


# ``Settings.model_dump(mode="json", context=REVEAL_SECRETS)`` writes passwords in clear
# (for the mode-600 file the stack hands its children); any other dump masks them.
REVEAL_SECRETS: dict[str, bool] = {"reveal_secrets": True}


def _reveal_or_mask(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    return value.get_secret_value() if context.get("reveal_secrets") else str(value)


# A credential-bearing setting (a password, a URL that may carry user:password@): it
# prints and dumps as **********, except in a REVEAL_SECRETS dump; code that connects
# reads it with get_secret_value() (or a Settings property such as tracking_uri).
SecretSetting = Annotated[SecretStr, PlainSerializer(_reveal_or_mask, when_used="json")]


def given(value: object) -> bool:
    """Whether a setting has a value: not None, not empty (a secret: not an empty secret)."""
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return value is not None and value != ""


def absolute(path: Path) -> Path:
    """``path`` made absolute against the working directory at load time."""
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def server_address(value: str | None, key: str, shape: str, *, credentials_hint: str) -> str | None:
    """A server's address (scheme, host, port) from ``key``, or None if not given.

    Refused: anything but http(s), no host, a port that is not a number, a path or a
    query, and credentials in the URL (they belong in secret settings, not in an address
    that ends up in logs).
    """
    if value is None or not value.strip():
        return None
    from urllib.parse import urlsplit

    value = value.strip().rstrip("/")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must look like {shape}, got {mask_url_credentials(value)!r}")
    if parts.username or parts.password:
        raise ValueError(f"{key} carries user:password@: {credentials_hint}")
    if parts.path or parts.query:
        raise ValueError(f"{key} is the server's address only (scheme, host, port), got {value!r}")
    return value
