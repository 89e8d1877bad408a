"""What an operator does with the command line, against real processes and Apache Kafka.

- Stop the predictor while the rest keeps running, move its group back with
  ``landfall replay predictor --since TIME``, start it again with ``landfall up --only
  predictor``: the events at or after that time are scored again, the others not.
- ``replay`` refuses, in one line, while the group has members; ``--since`` before
  everything goes to the start, after everything to the end.
- ``landfall up`` refuses contradictory options, restarts a crashed service, gives up
  (exit 1) on one that keeps crashing, and stops cleanly (exit 0) on SIGTERM.
- ``landfall broker`` runs a home's broker, which ``ps``, ``up`` and ``replay`` of the
  same home find, and stops cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from landfall.codec import EventCodec
from landfall.config import ENV_PREFIX, Settings
from landfall.contracts import EventType
from landfall.demo import write_sample_partition
from landfall.errors import LandfallError
from landfall.events import EventWatcher, publish_data_landed
from landfall.kafka_clients import kafka_client_config
from landfall.lake import Lake
from landfall.run_ids import run_started_ms
from landfall.stack import LocalStack, ServiceDied, running_services, stop_services
from tests.conftest import isolated_settings, settings_for

STAGES = ("validator", "featurizer", "predictor", "reporter")
MOVE = re.compile(
    r"^(?:would move|moved) (?P<topic>\S+)/(?P<partition>\d+): "
    r"(?:nothing committed|offset (?P<before>\d+)) -> offset (?P<after>\d+)$"
)


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without LANDFALL_* (the test's own overrides), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**env, **extra}


def landfall(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the ``landfall`` command line as an operator would, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "landfall", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _moves(stdout: str) -> dict[int, tuple[int | None, int]]:
    """``replay``'s output as partition -> (offset before, offset after)."""
    found = {}
    lines = stdout.splitlines()
    assert lines and lines[-1].startswith("summary: "), stdout
    for line in lines[:-1]:
        match = MOVE.match(line.strip())
        assert match, f"unexpected replay output line: {line!r}"
        before = match["before"]
        found[int(match["partition"])] = (int(before) if before else None, int(match["after"]))
    return found


def _minute(moment: datetime) -> str:
    """A time as an operator types it: ``2026-11-20T00:00``, UTC implied."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _log_of(settings: Settings, topic: str) -> list[tuple[int, int, int, dict[str, Any]]]:
    """Every event of a topic: (partition, offset, timestamp in ms, record)."""
    codec = EventCodec(settings.schema_registry_url)
    consumer = Consumer(
        {**kafka_client_config(settings), "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[tuple[int, int, int, dict[str, Any]]] = []
        deadline = time.monotonic() + 60
        while len(found) < sum(ends.values()) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            _kind, record = codec.decode(message.value(), topic=topic)
            _type, stamp = message.timestamp()
            found.append((message.partition() or 0, message.offset() or 0, stamp, record))
        assert len(found) == sum(ends.values()), (found, ends)
        return found
    finally:
        consumer.close()


def _high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**kafka_client_config(settings), "group.id": "unused"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
    finally:
        consumer.close()


@pytest.fixture
def four_services(
    kafka_bootstrap: str, registry_home: Path, tmp_path: Path
) -> Iterator[tuple[Settings, LocalStack]]:
    """The four stage services on their own topics and groups, Spark kept small."""
    settings = isolated_settings(
        kafka_bootstrap,
        tmp_path,
        "ops",
        LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{registry_home / 'mlflow.db'}",
        LANDFALL_TELEMETRY__METRICS_PORT="0",
        LANDFALL_SPARK__MASTER="local[1]",
    )
    spark = settings.spark.model_copy(
        update={"conf": {**settings.spark.conf, "spark.driver.memory": "512m"}}
    )
    stack = LocalStack(settings.model_copy(update={"spark": spark}), services=STAGES)
    live = stack.start()
    try:
        yield live, stack
    finally:
        stack.stop()


@pytest.mark.broker
@pytest.mark.e2e
def test_stop_the_predictor_replay_since_a_time_and_start_it_again(
    four_services: tuple[Settings, LocalStack],
) -> None:
    # Long: one scenario against one running stack, told in order.
    settings, stack = four_services
    topics = settings.kafka.topics
    # The CLI reads the very settings the stack's services run with.
    cli_env = _clean_env(LANDFALL_CONFIG=str(stack.log_dir / "stack-config.yaml"))
    lake = Lake(settings.lake)
    for day, partition in enumerate(["2026-11-19", "2026-11-20", "2026-11-21"]):
        write_sample_partition(lake, partition, rows=300, seed=day)
    others = {name: proc.pid for name, proc in stack.processes.items() if name != "predictor"}
    watcher = EventWatcher(settings, [t.name for t in topics.all() if t is not topics.landed])

    def wait_for(kind: EventType, run_id: str, *, count: int = 1) -> None:
        watcher.wait_for(
            lambda *_: (
                sum(1 for _t, k, r in watcher.seen if k is kind and r["run_id"] == run_id) >= count
            ),
            timeout=300,
            alive=stack.check_alive,
        )

    try:
        before_everything = datetime.now(UTC) - timedelta(minutes=2)
        first = publish_data_landed(settings, "demo", "2026-11-19")
        wait_for(EventType.BATCH_REPORTED, first["run_id"])
        # The time the operator replays from: after the first batch, before the second.
        # Kafka stamps events in milliseconds; the pause keeps both sides clear of it.
        time.sleep(1.0)
        between = datetime.now(UTC)
        time.sleep(1.0)
        second = publish_data_landed(settings, "demo", "2026-11-20")
        wait_for(EventType.BATCH_REPORTED, second["run_id"])

        # While the predictor runs, its group cannot be moved: a one-line refusal.
        refused = landfall("replay", "predictor", "--since", between.isoformat(), env=cli_env)
        assert refused.returncode == 2, refused
        assert "Traceback" not in refused.stderr
        message = refused.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert message.startswith("error: the consumer group ") and "1 member" in message
        assert "landfall stop predictor" in message

        # Stop the predictor the way an operator would; the stack sees it stopped and
        # keeps the others running, and does not restart it.
        stopped = landfall("stop", "predictor", env=cli_env)
        assert stopped.returncode == 0, stopped
        assert stopped.stdout.strip() == "stopped predictor"
        said = stack.supervise()
        assert said == ["predictor stopped; the other services keep running"]
        assert {name: p.pid for name, p in stack.processes.items()} == others
        listed = landfall("ps", env=cli_env)
        assert sorted(line.split()[0] for line in listed.stdout.splitlines()[1:]) == sorted(others)

        # The rest keeps working: a third partition goes through validation and
        # features, and waits at the predictor's topic.
        third = publish_data_landed(settings, "demo", "2026-11-21")
        wait_for(EventType.BATCH_FEATURIZED, third["run_id"])

        featurized = _log_of(settings, topics.featurized.name)
        ends = _high_watermarks(settings, topics.featurized.name)
        stamp = int(between.timestamp() * 1000)
        # What --since must do: per partition, the first event at or after the time,
        # else the end of the partition.
        expected = {
            p: min((o for q, o, t, _r in featurized if q == p and t >= stamp), default=end)
            for p, end in ends.items()
        }
        replayed = {r["event_id"] for p, o, _t, r in featurized if o >= expected[p]}
        by_run = {r["run_id"]: r["event_id"] for _p, _o, _t, r in featurized}
        assert replayed == {by_run[second["run_id"]], by_run[third["run_id"]]}

        # --since earlier than everything: the start; later than everything: the end.
        early = landfall(
            "replay", "predictor", "--since", _minute(before_everything), "--dry-run", env=cli_env
        )
        assert early.returncode == 0, early
        assert {p: after for p, (_b, after) in _moves(early.stdout).items()} == dict.fromkeys(
            ends, 0
        )
        late = landfall(
            "replay",
            "predictor",
            "--since",
            _minute(datetime.now(UTC) + timedelta(hours=1)),
            "--dry-run",
            env=cli_env,
        )
        assert late.returncode == 0, late
        assert {p: after for p, (_b, after) in _moves(late.stdout).items()} == ends

        replayed_at_ms = time.time_ns() // 1_000_000
        replay = landfall("replay", "predictor", "--since", between.isoformat(), env=cli_env)
        assert replay.returncode == 0, replay
        print(f"\nlandfall replay predictor --since {between.isoformat()}:\n{replay.stdout}")
        moves = _moves(replay.stdout)
        assert all(line.startswith("moved ") for line in replay.stdout.splitlines()[:-1])
        assert replay.stdout.splitlines()[-1].startswith(f"summary: moved {len(moves)} partition")
        assert {p: after for p, (_b, after) in moves.items()} == expected
        # Where the group was: one past each event it had scored, nothing the third.
        assert sum(before or 0 for before, _a in moves.values()) == 2

        # Start the predictor again, as an operator would, in its own `up`.
        again = subprocess.Popen(
            [sys.executable, "-m", "landfall", "up", "--only", "predictor"],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            # The second batch, scored before the replay, is scored again as a new run
            # of the same batch; the third (never scored yet) once, in its own run; the
            # first not again.
            _t, _k, rescored = watcher.wait_for(
                lambda _t, k, r: (
                    k is EventType.BATCH_PREDICTED
                    and r["batch_id"] == second["batch_id"]
                    and r["run_id"] != second["run_id"]
                ),
                timeout=300,
                alive=stack.check_alive,
            )
            new_run = rescored["run_id"]
            wait_for(EventType.BATCH_PREDICTED, third["run_id"])
            wait_for(EventType.BATCH_REPORTED, new_run)
            try:
                watcher.wait_for(lambda *_: False, timeout=5, alive=stack.check_alive)
            except TimeoutError:
                pass
            predicted = Counter(
                (r["run_id"], r["causation_id"])
                for _t, k, r in watcher.seen
                if k is EventType.BATCH_PREDICTED
            )
            assert predicted == {
                (first["run_id"], by_run[first["run_id"]]): 1,
                (second["run_id"], by_run[second["run_id"]]): 1,
                (new_run, by_run[second["run_id"]]): 1,
                (third["run_id"], by_run[third["run_id"]]): 1,
            }
            # A run of its own, starting when the operator replayed: the lake's fencing
            # makes its predictions the committed ones, and the earlier run keeps its own.
            assert uuid.UUID(new_run).version == 7
            assert run_started_ms(new_run) >= replayed_at_ms
            commits = lake.commits("demo", "predictions", "2026-11-20")
            assert [c.run_id for c in commits if c.succeeded] == [second["run_id"], new_run]
            committed = lake.committed("demo", "predictions", "2026-11-20")
            assert committed is not None and committed.run_id == new_run
            reported = [
                r
                for _t, k, r in watcher.seen
                if k is EventType.BATCH_REPORTED and r["batch_id"] == second["batch_id"]
            ]
            assert {r["run_id"] for r in reported} == {second["run_id"], new_run}
            assert "predictor" in running_services(settings)
            # The other services ran all along: the same processes, never restarted.
            assert stack.supervise() == []
            assert {name: p.pid for name, p in stack.processes.items()} == others
        finally:
            again.send_signal(signal.SIGTERM)
            output, _ = again.communicate(timeout=90)
        # `up` stops what it started and exits 0 on SIGTERM.
        assert again.returncode == 0, output
        assert "stopping..." in output
        assert "predictor" not in running_services(settings)
    finally:
        watcher.close()


@pytest.mark.broker
@pytest.mark.e2e
def test_a_service_stopped_while_it_starts_stays_stopped(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, tmp_path, "early-stop")
    stack = LocalStack(settings, services=("api",))
    stack.start()
    try:
        # At once: the API is still importing, before it handles SIGTERM itself, so it
        # dies of the signal instead of exiting 0. Still a stop, not a crash.
        assert stop_services(settings, ["api"]) == ["api"]
        assert stack.supervise() == ["api stopped; the other services keep running"]
        assert not stack.running
        time.sleep(1.5)
        assert stack.supervise() == []
        assert running_services(settings) == {}
    finally:
        stack.stop()


@pytest.mark.broker
@pytest.mark.e2e
def test_a_crashed_service_is_restarted_and_a_crash_loop_gives_up(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The job API starts in seconds (no Spark): a cheap service to crash.
    settings = isolated_settings(kafka_bootstrap, tmp_path, "crash")
    stack = LocalStack(settings, services=("api",), max_restarts=1)
    stack.start()
    try:
        first = stack.processes["api"].pid
        os.kill(first, signal.SIGKILL)  # as the kernel's OOM killer would
        stack.processes["api"].wait(30)
        (said,) = stack.supervise()
        # The first delay is drawn between half and all of supervision.restart_delay_s.
        restart = re.fullmatch(
            r"api exited with code -9; restarting in (\d\.\d)s \(crash 1; `up` gives up "
            r"at 2 within 300s\)",
            said,
        )
        assert restart and 0.5 <= float(restart[1]) <= 1.0, said
        assert "api" not in running_services(settings)
        time.sleep(1.1)
        assert stack.supervise() == ["api restarted"]
        second = stack.processes["api"].pid
        assert second != first
        assert running_services(settings) == {"api": second}
        os.kill(second, signal.SIGKILL)
        stack.processes["api"].wait(30)
        with pytest.raises(
            ServiceDied, match=r"api crashed 2 times .*supervision.max_restarts = 1.* giving up"
        ):
            stack.supervise()
    finally:
        stack.stop()


@pytest.mark.broker
@pytest.mark.e2e
def test_broker_ps_and_up_of_one_home_and_up_gives_up_on_a_crash_loop(tmp_path: Path) -> None:
    """``landfall broker`` serves its home: ``ps``, ``replay`` and ``up`` there find it."""
    env = _clean_env(
        LANDFALL_HOME=str(tmp_path),
        LANDFALL_TELEMETRY__METRICS_PORT="0",
        # Not an address of this machine: the API cannot listen there and exits at
        # every start, a crash loop.
        LANDFALL_REPORTING__API_HOST="203.0.113.7",
        # Restarts after 0.1-0.2 s, 0.2-0.4 s, ...: the crash loop is given up on sooner.
        LANDFALL_SUPERVISION__RESTART_DELAY_S="0.2",
    )
    broker = subprocess.Popen(
        [sys.executable, "-m", "landfall", "broker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert broker.stdout is not None
        banner = ""
        deadline = time.monotonic() + 120
        while "Apache Kafka on" not in banner and time.monotonic() < deadline:
            line = broker.stdout.readline()
            assert line, f"landfall broker exited: {banner}"
            banner += line
        address = re.search(r"Apache Kafka on (127\.0\.0\.1:\d+) \(pid (\d+)", banner)
        assert address, banner
        listed = landfall("ps", env=env)
        assert listed.stdout.splitlines() == [
            f"broker   {address[1]} pid {address[2]}",
            "no service is running for this home",
        ]
        # replay finds the home's broker by itself (and says why there is nothing to move).
        nothing = landfall("replay", "predictor", "--from-beginning", env=env)
        assert nothing.returncode == 2
        assert "has committed no offsets" in nothing.stderr

        # `up` uses that broker, restarts the crashing API with growing delays, then
        # gives up: exit 1, the reason on stderr, and the broker it did not start
        # still running.
        started = time.monotonic()
        crashing = landfall("up", "--only", "api", env=env, timeout=240)
        assert crashing.returncode == 1, crashing
        assert f"broker {address[1]};" in crashing.stdout
        assert len(re.findall(r"api exited with code \d+; restarting", crashing.stdout)) == 5
        assert "api crashed 6 times" in crashing.stderr and "giving up" in crashing.stderr
        assert "supervision.max_restarts = 5" in crashing.stderr
        assert "Traceback" not in crashing.stderr
        print(f"\nup gave up on the crash loop after {time.monotonic() - started:.0f}s")
        assert landfall("ps", env=env).stdout.splitlines()[0].startswith(f"broker   {address[1]}")
        assert running_services(settings_for(tmp_path)) == {}
    finally:
        broker.send_signal(signal.SIGINT)
        rest, _ = broker.communicate(timeout=90)
    assert broker.returncode == 0, rest
    assert landfall("ps", env=env).stdout.splitlines()[0] == "broker   not running"


def test_up_refuses_contradictory_or_unknown_choices(tmp_path: Path) -> None:
    env = _clean_env(LANDFALL_HOME=str(tmp_path))
    cases = {
        ("--only", "predictor", "--without", "api"): "error: say --only or --without, not both",
        ("--without", "predicter"): "error: unknown service predicter",
        ("--only", "predicter"): "error: unknown service predicter",
        ("--only", "validator", "--scale", "predictor=2"): "error: --scale names predictor",
        ("--scale", "api=2"): "error: the job API runs as one instance",
    }
    for args, expected in cases.items():
        refused = landfall("up", *args, env=env, timeout=60)
        assert refused.returncode == 2, (args, refused)
        assert refused.stderr.startswith(expected), (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1, (args, refused.stderr)
        # Refused before anything started: no broker, no service.
        assert not (tmp_path / "kafka").exists(), args
    with pytest.raises(LandfallError):
        LocalStack(settings_for(tmp_path), services=("validator",), scale={"validator": 0})
