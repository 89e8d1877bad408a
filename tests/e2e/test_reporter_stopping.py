"""Stopping the reporter with a report in flight, against real processes, Spark and Kafka.

The reporter stops as the runner's services do (tests/e2e/test_stopping.py): the first
SIGTERM lets the report in flight finish within ``runner.shutdown_grace_s`` (report
written, batch-reported published, the event's offset committed); past the grace it is
abandoned, nothing is published and the offset stays uncommitted, so a restarted
reporter reports the run, once.

The report is held in flight the way a real one can be: the results database is busy.
A first run is reported to show the reporter up (its own start-up writes done); then the
test takes the SQLite database's write lock, as another writer would, publishes a second
run's batch-predicted and waits until the reporter counts that batch in progress: it is
waiting to record the run, and cannot finish until the test lets go. (Holding the lock
only once the run's prediction stage was recorded raced the report, which now takes
milliseconds.)
"""

from __future__ import annotations

import signal
import sqlite3
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.kafka_clients import kafka_client_config
from landfall.serve import ensure_all_topics
from landfall.shutdown import ABANDON_WAIT_S
from tests.conftest import topic_messages
from tests.reporting_support import (
    LandfallProcess,
    RunEvents,
    live_settings,
    publish_events,
    write_run,
)

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

# The run reported first, to see the reporter up; then the run held in flight.
WARM_UP_PARTITION = "2026-11-05"
PARTITION = "2026-11-06"
# What the reporter needs to leave its group, flush and stop Spark once its report was
# finished or abandoned (a few seconds measured; the rest is room for a loaded machine).
CLOSING_S = 15.0
START_TIMEOUT_S = 180.0


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _reported(settings: Settings, run_id: str) -> list[dict]:
    """The batch-reported events published for ``run_id``."""
    topic = settings.kafka.topics.reported.name
    codec = EventCodec()
    found = []
    for message in topic_messages(settings, topic):
        kind, record = codec.decode(message.value(), topic=topic)
        if kind is EventType.BATCH_REPORTED and record["run_id"] == run_id:
            found.append(record)
    return found


def _committed(settings: Settings) -> int:
    """How many of batch-predicted's events the reporter's group committed past."""
    topic = settings.kafka.topics.predicted.name
    consumer = Consumer(
        {**kafka_client_config(settings), "group.id": f"{settings.kafka.group_prefix}-reporter"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed(
            [TopicPartition(topic, number) for number in partitions], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


def _batches_in_progress(settings: Settings) -> float:
    """The reporter's own count of the batches it is working on, from its metrics."""
    url = f"http://127.0.0.1:{settings.telemetry.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0  # not serving metrics yet
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "landfall_batches_in_progress" and sample.labels == {
                "service": "reporter"
            }:
                return sample.value
    return 0.0


@contextmanager
def _database_busy(settings: Settings) -> Iterator[None]:
    """Hold the results database's write lock, as another writer would, for the block."""
    path = make_url(settings.results_db_url).database
    assert path, settings.results_db_url
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


@contextmanager
def _reporter_with_a_report_in_flight(
    kafka_bootstrap: str, home: Path, grace_s: float
) -> Iterator[tuple[Settings, Path, LandfallProcess, RunEvents]]:
    """A reporter process working on the report of a run that it cannot record while the
    block runs: the results database is busy until the block ends."""
    settings, config_file = live_settings(
        home, kafka_bootstrap, LANDFALL_RUNNER__SHUTDOWN_GRACE_S=str(grace_s)
    )
    ensure_all_topics(settings)
    warm_up = write_run(settings.lake, WARM_UP_PARTITION, seed=5)
    run = write_run(settings.lake, PARTITION, seed=6)
    reporter = LandfallProcess("reporter", config_file, home / "reporter.log")
    publish_events(settings, [(EventType.BATCH_PREDICTED, warm_up.predicted)])

    def warm_up_reported() -> bool:
        reporter.check_alive()
        return bool(_reported(settings, warm_up.run_id))

    try:
        _wait_until(warm_up_reported, START_TIMEOUT_S, "the reporter to report a first run")
        with _database_busy(settings):
            publish_events(settings, [(EventType.BATCH_PREDICTED, run.predicted)])

            def in_flight() -> bool:
                reporter.check_alive()
                return _batches_in_progress(settings) == 1

            _wait_until(in_flight, 60, "the reporter to take up the second run")
            yield settings, config_file, reporter, run
    except BaseException:
        reporter.stop()
        raise


def test_sigterm_lets_the_report_in_flight_finish_within_the_grace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    grace = 120.0
    in_flight = _reporter_with_a_report_in_flight(kafka_bootstrap, tmp_path, grace)
    with in_flight as (settings, _, reporter, run):
        signalled = time.monotonic()
        reporter.process.send_signal(signal.SIGTERM)
        time.sleep(3)
        # Still there, its report waiting for the database: not abandoned, not done.
        reporter.check_alive()
        assert _reported(settings, run.run_id) == []
    try:
        code = reporter.process.wait(grace + CLOSING_S)
        stopped_after = time.monotonic() - signalled
    finally:
        reporter.stop()
    log = reporter.log.read_text(errors="replace")
    print(f"\nSIGTERM mid-report, grace {grace:g}s: exited {stopped_after:.1f}s later")
    assert code == 0, log[-4000:]
    assert "a report in flight has 120s to finish" in log
    assert "past its grace period" not in log, log[-4000:]
    # The report went all the way: written, announced once, its event's offset committed
    # (after the first run's).
    (reported,) = _reported(settings, run.run_id)
    assert (reported["status"], reported["rows_scored"]) == ("SUCCEEDED", 380)
    assert (settings.lake / reported["report_path"]).is_file()
    assert _committed(settings) == 2


def test_sigterm_past_the_grace_abandons_the_report_and_a_restart_reports_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    grace = 1.0
    in_flight = _reporter_with_a_report_in_flight(kafka_bootstrap, tmp_path, grace)
    # The database stays busy past the grace: the report cannot finish in time.
    with in_flight as (settings, config_file, reporter, run):
        signalled = time.monotonic()
        reporter.process.send_signal(signal.SIGTERM)
        try:
            code = reporter.process.wait(grace + ABANDON_WAIT_S + CLOSING_S)
        finally:
            reporter.stop()
        stopped_after = time.monotonic() - signalled
    first_log = reporter.log.read_text(errors="replace")
    print(f"\nSIGTERM mid-report, grace {grace:g}s: exited {stopped_after:.1f}s later")
    assert code == 0, first_log[-4000:]
    assert "past its grace period: cancelling reporting" in first_log
    # Nothing of the report was announced, and its event's offset was not committed (the
    # first run's was).
    assert _reported(settings, run.run_id) == []
    assert _committed(settings) == 1

    # Started again (the database free), the reporter reports the run, once.
    restarted = LandfallProcess("reporter", config_file, tmp_path / "restarted.log")
    try:

        def reported() -> bool:
            restarted.check_alive()
            return bool(_reported(settings, run.run_id))

        _wait_until(reported, START_TIMEOUT_S, "the run to be reported after the restart")
        _wait_until(lambda: _committed(settings) == 2, 30, "the event's offset to be committed")
    finally:
        assert restarted.stop() == 0
    (again,) = _reported(settings, run.run_id)
    assert again["status"] == "SUCCEEDED"
