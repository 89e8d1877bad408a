"""The job API in process: what a submission publishes, the lifespan's producer, the HTML.

The real broker path (a submission reaching Kafka through the lifespan's producer) is
in tests/integration/test_api.py; here a recording publisher, the API's own seam,
shows what each request published.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from landfall.api import create_app
from landfall.api.views import STAGES
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.events import EventProducer
from landfall.ingress import batch_id_for
from landfall.rendering import render
from landfall.results import RunKey, RunRecorder
from services.reporter.html import render_report_html
from tests.api_support import new_token, write_token_file
from tests.conftest import settings_for
from tests.reporting_support import finished_report

OPERATOR = new_token("operator")
READER = new_token("reader")
HOSTILE = "<script>alert(1)</script>"


@dataclass
class RecordingPublisher:
    """A publisher that keeps what it was given (the broker always acknowledges)."""

    published: list[tuple[EventType, str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, event_type: EventType, topic: str, record: dict[str, Any]) -> dict[str, Any]:
        self.published.append((event_type, topic, record))
        return record


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    tokens = write_token_file(
        tmp_path / "tokens", [f"operator {OPERATOR} ci", f"read {READER} dashboards"]
    )
    # No broker listens there: nothing in these tests may need one.
    return settings_for(
        tmp_path, LANDFALL_KAFKA_BOOTSTRAP="127.0.0.1:9", LANDFALL_API_TOKEN_FILE=str(tokens)
    )


@pytest.fixture
def recorded(settings: Settings) -> Iterator[tuple[TestClient, RecordingPublisher]]:
    publisher = RecordingPublisher()
    with TestClient(create_app(settings, publisher=publisher)) as client:
        yield client, publisher


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_submission_publishes_one_data_landed_event_and_records_the_run(
    recorded: tuple[TestClient, RecordingPublisher], settings: Settings
) -> None:
    client, publisher = recorded
    body = {"dataset": "demo", "partition": "2026-11-01", "model_version": "3"}
    accepted = client.post("/batch/predict", json=body, headers=_as(OPERATOR))
    assert accepted.status_code == 202, accepted.text
    ((kind, topic, record),) = publisher.published
    assert (kind, topic) == (EventType.DATA_LANDED, settings.kafka.topics.landed.name)
    assert (record["dataset"], record["partition"]) == ("demo", "2026-11-01")
    assert record["run_id"] == accepted.json()["run_id"]
    assert record["model_version"] == "3"
    assert record["producer"].startswith("landfall-api/")
    job = client.get(accepted.json()["links"]["self"], headers=_as(READER)).json()
    assert (job["status"], job["model"]["requested_version"]) == ("SUBMITTED", "3")
    # Refused requests publish nothing.
    assert client.post("/batch/predict", json=body, headers=_as(READER)).status_code == 403
    unknown = client.post("/batch/predict", json={**body, "dataset": "nope"}, headers=_as(OPERATOR))
    assert unknown.status_code == 422
    assert len(publisher.published) == 1


def test_the_lifespan_owns_one_producer_closed_at_shutdown(settings: Settings) -> None:
    app = create_app(settings)
    assert app.state.publisher is None
    with TestClient(app) as client:
        producer = app.state.publisher
        assert isinstance(producer, EventProducer)
        assert client.get("/healthz").status_code == 200
        assert app.state.publisher is producer  # the same one for every request
    assert app.state.publisher is None
    with pytest.raises(Exception, match="closed"):
        producer.publish(EventType.DATA_LANDED, "t", {})


def test_an_app_that_was_not_started_reads_but_cannot_submit(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # no `with`: no lifespan, no producer
    assert client.get("/batches", headers=_as(READER)).status_code == 200
    refused = client.post(
        "/batch/predict", json={"dataset": "demo", "partition": "2026-11-01"}, headers=_as(OPERATOR)
    )
    assert refused.status_code == 503 and "not started" in refused.json()["detail"]


def _landfall_css() -> str:
    return render("landfall.css").strip()


def test_the_status_page_escapes_every_value_and_shares_the_report_s_styles(
    recorded: tuple[TestClient, RecordingPublisher], settings: Settings
) -> None:
    client, _ = recorded
    recorder = RunRecorder.open(settings.results_db_url)
    try:
        key = RunKey(f"batch-{HOSTILE}", f"run-{HOSTILE}", "demo", "2026-11-03")
        recorder.record_submission(key, submitted_at=datetime(2026, 11, 3, tzinfo=UTC))
    finally:
        recorder.close()
    page = client.get("/", headers=_as(READER))
    assert page.status_code == 200
    assert "<script" not in page.text
    assert 'data-batch-id="batch-&lt;script&gt;alert(1)&lt;/script&gt;"' in page.text
    report = render_report_html(
        {"status": "SUCCEEDED", "dataset": "demo", "partition": "2026-11-03"}
        | {"batch_id": HOSTILE, "run_id": HOSTILE, "timeline": []}
    )
    assert "<script" not in report
    css = _landfall_css()
    assert len(css) > 200 and css in page.text and css in report


def test_the_login_form_escapes_where_it_returns_to(
    recorded: tuple[TestClient, RecordingPublisher],
) -> None:
    client, _ = recorded
    form = client.get("/login", params={"next": f"/x'>{HOSTILE}"})
    assert form.status_code == 200
    assert "<script" not in form.text
    assert "value='/x&#39;&gt;&lt;script&gt;" in form.text
    assert _landfall_css() in form.text


def test_every_router_is_mounted(settings: Settings) -> None:
    app: FastAPI = create_app(settings)
    assert set(app.openapi()["paths"]) == {
        "/batch/predict",
        "/batch/metrics",
        "/batch/{job_id}",
        "/batches",
        "/reports/{dataset}/{partition}/{name}",
        "/batch/{run_id}/{name}",
        "/",
        "/console/backfill",
        "/console/rerun",
        "/console/redrive",
        "/dead-letters",
        "/login",
        "/logout",
        "/healthz",
    }
    assert TestClient(app).get("/docs").status_code == 200  # served, not described


def test_the_partition_grid_shows_each_stage_of_each_partition_s_latest_run(
    recorded: tuple[TestClient, RecordingPublisher], settings: Settings
) -> None:
    client, _ = recorded
    recorder = RunRecorder.open(settings.results_db_url)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        for i, (partition, status) in enumerate(
            [("2026-11-02", "SUCCEEDED"), ("2026-11-01", "FAILED"), ("2026-11-01", "SUCCEEDED")]
        ):
            key = RunKey(batch_id_for("demo", partition), f"run-{i}", "demo", partition)
            recorder.record_submission(key, submitted_at=t0 + timedelta(hours=i))
            recorder.record_report(finished_report(key, status, started=t0 + timedelta(hours=i)))
        # A failed run, not replayed yet: its stages after the failure never ran.
        key = RunKey(batch_id_for("demo", "2026-11-03"), "run-3", "demo", "2026-11-03")
        recorder.record_submission(key, submitted_at=t0 + timedelta(hours=3))
        recorder.record_report(
            finished_report(key, "FAILED", started=t0, failed_stage="featurization")
        )
        # Just submitted: nothing ran yet.
        key = RunKey(batch_id_for("demo", "2026-11-04"), "run-4", "demo", "2026-11-04")
        recorder.record_submission(key, submitted_at=t0 + timedelta(hours=4))
    finally:
        recorder.close()
    page = client.get("/", headers=_as(READER)).text
    cells = {
        (m["partition"], m["stage"]): (m["state"], m["href"])
        for m in re.finditer(
            r'<td class="cell \w+" data-partition="(?P<partition>[^"]+)" '
            r'data-stage="(?P<stage>\w+)" data-state="(?P<state>\w+)"><a href="(?P<href>[^"]+)"',
            page,
        )
    }
    assert len(cells) == 4 * 4
    # Dates across, oldest first; the replayed partition shows its latest (successful) run.
    partitions = re.findall(r'data-partition="([^"]+)" data-stage="validation"', page)
    assert partitions == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    assert {cells[("2026-11-01", s)][0] for s in STAGES} == {"SUCCEEDED"}
    assert cells[("2026-11-01", "reporting")][1] == "/batch/run-2/report.html"
    assert [cells[("2026-11-03", s)][0] for s in STAGES] == [
        "SUCCEEDED",
        "FAILED",
        "SKIPPED",
        "SKIPPED",
    ]
    assert {cells[("2026-11-04", s)][0] for s in STAGES} == {"PENDING"}
    # No report yet: the cell leads to the batch's run history.
    assert cells[("2026-11-04", "validation")][1] == f"/batch/{batch_id_for('demo', '2026-11-04')}"
