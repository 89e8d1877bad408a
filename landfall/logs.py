"""Logging for every process landfall runs: one setup, text or JSON lines, batch ids.

Every process (the CLI, each ``landfall serve`` service, faust in the reporter, and
uvicorn under the job API when given :func:`uvicorn_log_config`) logs through the one
handler :func:`configure_logging` puts on the root logger, to standard error:

- ``LANDFALL_LOG_LEVEL``: DEBUG, INFO (default), WARNING, ERROR or CRITICAL;
- ``LANDFALL_LOG_FORMAT``: ``text`` (default, for people) or ``json`` (one object per
  line, for a log collector).

A line logged while a batch is handled (inside :func:`batch_logging`, which the runner
and the reporter enter per event) names the batch: ``run_id``, ``batch_id``,
``dataset``, ``partition``; and a line logged under an OpenTelemetry span carries its
``trace_id`` and ``span_id``, so a log search leads to the run's trace and back. The
batch is read from a context variable, so it follows the work into a worker thread
started with the caller's context (``contextvars.copy_context().run``), and each
asyncio task of the reporter sees only its own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from landfall.errors import ConfigError
from landfall.redact import install_redaction

__all__ = [
    "LOG_FORMATS",
    "LOG_FORMAT_VARIABLE",
    "LOG_LEVEL_VARIABLE",
    "BatchFields",
    "JsonFormatter",
    "TextFormatter",
    "batch_logging",
    "configure_logging",
    "current_batch",
    "uvicorn_log_config",
]

LOG_LEVEL_VARIABLE = "LANDFALL_LOG_LEVEL"
LOG_FORMAT_VARIABLE = "LANDFALL_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Libraries that log each call or request at INFO: their warnings are what matters.
_QUIET_LIBRARIES = ("py4j", "mlflow", "alembic", "urllib3")
# What a record may carry beyond the standard fields, in the order a JSON line shows it.
_CONTEXT_FIELDS = ("run_id", "batch_id", "dataset", "partition", "trace_id", "span_id")


@dataclass(frozen=True)
class BatchFields:
    """The batch a line is logged for (any field the event does not carry is None)."""

    run_id: str | None = None
    batch_id: str | None = None
    dataset: str | None = None
    partition: str | None = None

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> BatchFields:
        """The fields of an event's record (data-landed, a stage's completion event)."""

        def text(key: str) -> str | None:
            value = record.get(key)
            return None if value is None or value == "" else str(value)

        return cls(text("run_id"), text("batch_id"), text("dataset"), text("partition"))


_current_batch: ContextVar[BatchFields | None] = ContextVar("landfall_batch", default=None)


@contextmanager
def batch_logging(record: Mapping[str, Any]) -> Iterator[None]:
    """Every line logged inside, in this context, names the batch of event ``record``."""
    token = _current_batch.set(BatchFields.of(record))
    try:
        yield
    finally:
        _current_batch.reset(token)


def current_batch() -> BatchFields | None:
    """The batch being handled in this context, if any."""
    return _current_batch.get()


class _ContextFilter(logging.Filter):
    """Stamps each record, as it is logged, with the batch and the span active then.

    A filter on the handler runs in the thread that logs, where the context variable
    and the active span are the caller's; a formatter alone might run elsewhere.
    Fields a caller passed itself (``extra=``) are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields: dict[str, str | None] = dict.fromkeys(_CONTEXT_FIELDS)
        batch = _current_batch.get()
        if batch is not None:
            fields.update(asdict(batch))
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace_id"] = trace.format_trace_id(span.trace_id)
            fields["span_id"] = trace.format_span_id(span.span_id)
        for name, value in fields.items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL service logger [run=RUN_ID]: message``, then any traceback."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s%(run_label)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        run_id = getattr(record, "run_id", None)
        record.run_label = f" run={run_id}" if run_id else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, service,
    the batch and trace fields when set, and ``exc_info``/``stack_info`` as text."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        # As logging.Formatter does: formatted once, kept (redaction may have set it).
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class _LandfallHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler configure_logging installs (told apart to replace it, not add)."""


def _setting(environ: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = environ.get(name, "")
    value = raw.strip() or default
    if value.upper() in choices:
        return value.upper()
    if value.lower() in choices:
        return value.lower()
    raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}")


def configure_logging(service: str, environ: Mapping[str, str] | None = None) -> None:
    """Send this process's logs to standard error, as the environment asks.

    ``service`` names the process on every line (a service's name, or the CLI
    command's). Raises ConfigError naming the variable when LANDFALL_LOG_LEVEL or
    LANDFALL_LOG_FORMAT holds a value it does not take. Called again, it replaces
    its handler: one line per record, whatever the number of calls.
    """
    environ = os.environ if environ is None else environ
    level = _setting(environ, LOG_LEVEL_VARIABLE, "INFO", _LOG_LEVELS)
    log_format = _setting(environ, LOG_FORMAT_VARIABLE, "text", LOG_FORMATS)
    # Every log line and traceback of the process, whoever's handler writes it.
    install_redaction()
    handler = _LandfallHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else TextFormatter(service))
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LandfallHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in _QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers write through ours, not handlers of its own.

    uvicorn's default configuration gives its loggers their own stream handlers and
    format and stops them from propagating; this one only lets them propagate, so their
    lines reach the root handler of :func:`configure_logging` (JSON included).
    """
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: {"handlers": [], "propagate": True} for name in names},
    }
