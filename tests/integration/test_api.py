"""The job API as its own process (``landfall serve api``), over real HTTP."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.events import EventWatcher, publish_data_landed
from landfall.ingress import batch_id_for
from landfall.ports import free_port
from landfall.results_db import ResultsDb, RunKey
from landfall.serve import ensure_all_topics
from services.reporter.html import render_report_html
from tests.reporting_support import LandfallProcess, finished_report, live_settings

pytestmark = [pytest.mark.broker]

T0 = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)


@dataclass
class Api:
    settings: Settings
    client: httpx2.Client


def _seed(settings: Settings) -> None:
    """Two finished batches (one replayed), as the reporter would have left them."""
    db = ResultsDb(settings.results_db_url)
    try:
        for i, (partition, status) in enumerate(
            [("2026-11-01", "FAILED"), ("2026-11-01", "SUCCEEDED"), ("2026-11-02", "SUCCEEDED")]
        ):
            run_id = f"seed-run-{i}"
            key = RunKey(batch_id_for("demo", partition), run_id, "demo", partition)
            start = T0 + timedelta(hours=i)
            db.record_submission(key, submitted_at=start)
            report_dir = settings.lake / "demo" / "reports" / partition
            report = finished_report(
                key, status, started=start, failed_stage="featurization", reason="bad expression"
            )
            db.record_report(report)
            report_dir.mkdir(parents=True, exist_ok=True)
            (report_dir / "report.json").write_text(json.dumps(report))
            (report_dir / "report.html").write_text(render_report_html(report))
    finally:
        db.close()


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("api")
    settings, config_file = live_settings(
        home, kafka_bootstrap, LANDFALL_REPORTING__API_PORT=str(free_port())
    )
    ensure_all_topics(settings)
    _seed(settings)
    process = LandfallProcess("api", config_file, home / "api.log")
    base = f"http://127.0.0.1:{settings.reporting.api_port}"
    client = httpx2.Client(base_url=base, timeout=30)
    try:
        deadline = time.monotonic() + 120
        while True:
            process.check_alive()
            try:
                if client.get("/openapi.json").status_code == 200:
                    break
            except httpx2.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        yield Api(settings, client)
    finally:
        client.close()
        process.stop()


def test_the_openapi_description_names_every_endpoint(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert {"/batch/predict", "/batch/{job_id}", "/batch/metrics", "/batches", "/"} <= set(
        spec["paths"]
    )
    assert "post" in spec["paths"]["/batch/predict"]


def test_a_submitted_batch_is_published_and_followed(api: Api) -> None:
    watcher = EventWatcher(api.settings, [api.settings.kafka.topics.landed.name])
    try:
        response = api.client.post(
            "/batch/predict", json={"dataset": "demo", "partition": "2026-11-05"}
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["job_id"] == accepted["run_id"]
        assert accepted["batch_id"] == batch_id_for("demo", "2026-11-05")
        _, kind, landed = watcher.wait_for(
            lambda _t, _k, rec: rec.get("run_id") == accepted["run_id"], timeout=60
        )
    finally:
        watcher.close()
    assert kind is EventType.DATA_LANDED
    assert (landed["dataset"], landed["partition"]) == ("demo", "2026-11-05")

    job = api.client.get(accepted["links"]["self"]).json()
    assert (job["status"], job["job_kind"]) == ("SUBMITTED", "run")
    assert [s["status"] for s in job["stages"]] == ["PENDING"] * 4
    assert job["errors"] == []


def test_a_pinned_model_version_travels_with_the_submission(api: Api) -> None:
    response = api.client.post(
        "/batch/predict",
        json={"dataset": "demo", "partition": "2026-11-06", "model_version": "7"},
    )
    if "model_version" not in inspect.signature(publish_data_landed).parameters:
        assert response.status_code == 501
        pytest.skip("publish_data_landed cannot pin a model version in this build")
    assert response.status_code == 202, response.text
    job = api.client.get(f"/batch/{response.json()['run_id']}").json()
    assert job["model"]["requested_version"] == "7"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"dataset": "nope", "partition": "2026-11-01"}, 422, "unknown dataset 'nope'"),
        ({"dataset": "demo", "partition": "2026-13-01"}, 422, "partition"),
        ({"dataset": "demo", "partition": "yesterday"}, 422, "YYYY-MM-DD"),
        ({"dataset": "demo"}, 422, "partition"),
        ({"dataset": "demo", "partition": "2026-11-01", "colour": "red"}, 422, "colour"),
        ({"dataset": "demo", "partition": "2026-11-01", "path": "../../etc"}, 422, "outside"),
        ({"dataset": "demo", "partition": "2026-11-01", "model_version": "v2"}, 422, "model"),
        ({"dataset": "demo", "partition": "2026-11-01", "format": "xls"}, 422, "format"),
    ],
)
def test_bad_submissions_are_refused_with_what_was_wrong(
    api: Api, body: dict, status: int, says: str
) -> None:
    response = api.client.post("/batch/predict", json=body)
    assert response.status_code == status
    assert says in response.text


def test_a_body_that_is_not_json_is_refused(api: Api) -> None:
    response = api.client.post(
        "/batch/predict", content=b"dataset=demo", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_a_job_by_run_id_or_batch_id_and_unknown_ids(api: Api) -> None:
    failed = api.client.get("/batch/seed-run-0").json()
    assert failed["status"] == "FAILED"
    statuses = {s["stage"]: s["status"] for s in failed["stages"]}
    assert statuses == {
        "validation": "SUCCEEDED",
        "featurization": "FAILED",
        "prediction": "SKIPPED",
        "reporting": "SKIPPED",
    }
    assert failed["errors"][0]["reason"] == "bad expression"
    assert failed["figures"]["quality"]["rule_failures"] == {"not_null:feature2": 5.0}
    assert failed["links"]["report_html"] == "/reports/demo/2026-11-01/report.html"

    batch = api.client.get(f"/batch/{batch_id_for('demo', '2026-11-01')}").json()
    assert (batch["job_kind"], batch["run_id"], batch["status"]) == (
        "batch",
        "seed-run-1",
        "SUCCEEDED",
    )
    assert [r["run_id"] for r in batch["runs"]] == ["seed-run-0", "seed-run-1"]

    missing = api.client.get("/batch/no-such-id")
    assert missing.status_code == 404
    assert "no-such-id" in missing.json()["detail"]


def test_history_is_filtered_and_paged(api: Api) -> None:
    everything = api.client.get("/batches", params={"dataset": "demo"}).json()
    assert everything["total"] >= 2
    window = api.client.get(
        "/batches", params={"dataset": "demo", "from": "2026-11-01", "to": "2026-11-01"}
    ).json()
    assert [b["partition"] for b in window["items"]] == ["2026-11-01"]
    assert window["items"][0]["run_count"] == 2
    succeeded = api.client.get("/batches", params={"status": "SUCCEEDED"}).json()
    assert {b["partition"] for b in succeeded["items"]} == {"2026-11-01", "2026-11-02"}
    first = api.client.get("/batches", params={"status": "SUCCEEDED", "limit": 1}).json()
    assert (len(first["items"]), first["total"]) == (1, 2)
    second = api.client.get(first["next"]).json()
    assert second["offset"] == 1
    assert second["items"][0]["batch_id"] != first["items"][0]["batch_id"]
    assert second["next"] is None


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"from": "last week"}, "from"),
        ({"to": "2026-02-30"}, "to"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, "after"),
        ({"status": "DONE"}, "status"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
    ],
)
def test_bad_history_queries_are_refused(api: Api, params: dict, says: str) -> None:
    response = api.client.get("/batches", params=params)
    assert response.status_code == 422
    assert says in response.text


def test_metrics_aggregate_batches_runs_rows_and_durations(api: Api) -> None:
    metrics = api.client.get("/batch/metrics", params={"dataset": "demo"}).json()
    assert metrics["batches"]["by_status"]["SUCCEEDED"] == 2
    assert metrics["runs"]["by_status"]["FAILED"] == 1
    assert metrics["rows"]["scored"] == 285
    assert metrics["error_rates"]["quarantined_rows"] == pytest.approx(0.05)
    assert metrics["durations_s"]["max"] == pytest.approx(30.0)
    assert metrics["stage_durations_ms"]["validation"]["mean"] == pytest.approx(4000)


def test_the_status_page_and_the_report_files(api: Api) -> None:
    page = api.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f'data-batch-id="{batch_id_for("demo", "2026-11-02")}"' in page.text
    assert "/reports/demo/2026-11-02/report.html" in page.text
    html = api.client.get("/reports/demo/2026-11-02/report.html")
    assert html.status_code == 200 and "<svg" in html.text
    report = api.client.get("/reports/demo/2026-11-02/report.json").json()
    assert report["status"] == "SUCCEEDED"
    assert api.client.get("/reports/demo/2026-12-24/report.html").status_code == 404
    assert api.client.get("/reports/demo/2026-11-02/secrets.txt").status_code == 404
    assert api.client.get("/reports/..%2F..%2Fetc/2026-11-02/report.html").status_code == 404
    assert api.client.get("/reports/demo/..%2F..%2F/report.html").status_code in (404, 422)
