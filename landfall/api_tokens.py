"""The job API's bearer tokens: from the settings, a token file, or one generated once.

Kept free of web imports: ``landfall up`` and ``landfall api-token`` use it too.

A token file holds one token a line, ``ROLE TOKEN [NAME]`` (ROLE is ``read`` or
``operator``); blank lines and lines starting with ``#`` are skipped. When neither
``api.tokens`` nor ``api.token_file`` is set, :func:`ensure_generated_token` writes one
random operator token to ``<home>/api-token`` (mode 600) at the first start and every
later start reuses it, as Jupyter does with its token: the API is never left open.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, ValidationError

from landfall.config import ApiToken, Settings
from landfall.errors import ConfigError
from landfall.redact import register_secrets

__all__ = [
    "GENERATED_TOKEN_FILE",
    "Principal",
    "TokenStore",
    "ensure_generated_token",
    "generated_token_path",
    "read_token_file",
    "token_file_path",
]

log = logging.getLogger(__name__)

GENERATED_TOKEN_FILE = "api-token"
Role = Literal["read", "operator"]
ROLES: tuple[Role, ...] = ("read", "operator")
# A changed token file is noticed within this many seconds (tokens rotate without a
# restart); checking its stat more often than that would only cost time.
RELOAD_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the token's name (never the token) and its role."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        """Whether this principal holds ``role`` (an operator may also read)."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class _Known:
    # Only digests are kept for comparing, so every comparison is of equal length.
    digest: bytes
    session_key: bytes
    token_id: str
    principal: Principal


def _known(token: ApiToken, fallback_name: str) -> _Known:
    # Masked in every log line and message of this process, should one ever quote it.
    register_secrets([token.token.get_secret_value()])
    plain = token.token.get_secret_value().encode()
    digest = hashlib.sha256(plain).digest()
    return _Known(
        digest=digest,
        # The key that signs this token's browser sessions: derived from the token, so
        # removing the token ends its sessions, and no server secret has to be kept.
        session_key=hashlib.sha256(b"landfall-session\0" + plain).digest(),
        # Names the token inside a session cookie without revealing it.
        token_id=hashlib.sha256(b"landfall-id\0" + plain).hexdigest()[:16],
        principal=Principal(token.name or fallback_name, token.role),
    )


def token_file_path(settings: Settings) -> Path | None:
    """The configured token file, a relative one under home; None if not configured."""
    path = settings.api.token_file
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else settings.home / path


def generated_token_path(settings: Settings) -> Path | None:
    """Where the generated token lives, when no token is configured; else None."""
    if settings.api.tokens or settings.api.token_file is not None:
        return None
    return settings.home / GENERATED_TOKEN_FILE


def read_token_file(path: Path) -> list[ApiToken]:
    """The tokens of a token file; ConfigError naming the file and line, never a token."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"API token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"API token file {path} cannot be read ({type(exc).__name__})") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3) or fields[0] not in ROLES:
            raise ConfigError(
                f"API token file {path}, line {number}: expected 'ROLE TOKEN [NAME]' "
                "with ROLE read or operator"
            )
        try:
            tokens.append(
                ApiToken(
                    role=fields[0],  # type: ignore[arg-type]
                    token=SecretStr(fields[1]),
                    name=fields[2] if len(fields) == 3 else None,
                )
            )
        except ValidationError as exc:
            problems = "; ".join(err["msg"] for err in exc.errors())
            raise ConfigError(f"API token file {path}, line {number}: {problems}") from None
    if not tokens:
        raise ConfigError(f"API token file {path} holds no token")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("API token file %s can be read by other users; chmod 600 it", path)
    return tokens


def ensure_generated_token(settings: Settings) -> Path | None:
    """Create ``<home>/api-token`` with a random operator token unless it exists.

    Returns its path, or None when tokens are configured (then nothing is generated).
    Safe to call from several processes at once: exactly one token is ever written.
    """
    path = generated_token_path(settings)
    if path is None:
        return None
    if path.exists():
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            # Left readable by hand or by a copy: it holds an operator token.
            path.chmod(0o600)
            log.warning("%s could be read by other users; made it mode 600", path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(
                "# The job API's operator token, generated by landfall (send it as\n"
                "# 'Authorization: Bearer TOKEN'). Delete this file and restart the API\n"
                "# for a new one; set api.tokens or api.token_file to choose your own.\n"
                f"operator {token} generated\n"
            )
        # A hard link appears whole or not at all, and fails if another process won
        # the race: then its token stands and this one is thrown away.
        try:
            os.link(staging, path)
            log.info("generated an operator token for the job API in %s", path)
        except FileExistsError:
            pass
    finally:
        staging.unlink(missing_ok=True)
    return path


class TokenStore:
    """Every accepted token, checked in constant time; the token file is re-read on change.

    A token file that becomes unreadable or malformed while the API runs accepts no
    token of it until it is fixed (fail closed: a revoked token must not live on
    because the file that revoked it has a typo); the configured tokens still work.
    """

    def __init__(self, settings: Settings) -> None:
        self._configured = [
            _known(t, f"{t.role} token {i + 1} of api.tokens")
            for i, t in enumerate(settings.api.tokens)
        ]
        self.file = token_file_path(settings) or generated_token_path(settings)
        self._lock = threading.Lock()
        self._from_file: list[_Known] = []
        self._file_state: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        if self.file is not None:
            # At start a bad file is an error that stops the API, not a silent lock-out.
            self._from_file = self._load(read_token_file(self.file))
            self._file_state = self._state()
            self._checked_at = time.monotonic()

    def _load(self, tokens: list[ApiToken]) -> list[_Known]:
        return [
            _known(t, f"{t.role} token {i + 1} of {self.file and self.file.name}")
            for i, t in enumerate(tokens)
        ]

    def _state(self) -> tuple[int, int, int] | None:
        assert self.file is not None
        try:
            st = self.file.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> None:
        if self.file is None or time.monotonic() - self._checked_at < RELOAD_INTERVAL_S:
            return
        with self._lock:
            if time.monotonic() - self._checked_at < RELOAD_INTERVAL_S:
                return
            self._checked_at = time.monotonic()
            state = self._state()
            if state == self._file_state:
                return
            self._file_state = state
            try:
                self._from_file = self._load(read_token_file(self.file))
                log.info("API token file %s changed: %d tokens", self.file, len(self._from_file))
            except ConfigError as exc:
                self._from_file = []
                log.error("%s; none of its tokens is accepted until it is fixed", exc)

    def _all(self) -> list[_Known]:
        self._refresh()
        return [*self._configured, *self._from_file]

    def counts(self) -> dict[str, int]:
        """How many tokens of each role are accepted now."""
        known = self._all()
        return {role: sum(k.principal.role == role for k in known) for role in ROLES}

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a presented token, or None; time does not depend on which."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        # Every known token is compared, with no early exit, in constant time each.
        for known in self._all():
            if hmac.compare_digest(digest, known.digest):
                found = known.principal
        return found

    def session_value(self, token: str, lifetime_s: float) -> str | None:
        """A signed browser session for a valid token: ``v1.EXPIRES.TOKEN_ID.SIGNATURE``."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        match = None
        for known in self._all():
            if hmac.compare_digest(digest, known.digest):
                match = known
        if match is None:
            return None
        payload = f"v1.{int(time.time() + lifetime_s)}.{match.token_id}"
        return f"{payload}.{_sign(match.session_key, payload)}"

    def session_principal(self, value: str) -> Principal | None:
        """The principal of a session cookie that is well formed, unexpired and signed."""
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit() or len(parts[1]) > 12:
            return None
        if int(parts[1]) < time.time():
            return None
        payload = ".".join(parts[:3])
        found = None
        for known in self._all():
            # Bytes: compare_digest refuses a str with characters beyond ASCII.
            if known.token_id == parts[2] and hmac.compare_digest(
                _sign(known.session_key, payload).encode(),
                parts[3].encode("utf-8", "surrogateescape"),
            ):
                found = known.principal
        return found

    def form_token(self, session: str) -> str | None:
        """The console's CSRF token for a valid session cookie; None for any other value.

        Signed with the key that signs the session itself, over the whole session
        value: it is bound to that one session (a new login, a new token), never
        derivable without the token behind it, and ends with the session.
        """
        known = self._session_known(session)
        return None if known is None else _sign(known.session_key, f"form\0{session}")

    def form_token_matches(self, session: str, presented: str) -> bool:
        """Whether ``presented`` is the CSRF token of this (valid) session cookie."""
        expected = self.form_token(session)
        return expected is not None and hmac.compare_digest(
            expected.encode(), presented.encode("utf-8", "surrogateescape")
        )

    def _session_known(self, value: str) -> _Known | None:
        parts = value.split(".")
        if len(parts) != 4 or self.session_principal(value) is None:
            return None
        return next((k for k in self._all() if k.token_id == parts[2]), None)


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
