"""The shared runner loop against a real broker: commits, retries, failures, shutdown.

The service is a probe (tests/runner_support.py), so each runner behaviour can be
provoked on purpose. The broker's faults, metrics and poison pills:
test_runner_faults.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.errors import RetryableError, StageFailedError
from landfall.events import publish_data_landed
from landfall.runner import Outgoing, Runner
from tests.conftest import isolated_settings
from tests.runner_support import (
    ProbeService,
    nothing_left,
    run_once,
    topic_events,
)

pytestmark = pytest.mark.broker


def test_a_handled_event_is_published_then_committed(probe_settings: Settings, watch) -> None:
    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    _, stats = run_once(probe_settings, ProbeService.validated)
    assert (stats.consumed, stats.handled) == (1, 1)
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_VALIDATED and event["run_id"] == landed["run_id"]
    assert nothing_left(probe_settings)


def test_transient_errors_are_retried_with_backoff(probe_settings: Settings) -> None:
    def flaky(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        if len(service.calls) < 3:
            raise RetryableError("registry timed out")
        return service.validated(record)

    publish_data_landed(probe_settings, "demo", "2026-11-01")
    service, stats = run_once(probe_settings, flaky)
    assert len(service.calls) == 3 and stats.handled == 1


def test_exhausted_retries_and_stage_errors_become_batch_failed(
    probe_settings: Settings, watch
) -> None:
    def always_down(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        raise RetryableError("registry unreachable")

    def bad_data(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        raise StageFailedError("column x is missing")

    def bug(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        raise ZeroDivisionError("division by zero")

    runs = {}
    for behaviour in (always_down, bad_data, bug):
        landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
        service, stats = run_once(probe_settings, behaviour)
        assert stats.failed == 1
        runs[behaviour.__name__] = landed["run_id"], len(service.calls)

    def failure(run_id: str) -> dict[str, Any]:
        return watch.wait_for(lambda _t, _k, rec: rec["run_id"] == run_id, timeout=30)[2]

    down = failure(runs["always_down"][0])
    assert runs["always_down"][1] == probe_settings.runner.max_attempts
    assert down["retryable"] is True and "gave up after 3 attempts" in down["reason"]
    assert down["stage"] == "probing"
    assert down["failed_event_type"] == EventType.DATA_LANDED.value
    data = failure(runs["bad_data"][0])
    assert (data["retryable"], data["reason"]) == (False, "column x is missing")
    assert failure(runs["bug"][0])["reason"] == "ZeroDivisionError: division by zero"
    assert nothing_left(probe_settings)


def _crash_worker(rows):  # type: ignore[no-untyped-def]
    import os

    os._exit(3)  # a Python worker killed mid-job, as the OOM killer would
    yield from rows


def test_a_crashed_spark_worker_is_retried_and_corrupt_data_fails_the_batch(
    spark, probe_settings: Settings, watch, tmp_path: Path
) -> None:
    def crashes_once(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        job = spark.sparkContext.parallelize([1, 2], 2)
        if len(service.calls) == 1:
            job.mapPartitions(_crash_worker).collect()
        assert job.sum() == 3
        return service.validated(record)

    publish_data_landed(probe_settings, "demo", "2026-11-01")
    service, stats = run_once(probe_settings, crashes_once)
    assert len(service.calls) == 2 and stats.handled == 1

    table = tmp_path / "table"
    spark.range(5).write.parquet(str(table))
    corrupt = next(table.glob("part-*.parquet"))
    corrupt.write_bytes(b"not parquet" * 20)

    def reads_corrupt_file(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        spark.read.schema("id long").parquet(str(table)).collect()
        return service.validated(record)

    landed = publish_data_landed(probe_settings, "demo", "2026-11-02")
    service, stats = run_once(probe_settings, reads_corrupt_file)
    assert len(service.calls) == 1 and stats.failed == 1  # no retry: it would fail again
    _, _, failed = watch.wait_for(lambda _t, _k, r: r["run_id"] == landed["run_id"], timeout=30)
    assert failed["retryable"] is False
    assert failed["reason"].startswith("a Spark job failed: ") and corrupt.name in failed["reason"]


def test_a_stop_during_work_abandons_the_batch_uncommitted(probe_settings: Settings) -> None:
    def interrupted(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=0)  # as SIGTERM past its grace would, mid-stage
        assert service.cancelled.wait(10), "the runner did not cancel the stage"
        raise RuntimeError("Spark job cancelled")

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    _, stats = run_once(probe_settings, interrupted)
    assert (stats.abandoned, stats.failed, stats.produced) == (1, 0, [])
    # The message was not committed: the next instance of the service gets it again.
    service, stats = run_once(probe_settings, ProbeService.validated)
    assert stats.handled == 1 and service.calls[0]["run_id"] == landed["run_id"]


def test_a_stop_lets_the_stage_finish_and_commit_within_its_grace(
    probe_settings: Settings, watch
) -> None:
    def stopped_midway(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=30)  # as SIGTERM would, while the stage is running
        time.sleep(1.5)  # the rest of the stage, well inside the grace
        return service.validated(record)

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    later = publish_data_landed(probe_settings, "demo", "2026-11-01")  # same partition, after
    service, stats = run_once(probe_settings, stopped_midway, max_messages=None)
    # The batch in flight is published and committed; nothing after it is started.
    assert (stats.handled, stats.abandoned, len(service.calls)) == (1, 0, 1)
    assert not service.cancelled.is_set()
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_VALIDATED and event["run_id"] == landed["run_id"]
    service, stats = run_once(probe_settings, ProbeService.validated)
    assert [c["run_id"] for c in service.calls] == [later["run_id"]]


def test_a_second_stop_abandons_the_stage_at_once(probe_settings: Settings) -> None:
    def stopped_twice(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=60)
        assert not service.cancelled.wait(1), "cancelled within the grace"
        service.runner.stop()  # a second SIGTERM or Ctrl-C
        assert service.cancelled.wait(10), "the runner did not cancel the stage"
        raise RuntimeError("Spark job cancelled")

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    started = time.monotonic()
    _, stats = run_once(probe_settings, stopped_twice)
    assert time.monotonic() - started < 30
    assert (stats.abandoned, stats.failed, stats.produced) == (1, 0, [])
    service, stats = run_once(probe_settings, ProbeService.validated)
    assert stats.handled == 1 and service.calls[0]["run_id"] == landed["run_id"]


def test_a_stage_that_ignores_its_cancellation_is_not_waited_for(
    probe_settings: Settings,
) -> None:
    from landfall.shutdown import ABANDON_WAIT_S

    release = threading.Event()

    def deaf(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop(grace_s=0.5)
        release.wait(120)  # pure Python work: nothing Spark could cancel
        return service.validated(record)

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    service = ProbeService(probe_settings, deaf)
    runner = Runner(service, probe_settings)
    service.runner = runner
    try:
        started = time.monotonic()
        stats = runner.run(max_messages=1, timeout=60)
        took = time.monotonic() - started
        assert service.cancelled.is_set()
        assert runner.stage_still_running
    finally:
        runner.close()
        release.set()  # the stage ends after its runner gave up on it; its result is dropped
    print(f"\nrun returned {took:.1f}s after the message came, the stage still running")
    assert took < 0.5 + ABANDON_WAIT_S + 10
    assert (stats.abandoned, stats.produced) == (1, [])
    time.sleep(1)
    topics = probe_settings.kafka.topics
    assert topic_events(probe_settings, topics.validated.name) == []
    service, stats = run_once(probe_settings, ProbeService.validated)
    assert stats.handled == 1 and service.calls[0]["run_id"] == landed["run_id"]


def test_a_stage_longer_than_the_poll_interval_keeps_its_assignment(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(
        kafka_bootstrap, tmp_path, "long", LANDFALL_KAFKA_MAX_POLL_INTERVAL_MS="7000"
    )

    def slow(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        time.sleep(12)  # well past max.poll.interval.ms
        return service.validated(record)

    publish_data_landed(settings, "demo", "2026-11-01")
    publish_data_landed(settings, "demo", "2026-11-02")
    service, stats = run_once(settings, slow, max_messages=2, timeout=90)
    # Each message handled once: no rebalance handed the first one out again. (The
    # two events have different keys, so they may sit on different partitions and
    # come in either order.)
    assert sorted(c["partition"] for c in service.calls) == ["2026-11-01", "2026-11-02"]
    assert stats.handled == 2
    assert nothing_left(settings)
