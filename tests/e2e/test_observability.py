"""One run, observed: a single trace across every process, and each service's metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from landfall.config import ENV_PREFIX, Settings
from landfall.demo import write_sample_partition
from landfall.events import EventWatcher
from landfall.lake import Lake
from landfall.stack import LocalStack
from tests.e2e.conftest import wait_reported

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

PARTITION = "2026-11-05"
STAGES = ("validator", "featurizer", "predictor", "reporter")


def _spans(trace_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(trace_dir.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx2.get(url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


def test_one_trace_follows_a_run_through_every_service_and_the_metrics_count_it(
    stack: tuple[Settings, LocalStack], watcher: EventWatcher
) -> None:
    # Long: one scenario against one running stack, told in order.
    settings, local = stack
    started = time.time()
    sample = write_sample_partition(Lake(settings.lake), PARTITION, rows=600)
    # Published by the command line, as an operator would: the trace starts there.
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env[f"{ENV_PREFIX}CONFIG"] = str(local.log_dir / "stack-config.yaml")
    published = subprocess.run(
        [sys.executable, "-m", "landfall", "publish", "demo", PARTITION],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    match = re.search(r"run (\S+)", published.stdout)
    assert match, published.stdout
    run_id = match.group(1)
    wait_reported(watcher, local, run_id)

    # ---- the trace: the reporter's span ends just after it published batch-reported
    trace_dir = settings.telemetry.trace_dir
    assert trace_dir is not None
    # The reporter writes a span per event of the run; the last one is its produce of
    # batch-reported, written once the broker acknowledged it. A span is written when
    # it ends, so a parent lands in the file just after its last child: wait for both.
    reported_span = f"produce {settings.kafka.topics.reported.name}"
    deadline = time.monotonic() + 30
    while True:
        spans = _spans(trace_dir)
        ours = [s for s in spans if s["attributes"].get("landfall.run_id") == run_id]
        trace_ids = {s["context"]["trace_id"] for s in ours}
        in_trace = [s for s in spans if s["context"]["trace_id"] in trace_ids]
        written = {s["context"]["span_id"] for s in in_trace}
        if any(s["name"] == reported_span for s in in_trace) and all(
            s["parent_id"] in written for s in in_trace if s["parent_id"] is not None
        ):
            break
        assert time.monotonic() < deadline, "the run's spans never all reached the files"
        time.sleep(0.5)
    assert len(trace_ids) == 1, trace_ids
    services = {s["resource"]["attributes"]["service.name"] for s in in_trace}
    assert services == {"landfall-cli", *(f"landfall-{name}" for name in STAGES)}
    span_ids = {s["context"]["span_id"] for s in in_trace}
    roots = [s for s in in_trace if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["publish data-landed"]
    assert all(s["parent_id"] in span_ids for s in in_trace if s["parent_id"] is not None)
    by_name = {s["name"]: s for s in in_trace}
    validation = by_name["validation"]
    assert validation["attributes"]["landfall.rows_landed"] == sample.rows
    assert validation["attributes"]["landfall.rows_quarantined"] == sample.bad_rows
    prediction = by_name["prediction"]
    assert prediction["attributes"]["landfall.model_version"]
    assert prediction["attributes"]["landfall.rows"] == sample.rows - sample.bad_rows
    for topic in ("validated", "featurized", "predicted", "reported"):
        assert f"produce {getattr(settings.kafka.topics, topic).name}" in by_name
    # Span names are few whatever the batch (the batch is in the attributes), and the
    # messaging attributes are the current semantic conventions' names.
    assert [s["name"] for s in in_trace if PARTITION in s["name"]] == []
    consumes = [s for s in in_trace if s["name"].startswith("consume ")]
    # One per stage; and the reporter's, of each event of the run it follows: the run's
    # data-landed and the three stages' completions.
    consumers = sorted(s["resource"]["attributes"]["service.name"] for s in consumes)
    assert consumers == sorted(
        [*(f"landfall-{name}" for name in STAGES if name != "reporter"), *["landfall-reporter"] * 4]
    ), consumers
    for attributes in (s["attributes"] for s in consumes):
        assert attributes["messaging.operation.type"] == "process"
        assert isinstance(attributes["messaging.kafka.offset"], int)
        assert attributes["messaging.destination.partition.id"].isdigit()
    assert by_name["publish data-landed"]["attributes"]["messaging.operation.type"] == "send"

    # ---- the metrics, scraped from each service's own endpoint
    urls = local.metrics_urls()
    assert set(urls) == set(STAGES)
    for name in STAGES:
        metrics = _metrics(urls[name])
        done = _value(
            metrics, "landfall_batch_processing_duration_seconds_count",
            service=name, dataset="demo", outcome="succeeded",
        )  # fmt: skip
        assert done is not None and done >= 1, name
        assert _value(metrics, "landfall_processed_rows_total", service=name, dataset="demo")
        last = _value(
            metrics, "landfall_last_success_timestamp_seconds", service=name, dataset="demo"
        )
        assert last is not None and last >= started, name
        assert _value(metrics, "landfall_batches_in_progress", service=name) == 0
    validator = _metrics(urls["validator"])
    quarantined = _value(
        validator, "landfall_quarantined_rows_total", service="validator", dataset="demo"
    )
    assert quarantined is not None and quarantined >= sample.bad_rows
    landed_topic = settings.kafka.topics.landed.name
    lag = _value(
        validator,
        "landfall_consumer_lag_messages",
        service="validator",
        topic=landed_topic,
        partition="0",
    )
    assert lag is not None and lag >= 0
