"""A run's trace in a real Jaeger, and each batch's duration pointing at that trace.

The stack here exports spans over OTLP to a local Jaeger (``make jaeger`` builds it)
and writes no trace files: whatever the test finds, Jaeger received and stored. It is
read back through Jaeger's HTTP query API, as the UI reads it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from landfall.config import ENV_PREFIX, Settings
from landfall.demo import write_sample_partition
from landfall.events import EventWatcher
from landfall.jaeger import LocalJaeger, jaeger_dir, running_jaeger
from landfall.lake import Lake
from landfall.processes import pid_alive
from landfall.stack import LocalStack
from tests.conftest import settings_for
from tests.e2e.conftest import wait_reported

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

PARTITION = "2026-11-07"
STAGES = ("validator", "featurizer", "predictor", "reporter")
SERVICES = {"landfall-cli", *(f"landfall-{name}" for name in STAGES)}


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalJaeger]:
    with LocalJaeger(tmp_path_factory.mktemp("jaeger"), preferred_ports=False) as running:
        yield running


@pytest.fixture(scope="module")
def traced_stack(
    jaeger: LocalJaeger,
    kafka_bootstrap: str,
    registry_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, LocalStack]]:
    """The four services on topics of their own, Jaeger their only span sink."""
    suffix = uuid.uuid4().hex[:8]
    overrides = {
        "LANDFALL_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LANDFALL_KAFKA_GROUP_PREFIX": f"jaeger-{suffix}",
        "LANDFALL_MLFLOW__TRACKING_URI": f"sqlite:///{registry_home / 'mlflow.db'}",
        "LANDFALL_TELEMETRY__METRICS_PORT": "0",
        "LANDFALL_TELEMETRY__OTLP_ENDPOINT": jaeger.otlp_endpoint,
    }
    for key in ("landed", "validated", "featurized", "predicted", "reported", "failed",
                "dead_letter"):  # fmt: skip
        overrides[f"LANDFALL_KAFKA__TOPICS__{key.upper()}__NAME"] = f"jaeger-{suffix}.{key}"
    settings = settings_for(tmp_path_factory.mktemp("traced"), **overrides)
    telemetry = settings.telemetry.model_copy(update={"trace_dir": None})
    local = LocalStack(
        settings.model_copy(update={"telemetry": telemetry}),
        services=STAGES,
    )
    live = local.start()
    try:
        yield live, local
    finally:
        local.stop()


@pytest.fixture
def traced_watcher(traced_stack: tuple[Settings, LocalStack]) -> Iterator[EventWatcher]:
    settings, _ = traced_stack
    topics = settings.kafka.topics
    watching = EventWatcher(settings, [t.name for t in topics.all() if t is not topics.landed])
    yield watching
    watching.close()


def _find_traces(ui_url: str, service: str, run_id: str) -> list[dict[str, Any]]:
    """Jaeger's search, as the UI does it: a service and a tag."""
    answer = httpx2.get(
        f"{ui_url}/api/traces",
        params={
            "service": service,
            "tags": json.dumps({"landfall.run_id": run_id}),
            "lookback": "1h",
            "limit": "20",
        },
        timeout=10,
    )
    answer.raise_for_status()
    traces: list[dict[str, Any]] = answer.json()["data"] or []
    return traces


def _trace(ui_url: str, trace_id: str) -> dict[str, Any]:
    answer = httpx2.get(f"{ui_url}/api/traces/{trace_id}", timeout=10)
    answer.raise_for_status()
    data: list[dict[str, Any]] = answer.json()["data"]
    assert len(data) == 1, data
    return data[0]


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def _parent(span: dict[str, Any]) -> str | None:
    parents = [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"]
    assert len(parents) <= 1, span
    return parents[0] if parents else None


def _screenshot(jaeger: LocalJaeger, trace_id: str, path: Path) -> None:
    """The trace as Jaeger's UI shows it, taken by headless Chromium (README's picture).

    The Go build of Jaeger has no UI: LANDFALL_JAEGER_UI must name a jaeger-ui build.
    """
    page = httpx2.get(f"{jaeger.ui_url}/", timeout=10).text
    assert "placeholder" not in page.lower(), "set LANDFALL_JAEGER_UI to a jaeger-ui build"
    path.unlink(missing_ok=True)
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1500,1100", "--virtual-time-budget=20000", f"--screenshot={path}",
         f"{jaeger.ui_url}/trace/{trace_id}"],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    assert path.stat().st_size > 10_000, path


def test_jaeger_holds_one_trace_of_the_run_across_all_five_processes(
    jaeger: LocalJaeger,
    traced_stack: tuple[Settings, LocalStack],
    traced_watcher: EventWatcher,
) -> None:
    # Long: one scenario against one running stack, told in order.
    settings, local = traced_stack
    sample = write_sample_partition(Lake(settings.lake), PARTITION, rows=500)
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
    wait_reported(traced_watcher, local, run_id)

    # Spans leave each service in batches (every few seconds): wait until the reporter's
    # produce of batch-reported, the run's last span, is in and no parent is missing.
    reported_span = f"produce {settings.kafka.topics.reported.name}"
    deadline = time.monotonic() + 60
    while True:
        found = _find_traces(jaeger.ui_url, "landfall-reporter", run_id)
        if found:
            trace = _trace(jaeger.ui_url, found[0]["traceID"])
            spans = trace["spans"]
            ids = {span["spanID"] for span in spans}
            if any(s["operationName"] == reported_span for s in spans) and all(
                _parent(s) in ids for s in spans if _parent(s) is not None
            ):
                break
        assert time.monotonic() < deadline, "the run's trace never reached Jaeger whole"
        time.sleep(1)

    # One trace: every process's spans of the run are in it, and in no other.
    trace_id = trace["traceID"]
    for service in SERVICES:
        found = _find_traces(jaeger.ui_url, service, run_id)
        assert {t["traceID"] for t in found} == {trace_id}, service
    service_of = {pid: process["serviceName"] for pid, process in trace["processes"].items()}
    assert {service_of[span["processID"]] for span in spans} == SERVICES

    # Correctly parented: one root, the CLI's publish; each stage continues from the event
    # that triggered it, and its work hangs under its consume span.
    by_id = {span["spanID"]: span for span in spans}
    by_name = {span["operationName"]: span for span in spans}
    roots = [span for span in spans if _parent(span) is None]
    assert [r["operationName"] for r in roots] == ["publish data-landed"]
    assert service_of[roots[0]["processID"]] == "landfall-cli"
    topics = settings.kafka.topics
    # Each stage consumes what the one before produced on the topic between them.
    triggered_by = {
        "validator": (topics.landed.name, "landfall-cli", "publish data-landed"),
        "featurizer": (topics.validated.name, "landfall-validator", "produce"),
        "predictor": (topics.featurized.name, "landfall-featurizer", "produce"),
    }
    for stage, (topic, upstream, upstream_span) in triggered_by.items():
        consume = [
            span
            for span in spans
            if span["operationName"] == f"consume {topic}"
            and service_of[span["processID"]] == f"landfall-{stage}"
        ]
        assert len(consume) == 1, (stage, consume)
        parent = by_id[_parent(consume[0]) or ""]
        assert service_of[parent["processID"]] == upstream, stage
        assert parent["operationName"].startswith(upstream_span), stage
        if upstream_span == "produce":
            assert parent["operationName"] == f"produce {topic}", stage
    for stage, work in (("validator", "validation"), ("featurizer", "featurization"),
                        ("predictor", "prediction")):  # fmt: skip
        span = by_name[work]
        assert service_of[span["processID"]] == f"landfall-{stage}"
        assert by_id[_parent(span) or ""]["operationName"].startswith("consume "), work
        tags = _tags(span)
        assert (tags["landfall.dataset"], tags["landfall.partition"]) == ("demo", PARTITION)
        assert tags["landfall.run_id"] == run_id
    reported = by_name[reported_span]
    assert service_of[reported["processID"]] == "landfall-reporter"

    # The batch's facts as attributes: row counts and the exact model version.
    validation = _tags(by_name["validation"])
    assert validation["landfall.rows_landed"] == sample.rows
    assert validation["landfall.rows_quarantined"] == sample.bad_rows
    prediction = _tags(by_name["prediction"])
    assert prediction["landfall.rows"] == sample.rows - sample.bad_rows
    assert re.fullmatch(r"\d+", str(prediction["landfall.model_version"])), prediction

    # The work inside Spark: each stage span has a child span per Spark job it ran,
    # within the stage's own time, with the job's tasks counted.
    for work in ("validation", "featurization", "prediction"):
        stage_span = by_name[work]
        jobs = [
            span
            for span in spans
            if span["operationName"] == "spark job" and _parent(span) == stage_span["spanID"]
        ]
        assert jobs, f"no Spark job spans under the {work} span"
        stage_end = stage_span["startTime"] + stage_span["duration"]
        for job in jobs:
            tags = _tags(job)
            assert tags["spark.job.status"] == "SUCCEEDED", (work, tags)
            assert tags["spark.job.tasks"] >= 1 and tags["spark.job.tasks.failed"] == 0, tags
            # Spark's clock has millisecond precision: allow that much either side.
            assert job["startTime"] >= stage_span["startTime"] - 1000, (work, tags)
            assert job["startTime"] + job["duration"] <= stage_end + 1000, (work, tags)
        assert len({_tags(job)["spark.job.id"] for job in jobs}) == len(jobs), work

    if os.environ.get("LANDFALL_JAEGER_SCREENSHOT"):
        _screenshot(jaeger, trace_id, Path(os.environ["LANDFALL_JAEGER_SCREENSHOT"]))

    # ---- metrics meet traces: each service's batch duration names this trace
    urls = local.metrics_urls()
    assert set(urls) == set(STAGES)
    for name in STAGES:
        answer = httpx2.get(
            urls[name], headers={"Accept": "application/openmetrics-text"}, timeout=10
        )
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        exemplars = [
            sample.exemplar.labels
            for family in text_string_to_metric_families(answer.text)
            if family.name == "landfall_batch_processing_duration_seconds"
            for sample in family.samples
            if sample.exemplar is not None and sample.labels.get("outcome") == "succeeded"
        ]
        # Jaeger writes a trace id without leading zeros: compare them as numbers.
        assert int(trace_id, 16) in {int(e["trace_id"], 16) for e in exemplars}, (name, exemplars)


def _wait_for_line(log: Path, process: subprocess.Popen[bytes], pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + 240
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            return match
        assert process.poll() is None, f"`landfall up` exited {process.returncode}:\n{text}"
        assert time.monotonic() < deadline, f"no {pattern!r} in `landfall up`'s output:\n{text}"
        time.sleep(0.5)


def test_up_with_jaeger_starts_it_points_the_services_and_publish_at_it_and_stops_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Long: one scenario against one running stack, told in order.
    suffix = uuid.uuid4().hex[:8]
    overrides = {
        "LANDFALL_HOME": str(tmp_path / "home"),
        "LANDFALL_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LANDFALL_KAFKA_GROUP_PREFIX": f"up-jaeger-{suffix}",
        "LANDFALL_TELEMETRY__METRICS_PORT": "0",
    }
    for key in ("landed", "validated", "featurized", "predicted", "reported", "failed",
                "dead_letter"):  # fmt: skip
        overrides[f"LANDFALL_KAFKA__TOPICS__{key.upper()}__NAME"] = f"up-jaeger-{suffix}.{key}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}, **overrides}
    settings = settings_for(tmp_path / "home", **overrides)
    write_sample_partition(Lake(settings.lake), PARTITION, rows=200)
    output = tmp_path / "up.log"
    with output.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "landfall", "up", "--jaeger", "--only", "validator"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        ui_url = _wait_for_line(output, up, r"^Jaeger: (http://\S+)/ ").group(1)
        _wait_for_line(output, up, r"^landfall is up")
        running = running_jaeger(jaeger_dir(settings.home))
        assert running is not None and running.ui_url == ui_url
        stack_config = yaml.safe_load((settings.home / "logs" / "stack-config.yaml").read_text())
        assert stack_config["telemetry"]["otlp_endpoint"] == running.otlp_endpoint

        # No endpoint configured: `publish` finds this home's Jaeger as it finds its broker.
        published = subprocess.run(
            [sys.executable, "-m", "landfall", "publish", "demo", PARTITION],
            env=env, capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        match = re.search(r"run (\S+)", published.stdout)
        assert match, published.stdout
        run_id = match.group(1)
        deadline = time.monotonic() + 240
        while True:
            found = _find_traces(ui_url, "landfall-validator", run_id)
            names = {
                (t["processes"][s["processID"]]["serviceName"], s["operationName"])
                for t in found
                for s in t["spans"]
            }
            if ("landfall-validator", "validation") in names:
                break
            assert up.poll() is None, output.read_text(errors="replace")
            assert time.monotonic() < deadline, f"the validator's spans never came: {names}"
            time.sleep(1)
        assert len(found) == 1
        assert ("landfall-cli", "publish data-landed") in names
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=90)
    text = output.read_text(errors="replace")
    assert up.returncode == 0, text
    # Jaeger stopped with the stack, and left no state naming it as running.
    assert running_jaeger(jaeger_dir(settings.home)) is None
    assert not pid_alive(running.pid)


def test_up_with_jaeger_unbuilt_says_how_to_build_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(LANDFALL_HOME=str(tmp_path), LANDFALL_JAEGER_BIN=str(tmp_path / "no-jaeger"))
    done = subprocess.run(
        [sys.executable, "-m", "landfall", "up", "--jaeger"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert "make jaeger" in done.stderr and "LANDFALL_JAEGER_BIN" in done.stderr, done.stderr
    assert "Apache Kafka" not in done.stdout  # nothing was started
