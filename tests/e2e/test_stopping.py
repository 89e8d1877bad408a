"""Stopping and supervising services, against real processes, Spark and Apache Kafka.

- SIGTERM while a stage runs: the stage finishes within ``runner.shutdown_grace_s``
  and its batch is committed; with a grace shorter than the stage, the stage is
  abandoned, the process exits within the grace plus a margin, and nothing of the
  batch is committed (no output, no event, no offset), so a restarted service does it,
  once.
- ``landfall up`` restarts a service killed with kill -9 mid-stage while the others
  keep running, and the batch completes once.

A stage is made long the way a real one can be: the validator checks a dataset whose
data-quality rule is slow (a Spark SQL expression that calls ``java.lang.Thread.sleep``
for each row), so how long the stage runs does not depend on how loaded the machine is.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition

from landfall.codec import EventCodec
from landfall.config import ENV_PREFIX, REVEAL_SECRETS, DatasetConfig, Settings
from landfall.contracts import EventType
from landfall.demo import write_sample_partition
from landfall.events import publish_data_landed
from landfall.kafka_clients import kafka_client_config
from landfall.lake import Lake
from landfall.offset_notes import OffsetNote
from landfall.shutdown import ABANDON_WAIT_S
from landfall.stack import LocalStack, running_services
from tests.conftest import isolated_settings, topic_messages

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

DATASET = "slow"
PARTITION = "2026-11-01"
# What a service needs to leave its group, flush and stop Spark after its stage was
# abandoned (about 3 s measured; the rest is room for a loaded machine).
CLOSING_S = 10.0
T = TypeVar("T")


def _slow_settings(
    kafka_bootstrap: str, home: Path, *, rows: int, sleep_ms: int, **environ: str
) -> Settings:
    """Isolated settings with a dataset ``slow``: the demo's, plus a rule that sleeps per row."""
    settings = isolated_settings(
        kafka_bootstrap, home, "stopping", LANDFALL_TELEMETRY__METRICS_PORT="0", **environ
    )
    demo = settings.datasets["demo"].model_dump(mode="json")
    slow_rule = {
        "name": "takes_its_time",
        "kind": "expression",
        # reflect() returns the string "null" for a void method: never NULL, so no row
        # fails; the optimizer cannot drop the call, whose result it does not know.
        "expr": f"reflect('java.lang.Thread', 'sleep', cast({sleep_ms} as bigint)) IS NOT NULL",
    }
    slow = DatasetConfig.model_validate({**demo, "rules": [*demo["rules"], slow_rule]})
    settings = settings.model_copy(update={"datasets": {**settings.datasets, DATASET: slow}})
    write_sample_partition(Lake(settings.lake), PARTITION, rows=rows, dataset=DATASET)
    return settings


def _group(settings: Settings) -> str:
    return f"{settings.kafka.group_prefix}-validator"


def _retrying(action: Callable[[], T]) -> T:
    """``action``, tried again while the broker says it is not ready (a loaded machine)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return action()
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _committed(settings: Settings) -> tuple[int, int]:
    """What the validator group committed on the ingress topic, which holds one event.

    Returns the offsets committed past it (0 or 1) and the unfinished starts that the
    committed notes count (landfall/poison.py): a start marks the event's own offset.
    """
    topic = settings.kafka.topics.landed.name
    consumer = Consumer({**kafka_client_config(settings), "group.id": _group(settings)})
    try:
        partitions = _retrying(lambda: consumer.list_topics(topic, timeout=10)).topics[topic]
        committed = _retrying(
            lambda: consumer.committed(
                [TopicPartition(topic, number) for number in partitions.partitions], timeout=10
            )
        )
    finally:
        consumer.close()
    return (
        sum(max(tp.offset, 0) for tp in committed),
        sum(OffsetNote.parse(tp.metadata).starts for tp in committed),
    )


def _events(settings: Settings, run_id: str) -> list[tuple[EventType, dict[str, Any]]]:
    """Every event the validator published for ``run_id``, completions and failures."""
    codec = EventCodec()
    found = []
    for topic in (settings.kafka.topics.validated.name, settings.kafka.topics.failed.name):
        for message in _retrying(partial(topic_messages, settings, topic)):
            kind, record = codec.decode(message.value(), topic=topic)
            if record["run_id"] == run_id:
                found.append((kind, record))
    return found


def _output_files(settings: Settings) -> list[Path]:
    """Every file the validator wrote for the dataset, staged or committed."""
    return [
        path
        for zone in ("validated", "quarantine")
        for path in (settings.lake / DATASET / zone).rglob("*")
        if path.is_file()
    ]


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for ``condition``; return when it became true (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic()


def _stage_started(settings: Settings, alive: Callable[[], None]) -> float:
    """Wait until the validator has started the event (its start mark is committed)."""

    def started() -> bool:
        alive()
        return _committed(settings)[1] >= 1

    return _wait_until(started, 300, "the validator to start the batch")


def _one_validator(settings: Settings) -> LocalStack:
    stack = LocalStack(settings, services=("validator",))
    stack.start()
    return stack


def _log(stack: LocalStack) -> str:
    return (stack.log_dir / "validator.log").read_text(errors="replace")


def test_sigterm_lets_the_stage_in_flight_finish_within_the_grace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # A stage of 10-40 s (its first Spark jobs, cold, and 4 s of rule): past the moment
    # of the SIGTERM, inside the grace.
    grace = 120.0
    settings = _slow_settings(
        kafka_bootstrap, tmp_path, rows=8, sleep_ms=250,
        LANDFALL_RUNNER__SHUTDOWN_GRACE_S=str(grace),
    )  # fmt: skip
    stack = _one_validator(settings)
    try:
        process = stack.processes["validator"]
        landed = publish_data_landed(settings, DATASET, PARTITION)
        _stage_started(settings, stack.check_alive)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(grace + 30)
        stopped_after = time.monotonic() - signalled
    finally:
        stack.stop()
    print(f"\nSIGTERM mid-stage, grace {grace:g}s: exited {stopped_after:.1f}s later, code {code}")
    assert code == 0, _log(stack)
    # The stage finished and its batch went all the way: event, output, offset.
    ((kind, validated),) = _events(settings, landed["run_id"])
    assert kind is EventType.BATCH_VALIDATED, validated
    assert validated["rows_landed"] == 8
    assert _committed(settings) == (1, 0)
    assert any(path.suffix == ".parquet" for path in _output_files(settings))
    log = _log(stack)
    assert "a stage in flight has 120s to finish" in log
    assert "past its grace period" not in log, log


def test_sigterm_past_the_grace_abandons_the_stage_and_a_restart_does_it_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    grace = 1.0
    # A stage of 20 s or more (its first Spark jobs, cold, and 12 s of rule): had the
    # service waited for it, its output and event would be there.
    settings = _slow_settings(
        kafka_bootstrap, tmp_path, rows=12, sleep_ms=500,
        LANDFALL_RUNNER__SHUTDOWN_GRACE_S=str(grace),
    )  # fmt: skip
    stack = _one_validator(settings)
    try:
        process = stack.processes["validator"]
        landed = publish_data_landed(settings, DATASET, PARTITION)
        _stage_started(settings, stack.check_alive)
        _wait_until(
            lambda: any((settings.lake / DATASET).rglob("_temporary")),
            120,
            "the stage's first write to begin",
        )  # inside a Spark job: a cancel reaches it (planning one, it would not)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        stopped_after = time.monotonic() - signalled
    finally:
        stack.stop()
    first_log = _log(stack)
    print(f"\nSIGTERM mid-stage, grace {grace:g}s: exited {stopped_after:.1f}s later")
    assert code == 0, first_log
    assert stopped_after < grace + ABANDON_WAIT_S + CLOSING_S, first_log
    assert "past its grace period: cancelling validation" in first_log
    # Its Spark jobs cancelled, the stage unwound (discarding its staged output) before
    # the process exited: it was not left running.
    assert "abandoned " in first_log and "exits without waiting" not in first_log
    # Nothing of the batch: no event, no output (staged files discarded too), and the
    # offset not committed past the message; a clean stop is not counted as a crash.
    assert _events(settings, landed["run_id"]) == []
    assert _output_files(settings) == []
    assert _committed(settings) == (0, 0)

    # Started again, the service does the batch, once.
    stack = _one_validator(settings)
    try:
        restarted = stack

        def batch_done() -> bool:
            restarted.check_alive()
            return bool(_events(settings, landed["run_id"]))

        _wait_until(batch_done, 300, "the batch to be validated after the restart")
        time.sleep(2)  # a second event, if there were one, would be published by now
    finally:
        stack.stop()
    ((kind, validated),) = _events(settings, landed["run_id"])
    assert kind is EventType.BATCH_VALIDATED, validated
    assert validated["rows_landed"] == 12
    assert _committed(settings) == (1, 0)


def test_up_restarts_a_service_killed_mid_stage_and_the_batch_completes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _slow_settings(kafka_bootstrap, tmp_path, rows=8, sleep_ms=250)
    # `landfall up` as an operator runs it, on the settings above (the test's broker, its
    # topics, the slow dataset), with the job API beside the validator.
    config = tmp_path / "landfall.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", context=REVEAL_SECRETS)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    up = subprocess.Popen(
        [sys.executable, "-m", "landfall", "up", "--only", "validator", "--only", "api",
         "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def started() -> bool:
            return set(running_services(settings)) == {"validator", "api"} or up.poll() is not None

        _wait_until(started, 120, "landfall up to start its services")
        assert up.poll() is None, up.communicate()[0]
        landed = publish_data_landed(settings, DATASET, PARTITION)

        def up_alive() -> None:
            assert up.poll() is None, up.communicate()[0]

        _stage_started(settings, up_alive)
        before = running_services(settings)
        os.kill(before["validator"], signal.SIGKILL)  # as the kernel's OOM killer would
        _wait_until(
            lambda: (
                running_services(settings).get("validator", before["validator"])
                != before["validator"]
            ),
            60,
            "landfall up to restart the validator",
        )
        _wait_until(lambda: bool(_events(settings, landed["run_id"])), 300, "the batch to complete")
        time.sleep(2)  # a second event, if there were one, would be published by now
        # The job API ran all along: the same process.
        assert running_services(settings)["api"] == before["api"]
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=120)
    print(f"\nlandfall up:\n{output}")
    assert up.returncode == 0, output
    assert re.search(r"validator exited with code -9; restarting in \d+\.\ds", output), output
    assert "validator restarted" in output
    ((kind, validated),) = _events(settings, landed["run_id"])
    assert kind is EventType.BATCH_VALIDATED, validated
    assert _committed(settings) == (1, 0)
    assert running_services(settings) == {}
