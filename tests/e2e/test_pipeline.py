"""End to end: the four services as separate processes against a real broker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.demo import write_sample_partition
from landfall.events import EventWatcher, publish_data_landed
from landfall.lake import Lake, read_manifest
from landfall.registry import resolve_model_version
from landfall.results import RunHistory
from landfall.stack import LocalStack
from tests.e2e.conftest import wait_reported

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

PARTITION = "2026-11-01"
STAGE_ORDER = [
    EventType.BATCH_VALIDATED,
    EventType.BATCH_FEATURIZED,
    EventType.BATCH_PREDICTED,
    EventType.BATCH_REPORTED,
]


def test_a_landed_partition_is_validated_featurized_scored_and_reported(
    stack: tuple[Settings, LocalStack], watcher: EventWatcher
) -> None:
    settings, local = stack
    lake = Lake(settings.lake)
    sample = write_sample_partition(lake, PARTITION, rows=800)
    landed = publish_data_landed(settings, "demo", PARTITION)

    reported = wait_reported(watcher, local, landed["run_id"])

    seen = [(kind, rec) for _t, kind, rec in watcher.seen if rec["run_id"] == landed["run_id"]]
    # One event per stage. Kafka orders events within a topic, not across topics, so
    # the watcher may read them in any order: the causation ids give the order.
    assert sorted(kind.value for kind, _ in seen) == sorted(k.value for k in STAGE_ORDER)
    by_kind = dict(seen)
    chain = [(kind, by_kind[kind]) for kind in STAGE_ORDER]
    assert {rec["batch_id"] for _, rec in chain} == {landed["batch_id"]}
    # Each event names the one that caused it.
    causes = [landed["event_id"]] + [rec["event_id"] for _, rec in chain[:-1]]
    assert [rec["causation_id"] for _, rec in chain] == causes

    validated, featurized, predicted = (rec for _, rec in chain[:3])
    assert validated["rows_landed"] == sample.rows
    assert validated["rows_quarantined"] == sample.bad_rows > 0
    assert validated["rows_valid"] + validated["rows_quarantined"] == sample.rows
    assert featurized["rows"] == validated["rows_valid"]

    valid_ids = pq.read_table(lake.resolve(validated["output_path"]), columns=["id"])
    predictions = pq.read_table(lake.resolve(predicted["output_path"]))
    predicted_ids = predictions.column("id").to_pylist()
    assert len(predicted_ids) == len(set(predicted_ids)) == validated["rows_valid"]
    assert set(predicted_ids) == set(valid_ids.column("id").to_pylist())

    expected_version = resolve_model_version(settings, settings.dataset("demo").model).version
    assert predicted["model_version"] == expected_version
    assert set(predictions.column("model_version").to_pylist()) == {expected_version}

    manifest = read_manifest(lake.resolve(predicted["output_path"]))
    assert (manifest["run_id"], manifest["batch_id"]) == (landed["run_id"], landed["batch_id"])
    assert manifest["model"]["version"] == expected_version
    assert manifest["rows"] == {"predictions": validated["rows_valid"]}
    assert manifest["inputs"][0]["run_id"] == landed["run_id"]

    assert reported["status"] == "SUCCEEDED"
    assert reported["rows_scored"] == validated["rows_valid"]
    report = json.loads((lake.root / reported["report_path"]).read_text())
    assert report["rows"]["landed"] == sample.rows
    db = RunHistory.open(settings.results_db_url)
    try:
        (run,) = db.runs_of(landed["batch_id"])
        assert (run["run_id"], run["status"]) == (landed["run_id"], "SUCCEEDED")
        assert (run["rows_landed"], run["rows_scored"]) == (sample.rows, validated["rows_valid"])
        assert run["model_version"] == expected_version
    finally:
        db.close()


def test_bad_inputs_fail_or_dead_letter_and_the_services_keep_running(
    stack: tuple[Settings, LocalStack], watcher: EventWatcher
) -> None:
    # Long: one scenario against one running stack, told in order.
    settings, local = stack
    topics = settings.kafka.topics

    # Published with the CLI, as an operator would.
    cli = subprocess.run(
        [sys.executable, "-m", "landfall", "publish", "demo", "2026-10-15"],
        env={**os.environ, "LANDFALL_CONFIG": str(local.log_dir / "stack-config.yaml")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    missing = {"run_id": re.search(r"run ([0-9a-f-]{36})", cli.stdout).group(1)}
    escaping = publish_data_landed(settings, "demo", "2026-10-16", path="../../../etc")
    garbage = b"\xfe\xff this is not an event"
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    producer.produce(
        topics.landed.name, key=b"demo/x", value=garbage, headers=[("origin", b"test")]
    )
    # A plain JSON event, as a shell user with kcat would publish it: must still work.
    json_event_id = f"json-{uuid.uuid4()}"
    plain_json = json.dumps(
        {"dataset": "demo", "partition": PARTITION, "event_id": json_event_id}
    ).encode()
    producer.produce(topics.landed.name, key=b"demo/" + PARTITION.encode(), value=plain_json)
    assert producer.flush(30) == 0

    def failure_of(run_id: str) -> dict:
        _, _, failed = watcher.wait_for(
            lambda _t, kind, rec: kind is EventType.BATCH_FAILED and rec["run_id"] == run_id,
            timeout=300,
            alive=local.check_alive,
        )
        return failed

    failed_missing = failure_of(missing["run_id"])
    assert failed_missing["stage"] == "validation"
    assert "partition not found: demo/raw/2026-10-15 does not exist" in failed_missing["reason"]
    assert str(settings.lake) not in failed_missing["reason"]  # no server path in events
    assert failed_missing["retryable"] is True
    failed_escape = failure_of(escaping["run_id"])
    assert "outside the lake root" in failed_escape["reason"]
    assert failed_escape["retryable"] is False

    # The failures are reported too, so operators see them next to the successes.
    assert wait_reported(watcher, local, missing["run_id"])["status"] == "FAILED"

    # The garbage is dead-lettered with its bytes and headers intact, and why.
    deadline_reached = None
    for _ in range(120):
        # Other tests of the shared stack dead-letter too: this one's has its header.
        dead = [
            u
            for u in watcher.undecodable
            if u[0] == topics.dead_letter.name and ("origin", b"test") in u[2]
        ]
        if dead:
            break
        try:
            watcher.wait_for(lambda *_: False, timeout=1, alive=local.check_alive)
        except TimeoutError as exc:
            deadline_reached = exc
    assert dead, f"nothing reached the dead-letter topic ({deadline_reached})"
    _topic, value, headers = dead[0]
    assert value == garbage
    header_map = dict(headers)
    assert header_map["origin"] == b"test"
    assert topics.landed.name.encode() in header_map["landfall.dead_letter.reason"]
    assert header_map["landfall.dead_letter.source"].startswith(topics.landed.name.encode())

    # After all that, the JSON-published event runs to a successful report.
    _, _, validated = watcher.wait_for(
        lambda _t, kind, rec: (
            kind is EventType.BATCH_VALIDATED and rec["causation_id"] == json_event_id
        ),
        timeout=300,
        alive=local.check_alive,
    )
    reported = wait_reported(watcher, local, validated["run_id"])
    assert reported["status"] == "SUCCEEDED"
    assert reported["rows_scored"] == validated["rows_valid"] > 0
    # That was a rerun of the first test's partition: its outputs were replaced, not
    # appended to.
    predictions = pq.read_table(Lake(settings.lake).partition_dir("demo", "predictions", PARTITION))
    assert predictions.num_rows == validated["rows_valid"]
    local.check_alive()


def test_the_demo_seeds_a_running_stack_and_waits_for_its_report(
    stack: tuple[Settings, LocalStack],
) -> None:
    # What compose's one-shot seed service runs: land, register, publish and wait on
    # the stack that is already there, starting and stopping nothing.
    settings, local = stack
    partition = "2026-09-30"
    seeded = subprocess.run(
        [sys.executable, "-m", "landfall", "demo", "--on-running-stack",
         "--partition", partition, "--timeout", "400"],
        env={**os.environ, "LANDFALL_CONFIG": str(local.log_dir / "stack-config.yaml")},
        capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert f"partition {partition}: SUCCEEDED" in seeded.stdout, seeded.stdout
    assert "broker at" not in seeded.stdout  # it started no broker or services of its own
    summary = re.search(r"landfall demo: batch (\S+) run (\S+)", seeded.stdout)
    assert summary, seeded.stdout
    local.check_alive()  # and stopped none of the stack's
    db = RunHistory.open(settings.results_db_url)
    try:
        (run,) = db.runs_of(summary.group(1))
        assert run["run_id"] == summary.group(2)
        assert run["status"] == "SUCCEEDED" and run["rows_scored"] > 0
    finally:
        db.close()
