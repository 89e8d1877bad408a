"""The per-event pieces the runner and the faust reporter share (landfall/processing.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.errors import InvalidEventError, RetryableError, StageFailedError
from landfall.kafka_clients import event_codec
from landfall.processing import (
    Abandoned,
    Outgoing,
    backoff_s,
    batch_failed,
    call_with_retries,
    decode_incoming,
)
from tests.conftest import settings_for
from tests.reporting_support import write_run


@pytest.fixture
def fast(tmp_path: Path) -> Settings:
    """Retries a tenth of a second apart, capped at a quarter."""
    return settings_for(
        tmp_path,
        LANDFALL_RUNNER__RETRY_BACKOFF_S="0.1",
        LANDFALL_RUNNER__RETRY_BACKOFF_MAX_S="0.25",
    )


def _predicted(settings: Settings) -> dict:
    """A batch-predicted event of a run written to the lake as the stages would."""
    return write_run(settings.lake, "2026-11-01").predicted


def test_the_backoff_doubles_up_to_its_cap_with_jitter(fast: Settings) -> None:
    # Each wait is between half its step and the step: 0.1, 0.2, then the 0.25 cap.
    for attempt, step in ((1, 0.1), (2, 0.2), (3, 0.25), (4, 0.25), (100, 0.25), (10**6, 0.25)):
        waits = [backoff_s(fast.runner, attempt) for _ in range(200)]
        assert all(step / 2 <= wait <= step for wait in waits), (attempt, min(waits), max(waits))
        # Jittered: instances that failed together do not retry together.
        assert len(set(waits)) > 100
        assert max(waits) - min(waits) > step / 4


def test_a_transient_fault_is_retried_and_a_lasting_one_is_raised(fast: Settings) -> None:
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RetryableError("broker away")
        return "done"

    never = threading.Event()
    assert call_with_retries(flaky, fast, service="t", dataset="demo", interrupt=never) == "done"
    # Two backoffs, each at least half its step (0.1, then 0.2).
    assert len(calls) == 3 and calls[2] - calls[0] >= (0.1 + 0.2) / 2 - 0.02

    tries: list[int] = []

    def always() -> str:
        tries.append(1)
        raise RetryableError("still away")

    # The last fault itself comes out, after runner.max_attempts attempts in all.
    with pytest.raises(RetryableError, match="still away"):
        call_with_retries(always, fast, service="t", dataset="demo", interrupt=never)
    assert len(tries) == fast.runner.max_attempts == 3
    with pytest.raises(StageFailedError):  # not transient: not retried
        call_with_retries(
            lambda: (_ for _ in ()).throw(StageFailedError("bad rows")),
            fast,
            service="t",
            dataset="demo",
            interrupt=never,
        )


def test_an_interrupt_ends_the_attempts_in_the_middle_of_a_backoff(tmp_path: Path) -> None:
    slow = settings_for(tmp_path, LANDFALL_RUNNER__RETRY_BACKOFF_S="30")
    interrupt = threading.Event()

    def failing() -> None:
        threading.Timer(0.2, interrupt.set).start()
        raise RetryableError("broker away")

    started = time.monotonic()
    with pytest.raises(Abandoned):
        call_with_retries(failing, slow, service="t", dataset="demo", interrupt=interrupt)
    assert time.monotonic() - started < 5  # not the 30 s backoff


def test_batch_failed_says_why_and_whether_a_retry_may_help(fast: Settings) -> None:
    record = _predicted(fast)

    def failed(exc: Exception) -> Outgoing:
        return batch_failed(
            exc, EventType.BATCH_PREDICTED, record, settings=fast, producer="r/1", stage="reporting"
        )

    stage = failed(StageFailedError("no rows", retryable=True, details={"rule": "x"}))
    assert stage.topic == fast.kafka.topics.failed.name
    assert stage.event_type is EventType.BATCH_FAILED
    fields = {k: stage.record[k] for k in ("reason", "retryable", "stage", "details", "run_id")}
    assert fields == {
        "reason": "no rows",
        "retryable": True,
        "stage": "reporting",
        "details": {"rule": "x"},
        "run_id": record["run_id"],
    }
    assert stage.record["failed_event_type"] == EventType.BATCH_PREDICTED.value
    transient = failed(RetryableError("db locked")).record
    assert (transient["reason"], transient["retryable"]) == (
        f"gave up after {fast.runner.max_attempts} attempts: db locked",
        True,
    )
    leaked = failed(ValueError("cannot reach postgresql://u:hunter2@db/x")).record
    assert leaked["retryable"] is False
    assert leaked["reason"].startswith("ValueError: cannot reach")
    assert "hunter2" not in leaked["reason"]


def test_decoding_refuses_oversized_undecodable_and_misplaced_events(fast: Settings) -> None:
    codec = event_codec(fast)
    topics = fast.kafka.topics
    value = codec.encode(EventType.BATCH_PREDICTED, _predicted(fast), topic=topics.predicted.name)
    accepted = frozenset({EventType.BATCH_PREDICTED})
    event_type, record = decode_incoming(
        codec, fast, topics.predicted.name, value, accepted, "reporter"
    )
    assert (event_type, record["rows"]) == (EventType.BATCH_PREDICTED, 380)
    with pytest.raises(InvalidEventError, match="reporter handles only BatchFailed there"):
        decode_incoming(
            codec,
            fast,
            topics.failed.name,
            value,
            frozenset({EventType.BATCH_FAILED}),
            "reporter",
        )
    with pytest.raises(InvalidEventError, match="over runner.max_message_bytes"):
        decode_incoming(
            codec, fast, topics.predicted.name, b"x" * (2 * 1024 * 1024), accepted, "reporter"
        )
    with pytest.raises(InvalidEventError):
        decode_incoming(codec, fast, topics.predicted.name, b"\x00junk", accepted, "reporter")
