"""Scale out: two replicas of each stage share 6-partition topics, each batch once.

Two validators, two featurizers and two predictors (one consumer group per service)
and the reporter run as processes; twelve partitions land and are announced at once.
Every batch must come out exactly once at every stage, nothing failed, nothing
dead-lettered, and both replicas of each scaled service must have done some of it.

Which replica did what is read from two independent sources: the spans each process
wrote (``LocalStack`` names the instance in OpenTelemetry's ``service.instance.id``)
and each instance's own Prometheus endpoint.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupState
from prometheus_client.parser import text_string_to_metric_families

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.demo import write_sample_partition
from landfall.events import EventWatcher, publish_data_landed
from landfall.kafka_clients import admin_client
from landfall.lake import Lake
from landfall.stack import LocalStack
from tests.conftest import isolated_settings

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

PARTITIONS = [f"2026-11-{day:02d}" for day in range(1, 13)]
STAGES = ("validator", "featurizer", "predictor", "reporter")
SCALED = ("validator", "featurizer", "predictor")
REPLICAS = 2
TOPIC_PARTITIONS = 6
ROWS = 300
STAGE_EVENTS = {
    EventType.BATCH_VALIDATED: "validator",
    EventType.BATCH_FEATURIZED: "featurizer",
    EventType.BATCH_PREDICTED: "predictor",
    EventType.BATCH_REPORTED: "reporter",
}


def _small_spark(settings: Settings) -> Settings:
    """Seven Spark drivers share two cores here: one task thread and a small heap each."""
    conf = {
        **settings.spark.conf,
        "spark.driver.memory": "512m",
        "spark.sql.shuffle.partitions": "1",
        "spark.ui.enabled": "false",
    }
    spark = settings.spark.model_copy(update={"master": "local[1]", "conf": conf})
    return settings.model_copy(update={"spark": spark})


def _wait_for_groups(settings: Settings, stack: LocalStack, timeout: float) -> dict[str, Any]:
    """Block until each scaled service's group is stable with every replica in it.

    Publishing earlier would let the first replica up take every partition (and the
    whole burst) before the second one joins. Returns each group's assignment.
    """
    admin = admin_client(settings)
    groups = {f"{settings.kafka.group_prefix}-{service}": service for service in SCALED}
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        described = {
            group: future.result(30)
            for group, future in admin.describe_consumer_groups(list(groups)).items()
        }
        ready = all(
            d.state is ConsumerGroupState.STABLE and len(d.members) == REPLICAS
            for d in described.values()
        )
        if ready:
            return {
                groups[group]: sorted(
                    sorted(tp.partition for tp in member.assignment.topic_partitions)
                    for member in d.members
                )
                for group, d in described.items()
            }
        if time.monotonic() > deadline:
            states = {g: (d.state.name, len(d.members)) for g, d in described.items()}
            raise TimeoutError(f"replicas did not all join within {timeout:g}s: {states}")
        time.sleep(1.0)


def _stage_spans(trace_dir: Path) -> list[dict[str, Any]]:
    """The spans of the stages' work (one per event handled), from every trace file."""
    spans = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            span = json.loads(line)
            attributes = span.get("attributes", {})
            if "landfall.run_id" in attributes and "landfall.service" in attributes:
                spans.append(span)
    return spans


def _consumed_partitions(trace_dir: Path) -> dict[str, set[int]]:
    """Which partitions each instance consumed from, from its consume spans."""
    found: dict[str, set[int]] = defaultdict(set)
    for path in sorted(trace_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            span = json.loads(line) if line.strip() else {}
            partition = span.get("attributes", {}).get("messaging.kafka.destination.partition")
            instance = span.get("resource", {}).get("attributes", {}).get("service.instance.id")
            if partition is not None and instance:
                found[instance].add(int(partition))
    return found


def _succeeded_batches(metrics_url: str, service: str) -> float:
    """How many batches the instance behind ``metrics_url`` says it completed."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "landfall_batch_processing_duration_seconds_count"
                and sample.labels
                == {
                    "service": service,
                    "dataset": "demo",
                    "outcome": "succeeded",
                }
            ):
                return sample.value
    return 0.0


def test_two_replicas_per_stage_handle_every_batch_exactly_once(
    kafka_bootstrap: str, registry_home: Path, tmp_path: Path
) -> None:
    # Long: one scenario against one running stack, told in order.
    began = time.monotonic()
    settings = _small_spark(
        isolated_settings(
            kafka_bootstrap,
            tmp_path,
            "scale",
            LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{registry_home / 'mlflow.db'}",
            # Any free ports: other stacks may run on this machine at the same time.
            LANDFALL_TELEMETRY__METRICS_PORT="0",
            # The one reporter writes the twelve reports in turn, each comparing with the
            # previous partitions: one is enough here, and keeps it from being the
            # bottleneck of a test about the scaled stages.
            LANDFALL_REPORTING__REFERENCE_PARTITIONS="1",
        )
    )
    topics = settings.kafka.topics
    assert {t.partitions for t in topics.all()} == {TOPIC_PARTITIONS}
    lake = Lake(settings.lake)
    for day, partition in enumerate(PARTITIONS, start=1):
        write_sample_partition(lake, partition, rows=ROWS, seed=day)

    stack = LocalStack(settings, services=STAGES, scale=dict.fromkeys(SCALED, REPLICAS))
    live = stack.start()
    watcher = EventWatcher(live, [t.name for t in topics.all()])
    try:
        assignments = _wait_for_groups(live, stack, timeout=240)
        ready = time.monotonic()
        # Each replica holds half of the six partitions (range or round robin alike).
        for service, members in assignments.items():
            assert [len(m) for m in members] == [3, 3], (service, members)
            assert sorted(p for m in members for p in m) == list(range(TOPIC_PARTITIONS))

        published = {
            record["run_id"]: record
            for record in (publish_data_landed(live, "demo", p) for p in PARTITIONS)
        }

        def all_reported(_topic: str, _kind: EventType, _record: dict[str, Any]) -> bool:
            reported = {
                rec["run_id"] for _t, kind, rec in watcher.seen if kind is EventType.BATCH_REPORTED
            }
            return reported >= set(published)

        watcher.wait_for(all_reported, timeout=480, alive=stack.check_alive)
        done = time.monotonic()
        # A duplicate would come from a second replica working on the same event at the
        # same time as the first: give any such late event a moment to arrive.
        try:
            watcher.wait_for(lambda *_: False, timeout=5, alive=stack.check_alive)
        except TimeoutError:
            pass
        stack.check_alive()
        spans = _stage_spans(live.telemetry.trace_dir)  # type: ignore[arg-type]
        consumed = _consumed_partitions(live.telemetry.trace_dir)  # type: ignore[arg-type]
        handled_by_metrics = {
            name: _succeeded_batches(url, name.split("-")[0])
            for name, url in stack.metrics_urls().items()
        }
    finally:
        watcher.close()
        stack.stop()

    # Exactly once end to end: one event per stage per run, and nothing else.
    ours = [(t, kind, rec) for t, kind, rec in watcher.seen if rec.get("run_id") in published]
    per_stage = Counter((kind, rec["run_id"]) for _t, kind, rec in ours)
    for kind in STAGE_EVENTS:
        assert {run: per_stage[(kind, run)] for run in published} == dict.fromkeys(published, 1), (
            kind
        )
    assert not [rec for _t, kind, rec in watcher.seen if kind is EventType.BATCH_FAILED]
    assert not [seen for seen in watcher.seen if seen[0] == topics.dead_letter.name]
    assert not watcher.undecodable
    assert {rec["run_id"] for _t, kind, rec in ours if kind is EventType.DATA_LANDED} == set(
        published
    )
    reported = {rec["run_id"]: rec for _t, kind, rec in ours if kind is EventType.BATCH_REPORTED}
    validated = {rec["run_id"]: rec for _t, kind, rec in ours if kind is EventType.BATCH_VALIDATED}
    for run_id, landed in published.items():
        assert reported[run_id]["status"] == "SUCCEEDED"
        assert reported[run_id]["partition"] == landed["partition"]
        assert validated[run_id]["rows_landed"] == ROWS
        assert reported[run_id]["rows_scored"] == validated[run_id]["rows_valid"] > 0

    # Nothing lost or duplicated in the lake either: every partition scored, once each.
    for partition in PARTITIONS:
        assert (lake.partition_dir("demo", "predictions", partition) / "_manifest.json").exists()

    # Which replica did each batch: one stage span per run and service, from one instance.
    handled_by: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for span in spans:
        attributes = span["attributes"]
        if attributes["landfall.run_id"] not in published:
            continue
        instance = span["resource"]["attributes"]["service.instance.id"]
        handled_by[attributes["landfall.service"]][attributes["landfall.run_id"]].append(instance)
    partition_of = {run: rec["partition"] for run, rec in published.items()}
    lines = []
    for service in SCALED:
        runs = handled_by[service]
        assert {run: len(instances) for run, instances in runs.items()} == dict.fromkeys(
            published, 1
        ), f"{service} handled some batch more than once, or not at all: {dict(runs)}"
        counts = Counter(instances[0] for instances in runs.values())
        replicas = [service, f"{service}-2"]
        assert set(counts) == set(replicas), f"{service}: only {dict(counts)} did any work"
        # The instance's own /metrics agrees with its spans.
        assert {r: handled_by_metrics[r] for r in replicas} == {r: counts[r] for r in replicas}
        spread = "/".join(str(counts[r]) for r in replicas)
        by_replica = {
            r: sorted(partition_of[run][-2:] for run, inst in runs.items() if inst[0] == r)
            for r in replicas
        }
        partitions = {r: sorted(consumed[r]) for r in replicas}
        lines.append(
            f"{service}: {spread}  (days {by_replica}; topic partitions {partitions}; "
            f"assignment {assignments[service]})"
        )
    timing = (
        f"stack ready in {ready - began:.0f}s, 12 batches through in {done - ready:.0f}s, "
        f"{time.monotonic() - began:.0f}s in all"
    )
    print("\nreplica spread (batches per replica):\n  " + "\n  ".join(lines) + f"\n{timing}")
