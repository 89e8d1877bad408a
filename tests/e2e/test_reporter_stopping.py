"""Stopping the reporter with a report in flight, against real processes, Spark and Kafka.

The reporter stops as the runner's services do (tests/e2e/test_stopping.py): the first
SIGTERM lets the report in flight finish within ``runner.shutdown_grace_s`` (report
written, batch-reported published, the event's offset committed); past the grace it is
abandoned, nothing is published and the offset stays uncommitted, so a restarted
reporter reports the run, once.

The report is held in flight the way a real one can be: the results database is busy.
Once the reporter has recorded the run's prediction stage (it then builds the report),
the test takes the SQLite database's write lock, as another writer would, so the
report cannot be recorded until the test lets go.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.engine import make_url

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.kafka_clients import kafka_client_config
from landfall.results import RunHistory
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
    """How far the reporter's group committed on batch-predicted, which holds one event."""
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


def _prediction_recorded(settings: Settings, run_id: str) -> bool:
    history = RunHistory.open(settings.results_db_url)
    try:
        run = history.run(run_id)
    finally:
        history.close()
    return run is not None and any(s["stage"] == "prediction" for s in run["stages"])


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


def _reporter_with_a_report_in_flight(
    kafka_bootstrap: str, home: Path, grace_s: float
) -> tuple[Settings, Path, LandfallProcess, RunEvents]:
    """A reporter process that has just started the report of a run (its prediction
    stage recorded: the report is being built now)."""
    settings, config_file = live_settings(
        home, kafka_bootstrap, LANDFALL_RUNNER__SHUTDOWN_GRACE_S=str(grace_s)
    )
    ensure_all_topics(settings)
    run = write_run(settings.lake, PARTITION, seed=6)
    reporter = LandfallProcess("reporter", config_file, home / "reporter.log")
    publish_events(settings, [(EventType.BATCH_PREDICTED, run.predicted)])

    def started() -> bool:
        reporter.check_alive()
        return _prediction_recorded(settings, run.run_id)

    _wait_until(started, START_TIMEOUT_S, "the reporter to start the run's report")
    return settings, config_file, reporter, run


def test_sigterm_lets_the_report_in_flight_finish_within_the_grace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    grace = 120.0
    settings, _, reporter, run = _reporter_with_a_report_in_flight(kafka_bootstrap, tmp_path, grace)
    try:
        with _database_busy(settings):
            signalled = time.monotonic()
            reporter.process.send_signal(signal.SIGTERM)
            time.sleep(3)
            # Still there, its report waiting for the database: not abandoned, not done.
            reporter.check_alive()
            assert _reported(settings, run.run_id) == []
        code = reporter.process.wait(grace + CLOSING_S)
        stopped_after = time.monotonic() - signalled
    finally:
        reporter.stop()
    log = reporter.log.read_text(errors="replace")
    print(f"\nSIGTERM mid-report, grace {grace:g}s: exited {stopped_after:.1f}s later")
    assert code == 0, log[-4000:]
    assert "a report in flight has 120s to finish" in log
    assert "past its grace period" not in log, log[-4000:]
    # The report went all the way: written, announced once, its event's offset committed.
    (reported,) = _reported(settings, run.run_id)
    assert (reported["status"], reported["rows_scored"]) == ("SUCCEEDED", 380)
    assert (settings.lake / reported["report_path"]).is_file()
    assert _committed(settings) == 1


def test_sigterm_past_the_grace_abandons_the_report_and_a_restart_reports_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    grace = 1.0
    settings, config_file, reporter, run = _reporter_with_a_report_in_flight(
        kafka_bootstrap, tmp_path, grace
    )
    try:
        # The database stays busy past the grace: the report cannot finish in time.
        with _database_busy(settings):
            signalled = time.monotonic()
            reporter.process.send_signal(signal.SIGTERM)
            code = reporter.process.wait(grace + ABANDON_WAIT_S + CLOSING_S)
            stopped_after = time.monotonic() - signalled
    finally:
        reporter.stop()
    first_log = reporter.log.read_text(errors="replace")
    print(f"\nSIGTERM mid-report, grace {grace:g}s: exited {stopped_after:.1f}s later")
    assert code == 0, first_log[-4000:]
    assert "past its grace period: cancelling reporting" in first_log
    # Nothing of the report was announced, and the event's offset was not committed.
    assert _reported(settings, run.run_id) == []
    assert _committed(settings) == 0

    # Started again (the database free), the reporter reports the run, once.
    restarted = LandfallProcess("reporter", config_file, tmp_path / "restarted.log")
    try:

        def reported() -> bool:
            restarted.check_alive()
            return bool(_reported(settings, run.run_id))

        _wait_until(reported, START_TIMEOUT_S, "the run to be reported after the restart")
        _wait_until(lambda: _committed(settings) == 1, 30, "the event's offset to be committed")
    finally:
        assert restarted.stop() == 0
    (again,) = _reported(settings, run.run_id)
    assert again["status"] == "SUCCEEDED"
