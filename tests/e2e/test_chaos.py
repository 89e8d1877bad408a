"""Crash chaos: each stage service killed at points of its stage, restarted, nothing lost.

The four services run as processes (each in a one-service :class:`LocalStack`, so one
can be killed and started again alone) on the session's broker, with the demo model.
Each trial lands a small partition of its own, publishes data-landed, and when the
chosen service reaches the trial's point in that batch, kills it (``kill -9``, as the
OOM killer would) or stops it (SIGTERM, with a grace shorter than some stages), then
starts it again and waits for the batch to be reported. The points:

- ``early``: right after the service took the event (its start mark is committed with
  the group's offsets, landfall/poison.py; the reporter: its input event is out);
- ``mid``: its output is being written (its attempt is recorded in flight; the
  reporter: it recorded the run's prediction stage and builds the report);
- ``committed``: its output's pointer is in the zone's ``_commits/``;
- ``announced``: its completion event is on the topic (the offset may not be committed);
- ``sigterm``: SIGTERM at the ``mid`` point.

After every trial, and with every service settled, it checks per batch: exactly one
SUCCEEDED run in the results database, reported; valid + quarantined = landed in the
committed outputs; one prediction per valid id; the database's run is the one whose
outputs are committed; and no attempt folder that no pointer names (nor any other file
outside a committed attempt) left in any zone, except what a live process writes.
``landfall gc`` is never run: what a restart leaves is what is checked.

``LANDFALL_CHAOS_TRIALS`` sets how many trials (default 4, one per service; ``make
chaos`` runs every service at every point). ``-s`` prints the table of trials.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.demo import write_sample_partition
from landfall.events import EventWatcher, publish_data_landed
from landfall.kafka_clients import kafka_client_config
from landfall.lake import INFLIGHT_DIR, RUNS_DIR, Lake, Zone
from landfall.offset_notes import OffsetNote
from landfall.results import RunHistory
from landfall.stack import LocalStack
from tests.conftest import isolated_settings
from tests.e2e.chaos_checks import (
    DATASET,
    ROWS,
    Trial,
    check_trial,
    is_report_of,
    reported_by_run,
    trial_table,
)

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

SERVICES = ("validator", "featurizer", "predictor", "reporter")
POINTS = ("early", "mid", "committed", "announced", "sigterm")
# The zone whose commit is each service's "committed" point (the validator commits its
# quarantine first, then this).
MAIN_ZONE: dict[str, Zone] = {
    "validator": "validated",
    "featurizer": "features",
    "predictor": "predictions",
    "reporter": "reports",
}
INPUT_TOPIC = {"validator": "landed", "featurizer": "validated", "predictor": "featurized"}
COMPLETION = {
    "validator": EventType.BATCH_VALIDATED,
    "featurizer": EventType.BATCH_FEATURIZED,
    "predictor": EventType.BATCH_PREDICTED,
    "reporter": EventType.BATCH_REPORTED,
}
# Generous: the machine the tests run on may be loaded many times over, and a restarted
# service starts its Spark session before it takes anything.
POINT_TIMEOUT_S = 300.0
REPORT_TIMEOUT_S = 480.0
QUIET_S = 15.0


def _trial_count() -> int:
    text = os.environ.get("LANDFALL_CHAOS_TRIALS", "4")
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise pytest.UsageError(f"LANDFALL_CHAOS_TRIALS={text!r}: a whole number, 1 or more")
    return count


def _schedule(count: int) -> list[tuple[str, str]]:
    """(service, point) per trial: each round gives every service another point.

    Rounds 0-4 together cover every service at every point; the first round (the
    default) kills each service once, at a different point each.
    """
    plan: list[tuple[str, str]] = []
    round_number = 0
    while len(plan) < count:
        for index, service in enumerate(SERVICES):
            plan.append((service, POINTS[(index + round_number) % len(POINTS)]))
        round_number += 1
    return plan[:count]


class Services:
    """The four services, each in a stack of its own so each can die and restart alone."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stacks: dict[str, LocalStack] = {}

    def start(self, name: str) -> None:
        stack = LocalStack(self.settings, services=(name,), max_restarts=0)
        stack.start()
        self.stacks[name] = stack

    def pid(self, name: str) -> int:
        return self.stacks[name].processes[name].pid

    def check_alive(self) -> None:
        for stack in self.stacks.values():
            stack.check_alive()

    def signal_and_restart(self, name: str, signum: int) -> None:
        process = self.stacks[name].processes[name]
        os.kill(process.pid, signum)
        # SIGTERM: the grace, then the abandon wait and closing, on a loaded machine.
        process.wait(timeout=180)
        self.stacks[name].stop()
        self.start(name)

    def stop(self) -> None:
        for stack in self.stacks.values():
            stack.stop()


class StartMarks:
    """Whether a runner service has started a message: its start mark in the group offsets."""

    def __init__(self, settings: Settings, service: str) -> None:
        self.topic = getattr(settings.kafka.topics, INPUT_TOPIC[service]).name
        self.consumer = Consumer(
            {
                **kafka_client_config(settings),
                "group.id": f"{settings.kafka.group_prefix}-{service}",
            }
        )
        partitions = self.consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        self.partitions = [TopicPartition(self.topic, n) for n in partitions.partitions]

    def started(self) -> bool:
        try:
            committed = self.consumer.committed(self.partitions, timeout=10)
        except KafkaException:
            return False  # the group is rebalancing: ask again
        return any(OffsetNote.parse(tp.metadata).starts > 0 for tp in committed)

    def close(self) -> None:
        self.consumer.close()


def _attempt_in_flight(lake: Lake, service: str, partition: str) -> bool:
    """Whether ``service`` is writing an attempt of ``partition`` now."""
    zone = MAIN_ZONE[service]
    folder = lake.path(f"{INFLIGHT_DIR}/{service}/{socket.gethostname()}")
    marker = f"~{zone}~{partition}~{RUNS_DIR}~"
    return any(marker in entry.name for entry in folder.iterdir())


def _committed_by(lake: Lake, service: str, partition: str, run_id: str) -> bool:
    commits = lake.commits(DATASET, MAIN_ZONE[service], partition)
    return any(c.run_id == run_id for c in commits)


def _building_report(results: RunHistory, run_id: str) -> bool:
    """Whether the reporter recorded the run's prediction stage: it builds the report next.

    Its own output is written in a blink at the end; the report's Spark work (drift,
    summaries) comes before it.
    """
    run = results.run(run_id)
    stages = run["stages"] if run else []
    return any(s["stage"] == "prediction" and s["finished_at"] is not None for s in stages)


def _wait_until(condition: Callable[[], str | None], alive: Callable[[], None], what: str) -> str:
    deadline = time.monotonic() + POINT_TIMEOUT_S
    while True:
        alive()
        seen = condition()
        if seen:
            return seen
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _reach_point(
    trial: Trial,
    settings: Settings,
    lake: Lake,
    watcher: EventWatcher,
    services: Services,
) -> str:
    """Wait until the trial's service is at the trial's point of its batch; say what was seen."""
    service, partition, run_id = trial.service, trial.partition, trial.run_id

    def event(kind: EventType) -> str:
        watcher.wait_for(
            lambda _t, k, rec: k is kind and rec["run_id"] == run_id,
            timeout=POINT_TIMEOUT_S,
            alive=services.check_alive,
        )
        return f"{kind.short_name} out"

    if trial.point == "early":
        if service == "reporter":
            return event(EventType.BATCH_PREDICTED)
        marks = StartMarks(settings, service)
        try:
            return _wait_until(
                lambda: "start mark" if marks.started() else None,
                services.check_alive,
                f"{service} to take the batch",
            )
        finally:
            marks.close()
    if trial.point in ("mid", "sigterm"):
        results = RunHistory.open(settings.results_db_url)

        def writing() -> str | None:
            if _attempt_in_flight(lake, service, partition):
                return "writing"
            if service == "reporter" and _building_report(results, run_id):
                return "building the report"
            if _committed_by(lake, service, partition, run_id):
                return "missed: committed already"
            return None

        try:
            return _wait_until(writing, services.check_alive, f"{service} to write")
        finally:
            results.close()
    if trial.point == "committed":
        return _wait_until(
            lambda: "pointer" if _committed_by(lake, service, partition, run_id) else None,
            services.check_alive,
            f"{service} to commit",
        )
    return event(COMPLETION[service])


def _group_lag(settings: Settings, service: str) -> int:
    """Messages the runner service's group has not committed past on its input topic."""
    topic = getattr(settings.kafka.topics, INPUT_TOPIC[service]).name
    consumer = Consumer(
        {**kafka_client_config(settings), "group.id": f"{settings.kafka.group_prefix}-{service}"}
    )
    try:
        numbers = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, n) for n in numbers], timeout=10)
        lag = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            lag += high - max(tp.offset, low)
        return lag
    finally:
        consumer.close()


def _newer_than(watcher: EventWatcher, known: int, *_event: object) -> bool:
    """Whether the watcher has seen an event since it had seen ``known``."""
    return len(watcher.seen) > known


def _settle(settings: Settings, watcher: EventWatcher, services: Services) -> None:
    """Wait until the runner services have committed everything and nothing more comes out."""
    deadline = time.monotonic() + REPORT_TIMEOUT_S
    while True:
        services.check_alive()
        try:
            lag = sum(_group_lag(settings, name) for name in INPUT_TOPIC)
        except KafkaException:
            lag = -1
        if lag == 0:
            break
        assert time.monotonic() < deadline, f"the services never caught up (lag {lag})"
        time.sleep(1)
    # A restarted reporter may report a batch again once it has caught up: wait for quiet.
    while True:
        try:
            watcher.wait_for(
                partial(_newer_than, watcher, len(watcher.seen)),
                timeout=QUIET_S,
                alive=services.check_alive,
            )
        except TimeoutError:
            return
        assert time.monotonic() < deadline, "events never stopped coming"


@pytest.fixture
def chaos_settings(kafka_bootstrap: str, registry_home: Path, tmp_path: Path) -> Settings:
    return isolated_settings(
        kafka_bootstrap,
        tmp_path,
        "chaos",
        LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{registry_home / 'mlflow.db'}",
        LANDFALL_TELEMETRY__METRICS_PORT="0",
        # Shorter than a stage on a loaded machine: some SIGTERMs abandon the stage in
        # flight, others let it finish.
        LANDFALL_RUNNER__SHUTDOWN_GRACE_S="2",
    )


@pytest.fixture
def services(chaos_settings: Settings) -> Iterator[Services]:
    running = Services(chaos_settings)
    try:
        for name in SERVICES:
            running.start(name)
        yield running
    finally:
        running.stop()


@pytest.mark.timeout(7200)
def test_killed_services_lose_duplicate_and_leave_nothing(
    chaos_settings: Settings, services: Services
) -> None:
    settings = chaos_settings
    lake = Lake(settings.lake)
    first_day = date(2026, 12, 1)
    trials = [
        Trial(service, point, (first_day + timedelta(days=number)).isoformat())
        for number, (service, point) in enumerate(_schedule(_trial_count()))
    ]
    topics = settings.kafka.topics
    watcher = EventWatcher(settings, [t.name for t in topics.all() if t is not topics.landed])
    started = time.monotonic()
    try:
        for trial in trials:
            write_sample_partition(lake, trial.partition, rows=ROWS)
            trial.run_id = publish_data_landed(settings, DATASET, trial.partition)["run_id"]
            try:
                trial.at = _reach_point(trial, settings, lake, watcher, services)
            except (AssertionError, TimeoutError) as exc:
                trial.at = "never reached"
                trial.stuck += 1
                trial.notes.append(str(exc))
                continue
            signum = signal.SIGTERM if trial.point == "sigterm" else signal.SIGKILL
            signalled = time.monotonic()
            services.signal_and_restart(trial.service, signum)
            try:
                watcher.wait_for(
                    partial(is_report_of, trial.run_id),
                    timeout=REPORT_TIMEOUT_S,
                    alive=services.check_alive,
                )
                trial.recovered_s = time.monotonic() - signalled
            except TimeoutError:
                pass  # counted as stuck below
        try:
            _settle(settings, watcher, services)
            unsettled = ""
        except AssertionError as exc:
            unsettled = f"\nnot settled: {exc}"
    finally:
        watcher.close()
    reported = reported_by_run(settings)
    db = RunHistory.open(settings.results_db_url)
    try:
        for trial in trials:
            check_trial(trial, lake, db, reported.get(trial.run_id, []))
    finally:
        db.close()
    table = trial_table(trials)
    table += unsettled
    print(f"\ncrash chaos, {len(trials)} trials in {time.monotonic() - started:.0f}s:\n{table}")
    assert all(t.lost == t.duplicated == t.stuck == t.stray == 0 for t in trials), table
    assert not unsettled, table
