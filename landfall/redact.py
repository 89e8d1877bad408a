"""Keeping secrets in their settings: out of every message, event, report, log and file.

Everything landfall writes about its own work passes through :func:`redact`, the one
redaction path: failure reasons in events, reports and the results database, span
names, attributes and statuses, log lines and tracebacks, error messages. It masks

- the password of every ``scheme://user:password@`` URL in the text, whoever wrote it
  (an MLflow error quoting the tracking URI, a driver quoting a database URL), and
- every secret the configuration holds: :func:`register_settings` collects them once
  from the loaded settings (``load_settings`` does it), every ``SecretStr`` (Kafka
  passwords, credential-bearing URLs, tokens) and every value under a secret key of a
  free-form mapping (``kafka.client_config``, ``spark.conf``).

:func:`install_redaction` routes each process's log records and uncaught exceptions
through it; :func:`write_private` writes the files that must hold secrets (the
configuration a stack hands its services) readable by their owner only.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, SecretStr

__all__ = [
    "MASK",
    "MIN_SEARCHED_LENGTH",
    "install_redaction",
    "is_secret_key",
    "mask_url_credentials",
    "redact",
    "redact_tree",
    "redacted",
    "register_secrets",
    "register_settings",
    "secret_values",
    "settings_secrets",
    "write_private",
]

log = logging.getLogger(__name__)

MASK = "**********"
# A client setting whose name holds one of these carries a secret.
_SECRET_MARKERS = ("password", "secret", "token", "key.pem", "private", "jaas")
# Configured secrets shorter than this are not searched for in free text: masking every
# "abc" would make messages unreadable, and so short a secret protects nothing. A URL's
# password is masked by its place in the URL whatever its length.
MIN_SEARCHED_LENGTH = 4


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


# The configured secrets, longest first (so a secret containing another is masked
# whole); replaced as a whole, so readers in other threads need no lock.
_registered: tuple[str, ...] = ()
_lock = threading.Lock()


def register_secrets(values: Iterable[str]) -> None:
    """Add secrets that :func:`redact` masks from now on, in every thread of the process."""
    global _registered
    with _lock:
        merged = {*_registered, *(v for v in values if len(v) >= MIN_SEARCHED_LENGTH)}
        _registered = tuple(sorted(merged, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The one redaction path: ``text`` with secrets and URL passwords masked.

    Masks every registered secret (the configuration's, see :func:`register_settings`),
    every one of ``secrets`` (e.g. a Kafka client's own settings), then the password of
    every ``scheme://user:password@`` URL.
    """
    extra = {s for s in secrets if s}
    known = sorted({*_registered, *extra}, key=len, reverse=True) if extra else _registered
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return mask_url_credentials(text)


def redact_tree(value: Any) -> Any:
    """A copy of a JSON-like value (an event, a report) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {(redact(k) if isinstance(k, str) else k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_tree(item) for item in value)
    return value


def redacted(config: Mapping[str, object]) -> dict[str, object]:
    """A copy of a settings mapping fit to print: secret values masked."""
    return {
        key: MASK if (is_secret_key(key) or isinstance(value, SecretStr)) and value else value
        for key, value in config.items()
    }


# scheme://user:password@host: the password part of any URL in free text (a tracking
# URI in an MLflow error, a database URL in a driver's message).
# The scheme is bounded (RFC 3986 ones are short): unbounded, a long run of letters
# without "://" would be rescanned from each of its characters, quadratic in the text.
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}://[^/\s:@]*):[^/\s@]*@")


def mask_url_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL masked."""
    if "://" not in text:  # most text: one fast scan instead of the pattern's
        return text
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


# ------------------------------------------------------------------ the configuration


@dataclass
class _Found:
    secrets: dict[str, str] = field(default_factory=dict)  # secret -> the setting holding it
    public: list[str] = field(default_factory=list)  # every other text of the settings


def _url_parts(text: str, where: str, found: _Found, *, whole_is_secret: bool) -> None:
    """Sort a setting's text into secrets and public text; URLs give up their credentials."""
    # A schema registry setting may list several URLs, comma-separated.
    urls = [part.strip() for part in text.split(",")] if "://" in text else []
    if not urls:
        if whole_is_secret:
            found.secrets.setdefault(text, where)
        else:
            found.public.append(text)
        return
    for url in urls:
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:  # not a URL after all (e.g. a bad port)
            if whole_is_secret:
                found.secrets.setdefault(url, where)
            else:
                found.public.append(url)
            continue
        public = url
        if password:
            for form in (password, unquote(password)):
                found.secrets.setdefault(form, where)
            public = public.replace(f":{password}@", "@", 1)
        for key, value in parse_qsl(parts.query):
            if value and is_secret_key(key):  # ?token=..., ?password=...
                found.secrets.setdefault(value, where)
                public = public.replace(value, "")
        found.public.append(public)


def _walk(value: Any, where: str, found: _Found, *, secret: bool = False) -> None:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _walk(getattr(value, name), f"{where}.{name}" if where else name, found)
    elif isinstance(value, SecretStr):
        if value.get_secret_value():
            _url_parts(value.get_secret_value(), where, found, whole_is_secret=True)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found.public.append(str(key))
            _walk(item, f"{where}.{key}", found, secret=secret or is_secret_key(str(key)))
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _walk(item, where, found, secret=secret)
    elif isinstance(value, str) and value:
        _url_parts(value, where, found, whole_is_secret=secret)
    elif isinstance(value, Path):
        found.public.append(str(value))


def settings_secrets(settings: BaseModel) -> tuple[list[str], list[str]]:
    """The secrets a configuration holds, and the settings whose secret is too weak to search.

    A secret is searched for in free text unless it is shorter than
    ``MIN_SEARCHED_LENGTH`` or occurs in the configuration's public text (a topic name,
    a path, the user name of its own URL): masking it there would mask landfall's own
    words in every message. Such a secret is still masked where it is a URL's password.
    """
    found = _Found()
    _walk(settings, "", found)
    public = "\n".join(found.public)
    searched, weak = [], set()
    for secret, where in found.secrets.items():
        if len(secret) < MIN_SEARCHED_LENGTH or secret in public:
            weak.add(where)
        else:
            searched.append(secret)
    return sorted(searched, key=len, reverse=True), sorted(weak)


_warned: set[str] = set()


def register_settings(settings: BaseModel) -> None:
    """Collect the secrets of a loaded configuration once, for :func:`redact` to mask."""
    searched, weak = settings_secrets(settings)
    register_secrets(searched)
    weak = [where for where in weak if where not in _warned]
    _warned.update(weak)
    if weak:
        log.warning(
            "the secret in %s is too short or also appears in other settings (a name, a "
            "path), so it is masked only where it is a URL's password: choose a stronger one",
            ", ".join(weak),
        )


# ------------------------------------------------------------------- logs and crashes

_installed = False
_FORMATTER = logging.Formatter()


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken format string is the handler's to report
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and not record.exc_text:
        # Formatted now, redacted, and kept where every Formatter looks first.
        record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _print_redacted(
    exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None
) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))
    sys.stderr.flush()


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as the default hook: a thread that exits is no error
    name = args.thread.name if args.thread is not None else "unknown"
    sys.stderr.write(f"Exception in thread {name}:\n")
    _print_redacted(args.exc_type, args.exc_value, args.exc_traceback)


def install_redaction() -> None:
    """Send every log record and uncaught exception of this process through :func:`redact`.

    The hook sits where records are made (the log record factory), not on handlers:
    faust and uvicorn install handlers of their own, and a record logged through any of
    them is then redacted all the same. Tracebacks of uncaught exceptions (the main
    thread's and other threads') are printed redacted.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        make_record = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        sys.excepthook = _print_redacted
        threading.excepthook = _thread_excepthook


# --------------------------------------------------------------------------- files


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by its owner only.

    The file is created with mode 600 (a temporary beside it, then renamed over
    ``path``), so at no moment can another user read it, and a reader never sees it
    half written; an older copy with a wider mode is replaced, not reused.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
