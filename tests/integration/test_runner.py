"""The shared runner loop against a real broker: commits, retries, failures, shutdown.

The service here is a probe implementing the ``Service`` protocol (the runner's
extension point), so each runner behaviour can be provoked on purpose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from landfall.config import Settings
from landfall.contracts import EventType, follow_up
from landfall.errors import RetryableError, StageFailedError
from landfall.events import EventWatcher, publish_data_landed
from landfall.runner import Outgoing, Runner
from tests.conftest import isolated_settings

pytestmark = pytest.mark.broker

Behaviour = Callable[["ProbeService", dict[str, Any]], list[Outgoing]]


class ProbeService:
    """Consumes data-landed and does whatever the test's behaviour says."""

    name = "probe"
    stage = "probing"

    def __init__(self, settings: Settings, behaviour: Behaviour) -> None:
        self.settings = settings
        self.behaviour = behaviour
        self.calls: list[dict[str, Any]] = []
        self.consumes = {settings.kafka.topics.landed.name: frozenset({EventType.DATA_LANDED})}
        self.cancelled = threading.Event()
        self.runner: Runner | None = None

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        self.calls.append(record)
        return self.behaviour(self, record)

    def validated(self, record: dict[str, Any]) -> list[Outgoing]:
        event = follow_up(
            EventType.BATCH_VALIDATED, record, producer="probe/0", output_path="x",
            quarantine_path="q", manifest_path="m", rows_landed=1, rows_valid=1,
            rows_quarantined=0, duration_ms=1,
        )  # fmt: skip
        topic = self.settings.kafka.topics.validated.name
        return [Outgoing(topic, EventType.BATCH_VALIDATED, event)]

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        pass


@pytest.fixture
def probe_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return isolated_settings(
        kafka_bootstrap, tmp_path, "runner", LANDFALL_RUNNER__RETRY_BACKOFF_S="0.05"
    )


@pytest.fixture
def watch(probe_settings: Settings) -> Iterator[EventWatcher]:
    topics = probe_settings.kafka.topics
    watcher = EventWatcher(probe_settings, [topics.validated.name, topics.failed.name])
    yield watcher
    watcher.close()


def _run_once(settings: Settings, behaviour: Behaviour, **run: Any) -> tuple[ProbeService, Any]:
    service = ProbeService(settings, behaviour)
    runner = Runner(service, settings)
    service.runner = runner
    try:
        stats = runner.run(**({"max_messages": 1, "timeout": 60} | run))
    finally:
        runner.close()
    return service, stats


def _nothing_left(settings: Settings) -> bool:
    """A new member of the same group finds no uncommitted message."""
    _, stats = _run_once(settings, ProbeService.validated, timeout=10)
    return stats.consumed == 0


def test_a_handled_event_is_published_then_committed(probe_settings: Settings, watch) -> None:
    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    _, stats = _run_once(probe_settings, ProbeService.validated)
    assert (stats.consumed, stats.handled) == (1, 1)
    _, kind, event = watch.wait_for(lambda *_: True, timeout=30)
    assert kind is EventType.BATCH_VALIDATED and event["run_id"] == landed["run_id"]
    assert _nothing_left(probe_settings)


def test_transient_errors_are_retried_with_backoff(probe_settings: Settings) -> None:
    def flaky(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        if len(service.calls) < 3:
            raise RetryableError("registry timed out")
        return service.validated(record)

    publish_data_landed(probe_settings, "demo", "2026-11-01")
    service, stats = _run_once(probe_settings, flaky)
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
        service, stats = _run_once(probe_settings, behaviour)
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
    assert _nothing_left(probe_settings)


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
    service, stats = _run_once(probe_settings, crashes_once)
    assert len(service.calls) == 2 and stats.handled == 1

    table = tmp_path / "table"
    spark.range(5).write.parquet(str(table))
    corrupt = next(table.glob("part-*.parquet"))
    corrupt.write_bytes(b"not parquet" * 20)

    def reads_corrupt_file(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        spark.read.schema("id long").parquet(str(table)).collect()
        return service.validated(record)

    landed = publish_data_landed(probe_settings, "demo", "2026-11-02")
    service, stats = _run_once(probe_settings, reads_corrupt_file)
    assert len(service.calls) == 1 and stats.failed == 1  # no retry: it would fail again
    _, _, failed = watch.wait_for(lambda _t, _k, r: r["run_id"] == landed["run_id"], timeout=30)
    assert failed["retryable"] is False
    assert failed["reason"].startswith("a Spark job failed: ") and corrupt.name in failed["reason"]


def test_a_stop_during_work_abandons_the_batch_uncommitted(probe_settings: Settings) -> None:
    def interrupted(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        assert service.runner is not None
        service.runner.stop()  # as SIGTERM would, while the stage is running
        assert service.cancelled.wait(10), "the runner did not cancel the stage"
        raise RuntimeError("Spark job cancelled")

    landed = publish_data_landed(probe_settings, "demo", "2026-11-01")
    _, stats = _run_once(probe_settings, interrupted)
    assert (stats.abandoned, stats.failed, stats.produced) == (1, 0, [])
    # The message was not committed: the next instance of the service gets it again.
    service, stats = _run_once(probe_settings, ProbeService.validated)
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
    service, stats = _run_once(settings, slow, max_messages=2, timeout=90)
    # Each message handled once: no rebalance handed the first one out again.
    assert [c["partition"] for c in service.calls] == ["2026-11-01", "2026-11-02"]
    assert stats.handled == 2
    assert _nothing_left(settings)


def test_the_runner_counts_batches_rows_retries_failures_and_dead_letters(
    probe_settings: Settings,
) -> None:
    from confluent_kafka import Producer
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"service": "probe", **labels}) or 0.0

    def snapshot() -> dict[str, float]:
        return {
            "succeeded": value(
                "batch_processing_duration_seconds_count", dataset="demo", outcome="succeeded"
            ),
            "failed": value(
                "batch_processing_duration_seconds_count", dataset="demo", outcome="failed"
            ),
            "rows": value("records_processed_total", dataset="demo"),
            "retries": value("processing_errors_total", dataset="demo", kind="retry"),
            "batch_failed": value("processing_errors_total", dataset="demo", kind="batch_failed"),
            "dead_letters": value("processing_errors_total", dataset="unknown", kind="dead_letter"),
        }

    def retried_then_failed(service: ProbeService, record: dict[str, Any]) -> list[Outgoing]:
        if len(service.calls) == 1:
            raise RetryableError("registry timed out")
        raise StageFailedError("column x is missing")

    before = snapshot()
    publish_data_landed(probe_settings, "demo", "2026-11-01")
    _run_once(probe_settings, ProbeService.validated)
    publish_data_landed(probe_settings, "demo", "2026-11-02")
    _run_once(probe_settings, retried_then_failed)
    producer = Producer({"bootstrap.servers": probe_settings.kafka.bootstrap})
    producer.produce(probe_settings.kafka.topics.landed.name, value=b"\x00 not an event")
    assert producer.flush(30) == 0
    _, stats = _run_once(probe_settings, ProbeService.validated)
    assert stats.dead_lettered == 1

    after = snapshot()
    assert {key: after[key] - before[key] for key in after} == {
        "succeeded": 1,
        "failed": 1,
        "rows": 1,  # the probe's batch-validated says it validated one landed row
        "retries": 1,
        "batch_failed": 1,
        "dead_letters": 1,
    }
    assert REGISTRY.get_sample_value("batches_in_progress", {"service": "probe"}) == 0
    last = REGISTRY.get_sample_value(
        "last_success_timestamp_seconds", {"service": "probe", "dataset": "demo"}
    )
    assert last is not None and last > time.time() - 300
