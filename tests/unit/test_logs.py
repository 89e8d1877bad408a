"""Logs: one setup per process, text or JSON lines, the batch and trace on each line.

The integration test (tests/integration/test_json_logs.py) reads a running service's
log; these are the pieces: the formatters, the batch context, the variables' checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextvars import copy_context
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from landfall.errors import ConfigError
from landfall.logs import (
    batch_logging,
    configure_logging,
    current_batch,
    uvicorn_log_config,
)

LANDED = {
    "run_id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    "batch_id": "demo/2026-11-01",
    "dataset": "demo",
    "partition": "2026-11-01",
}


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Whatever a test configures on the root logger is undone after it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def _json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(capsys)]


def test_a_json_line_names_the_service_the_batch_and_the_span(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("validator", {"LANDFALL_LOG_FORMAT": "json"})
    tracer = TracerProvider().get_tracer("test")
    log = logging.getLogger("landfall.test")
    log.info("before any batch")
    with batch_logging(LANDED), tracer.start_as_current_span("validation") as span:
        log.warning("rows %d", 3)
    log.info("after it")

    before, during, after = _json_lines(capsys)
    context = span.get_span_context()
    assert during == {
        "timestamp": during["timestamp"],
        "level": "WARNING",
        "logger": "landfall.test",
        "message": "rows 3",
        "service": "validator",
        **LANDED,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }
    assert during["timestamp"].endswith("+00:00") and "T" in during["timestamp"]
    for outside in (before, after):
        assert set(outside) == {"timestamp", "level", "logger", "message", "service"}


def test_an_exception_logged_in_json_carries_its_traceback_in_one_line(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("featurizer", {"LANDFALL_LOG_FORMAT": "json"})
    try:
        raise ValueError("the partition is empty")
    except ValueError:
        logging.getLogger("landfall.test").exception("featurizing failed")

    [line] = _lines(capsys)
    logged = json.loads(line)
    assert logged["level"] == "ERROR" and logged["message"] == "featurizing failed"
    assert logged["exc_info"].startswith("Traceback (most recent call last):")
    assert logged["exc_info"].endswith("ValueError: the partition is empty")


def test_a_text_line_shows_the_run_when_there_is_one(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("predictor", {})
    log = logging.getLogger("landfall.test")
    with batch_logging(LANDED):
        log.info("scored")
    log.info("idle")

    scored, idle = _lines(capsys)
    assert scored.endswith(f" INFO predictor landfall.test run={LANDED['run_id']}: scored")
    assert idle.endswith(" INFO predictor landfall.test: idle")


def test_configured_twice_each_record_is_written_once_at_the_level_asked(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("up", {})
    configure_logging("up", {"LANDFALL_LOG_LEVEL": "warning", "LANDFALL_LOG_FORMAT": "JSON"})
    log = logging.getLogger("landfall.test")
    log.info("not shown")
    log.warning("shown")
    assert [line["message"] for line in _json_lines(capsys)] == ["shown"]


@pytest.mark.parametrize(
    ("variable", "value"), [("LANDFALL_LOG_FORMAT", "xml"), ("LANDFALL_LOG_LEVEL", "LOUD")]
)
def test_a_value_the_variable_does_not_take_is_an_error_naming_it(
    root_logging: None, variable: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}='{value}' is not one of "):
        configure_logging("demo", {variable: value})


def test_the_command_line_refuses_a_bad_log_format_with_one_clear_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDFALL_")}
    done = subprocess.run(
        [sys.executable, "-m", "landfall", "serve", "validator"],
        env={**env, "LANDFALL_LOG_FORMAT": "xml", "LANDFALL_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: LANDFALL_LOG_FORMAT='xml' is not one of text, json"


def test_the_batch_follows_work_handed_on_with_the_context_and_ends_with_the_block() -> None:
    seen: dict[str, object] = {}

    def look(where: str) -> None:
        seen[where] = current_batch()

    with batch_logging(LANDED):
        with_context = threading.Thread(target=copy_context().run, args=(look, "copied"))
        without = threading.Thread(target=look, args=("plain",))
        for thread in (with_context, without):
            thread.start()
            thread.join()
        with batch_logging({**LANDED, "run_id": "another"}):
            look("nested")
        look("inside")
    look("outside")

    assert getattr(seen["copied"], "run_id", None) == LANDED["run_id"]
    assert seen["plain"] is None
    assert getattr(seen["nested"], "run_id", None) == "another"
    assert getattr(seen["inside"], "run_id", None) == LANDED["run_id"]
    assert seen["outside"] is None


def test_two_asyncio_tasks_each_see_only_their_own_batch() -> None:
    # The reporter handles events in asyncio tasks: one run must not label another's lines.
    async def handle(run_id: str, started: asyncio.Event, other: asyncio.Event) -> str | None:
        with batch_logging({**LANDED, "run_id": run_id}):
            started.set()
            await other.wait()
            batch = current_batch()
            return batch.run_id if batch else None

    async def both() -> list[str | None]:
        first, second = asyncio.Event(), asyncio.Event()
        return list(await asyncio.gather(handle("a", first, second), handle("b", second, first)))

    assert asyncio.run(both()) == ["a", "b"]


def test_uvicorn_logs_through_the_landfall_handler(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    configure_logging("api", {"LANDFALL_LOG_FORMAT": "json"})
    # uvicorn applies its log_config as it is configured; with its own default, its
    # loggers write through handlers of their own in its own format instead.
    uvicorn.Config(app=lambda *_: None, log_config=uvicorn_log_config(), log_level="info")
    logging.getLogger("uvicorn.error").info("Started server process")

    [line] = _json_lines(capsys)
    assert line["logger"] == "uvicorn.error" and line["service"] == "api"
    assert line["message"] == "Started server process"


def test_an_unsampled_span_still_gives_its_trace_id(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # A trace its producer did not sample still has an id: a log search can use it.
    configure_logging("reporter", {"LANDFALL_LOG_FORMAT": "json"})
    parent = trace.SpanContext(
        trace_id=0x1F, span_id=0x2F, is_remote=True, trace_flags=trace.TraceFlags(0)
    )
    with trace.use_span(trace.NonRecordingSpan(parent)):
        logging.getLogger("landfall.test").info("reporting")
    [line] = _json_lines(capsys)
    assert (line["trace_id"], line["span_id"]) == (f"{0x1F:032x}", f"{0x2F:016x}")
