"""The job API as its own process (``landfall serve api``), over real HTTP.

Tokens, roles, the browser login, request limits, headers and what errors show are
here too; the OpenAPI-driven fuzzing is in test_api_schema.py.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from landfall.api_tokens import GENERATED_TOKEN_FILE
from landfall.config import ApiSettings, ApiToken, Settings
from landfall.contracts import EventType
from landfall.events import EventWatcher, publish_data_landed
from landfall.ingress import batch_id_for
from landfall.lake import Lake
from landfall.ports import free_port
from landfall.results import RunKey, RunRecorder
from landfall.serve import ensure_all_topics
from services.reporter.html import render_report_html
from tests.api_support import (
    ApiServer,
    api_settings,
    new_token,
    start_api,
    write_config,
    write_token_file,
)
from tests.reporting_support import finished_report, live_settings

pytestmark = [pytest.mark.broker]

T0 = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)
OPERATOR = new_token("operator")
READER = new_token("reader")


@dataclass
class Api:
    settings: Settings
    server: ApiServer
    client: httpx2.Client  # sends the operator token
    reader: httpx2.Client  # sends the read token
    anonymous: httpx2.Client  # sends none
    token_file: Path


def _seed(settings: Settings) -> None:
    """Two finished batches (one replayed), as the reporter would have left them."""
    db = RunRecorder.open(settings.results_db_url)
    lake = Lake.from_settings(settings)
    try:
        for i, (partition, status) in enumerate(
            [("2026-11-01", "FAILED"), ("2026-11-01", "SUCCEEDED"), ("2026-11-02", "SUCCEEDED")]
        ):
            run_id = f"seed-run-{i}"
            key = RunKey(batch_id_for("demo", partition), run_id, "demo", partition)
            start = T0 + timedelta(hours=i)
            db.record_submission(key, submitted_at=start)
            report = finished_report(
                key, status, started=start, failed_stage="featurization", reason="bad expression"
            )
            # Committed as the reporter commits: each run its own, failures kept aside.
            output = lake.stage_output("demo", "reports", partition, run_id)
            report["report_path"] = f"{output.target.rel}/report.json"
            report["report_html_path"] = f"{output.target.rel}/report.html"
            (output.staging / "report.json").write_text(json.dumps(report))
            (output.staging / "report.html").write_text(render_report_html(report))
            lake.commit_partition(output, {}, succeeded=status == "SUCCEEDED", fenced=False)
            db.record_report(report)
    finally:
        db.close()


TOKEN_LINES = [f"operator {OPERATOR} ci-pipeline", f"read {READER} dashboards"]


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("api")
    settings, config_file = api_settings(home, kafka_bootstrap, TOKEN_LINES)
    _seed(settings)
    server = start_api(settings, config_file, home / "api.log")
    clients = [server.client(OPERATOR), server.client(READER), server.client()]
    try:
        yield Api(settings, server, *clients, token_file=home / "tokens")
    finally:
        for client in clients:
            client.close()
        server.stop()


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
        # The whole lake, or another zone, is no raw input: refused at once, not as a
        # failed batch later.
        ({"dataset": "demo", "partition": "2026-11-01", "path": "."}, 422, "inside demo/raw/"),
        (
            {"dataset": "demo", "partition": "2026-11-01", "path": "demo/validated/2026-11-01"},
            422,
            "inside demo/raw/",
        ),
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
    # The failed run's own report; the partition's current one stays the later success.
    assert failed["links"]["report_html"] == "/batch/seed-run-0/report.html"
    own = api.client.get("/batch/seed-run-0/report.json").json()
    assert (own["run_id"], own["status"]) == ("seed-run-0", "FAILED")
    assert "FAILED" in api.client.get("/batch/seed-run-0/report.html").text
    current = api.client.get("/reports/demo/2026-11-01/report.json").json()
    assert (current["run_id"], current["status"]) == ("seed-run-1", "SUCCEEDED")
    assert api.client.get("/batch/no-such-run/report.json").status_code == 404
    assert api.client.get("/batch/seed-run-0/secrets.txt").status_code == 404

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


# ------------------------------------------------------------------------ tokens and roles


def test_reads_need_a_token_and_a_missing_or_wrong_one_is_a_401(api: Api) -> None:
    for path in ("/batches", "/batch/metrics", "/batch/seed-run-0"):
        assert api.reader.get(path).status_code == 200, path
        missing = api.anonymous.get(path)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"] == 'Bearer realm="landfall"'
        assert "Authorization: Bearer" in missing.json()["detail"]
        for header in (
            f"Bearer {OPERATOR}x",
            f"Bearer {READER[:-1]}",
            "Bearer",
            f"Basic {READER}",
        ):
            wrong = api.anonymous.get(path, headers={"Authorization": header})
            assert wrong.status_code == 401, (path, header)
            assert wrong.headers["www-authenticate"].startswith("Bearer")
    invalid = api.anonymous.get("/batches", headers={"Authorization": "Bearer not-a-token-at-all"})
    assert 'error="invalid_token"' in invalid.headers["www-authenticate"]
    # The description and the health check stay open: probes and clients need them.
    assert api.anonymous.get("/openapi.json").status_code == 200
    assert api.anonymous.get("/healthz").json() == {"status": "ok"}


def test_changes_need_an_operator_token_a_read_token_is_a_403(api: Api) -> None:
    body = {"dataset": "demo", "partition": "2026-11-07"}
    anonymous = api.anonymous.post("/batch/predict", json=body)
    assert anonymous.status_code == 401
    refused = api.reader.post("/batch/predict", json=body)
    assert refused.status_code == 403
    assert "operator" in refused.json()["detail"] and "dashboards" in refused.json()["detail"]
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    # Nothing was submitted by the refused requests.
    history = api.reader.get("/batches", params={"from": "2026-11-07", "to": "2026-11-07"})
    assert history.json()["total"] == 0
    accepted = api.client.post("/batch/predict", json=body)
    assert accepted.status_code == 202, accepted.text
    # Unauthenticated requests are refused before the body is looked at: no hint of
    # what a valid submission would be.
    assert api.anonymous.post("/batch/predict", json={"colour": 1}).status_code == 401


def test_the_token_file_is_read_again_when_it_changes(api: Api) -> None:
    extra = new_token("rotated")
    try:
        write_token_file(api.token_file, [*TOKEN_LINES, f"read {extra} rotated-in"])
        _eventually(lambda: api.anonymous.get("/batches", headers=_bearer(extra)).status_code, 200)
        # Revoked by removing its line: refused again without a restart.
        write_token_file(api.token_file, TOKEN_LINES)
        _eventually(lambda: api.anonymous.get("/batches", headers=_bearer(extra)).status_code, 401)
        # A file broken by a typo accepts none of its tokens (fail closed) ...
        write_token_file(api.token_file, [*TOKEN_LINES, "admin oops"])
        _eventually(lambda: api.reader.get("/batches").status_code, 401)
        assert "line 4" in api.server.log and "until it is fixed" in api.server.log
    finally:
        write_token_file(api.token_file, TOKEN_LINES)
    # ... until it is fixed.
    _eventually(lambda: api.reader.get("/batches").status_code, 200)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _eventually(probe, expected: int, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (got := probe()) != expected:
        assert time.monotonic() < deadline, f"still {got}, not {expected}"
        time.sleep(0.2)


# --------------------------------------------------------------------------- the browser


def _login(api: Api, token: str, next_url: str = "/", **headers: str) -> httpx2.Response:
    return api.anonymous.post(
        "/login",
        data={"token": token, "next": next_url},
        headers={"Origin": api.server.base, **headers},
    )


def test_the_status_page_asks_for_the_token_once_then_a_session_cookie_reads(api: Api) -> None:
    report = "/reports/demo/2026-11-02/report.html"
    browser = api.server.client(follow_redirects=False)
    with browser:
        # Not logged in: the page and the report answer with the login form.
        for path in ("/", report):
            form = browser.get(path)
            assert form.status_code == 401 and form.headers["content-type"].startswith("text/html")
            assert "<form method='post' action='/login'>" in form.text
            assert f"name='next' value='{path}'" in form.text
        wrong = browser.post("/login", data={"token": "nope", "next": report})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "set-cookie" not in wrong.headers

        logged_in = browser.post("/login", data={"token": READER, "next": report})
        assert logged_in.status_code == 303
        assert logged_in.headers["location"] == report
        cookie = logged_in.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower()
        assert READER not in cookie  # a signed session, not the token itself

        page = browser.get("/")
        assert page.status_code == 200
        assert f'data-batch-id="{batch_id_for("demo", "2026-11-02")}"' in page.text
        assert "<form method='post' action='/logout'>" in page.text
        assert browser.get(report).status_code == 200
        assert browser.get("/batches").status_code == 200  # links from the page work too
        # The cookie only reads: a change needs the header, which other sites cannot send.
        assert browser.post("/batch/predict", json={}).status_code == 401

        logged_out = browser.post("/logout")
        assert logged_out.status_code == 303
        assert browser.get("/").status_code == 401


def test_an_operator_session_cannot_submit_and_forged_sessions_are_refused(api: Api) -> None:
    with api.server.client(follow_redirects=False) as browser:
        assert browser.post("/login", data={"token": OPERATOR}).status_code == 303
        name, value = next(iter(browser.cookies.items()))
        submit = browser.post("/batch/predict", json={"dataset": "demo", "partition": "2026-11-08"})
        assert submit.status_code == 401
        expires = int(value.split(".")[1])
        forged = {
            "tampered signature": value[:-1] + ("0" if value[-1] != "0" else "1"),
            "longer life": value.replace(f".{expires}.", f".{expires + 10**6}.", 1),
            "expired": "v1.1000000000." + value.split(".", 2)[2],
            "garbage": "v1." + "9" * 5000,
        }
        for what, bad in forged.items():
            browser.cookies.clear()
            browser.cookies.set(name, bad)
            assert browser.get("/").status_code == 401, what
            assert browser.get("/batches").status_code == 401, what


def test_a_login_from_another_site_is_refused_and_never_redirects_elsewhere(api: Api) -> None:
    cross = _login(api, READER, Origin="http://evil.example")
    assert cross.status_code == 403 and "set-cookie" not in cross.headers
    assert _login(api, READER, Origin="null").status_code == 403  # a sandboxed or file page
    for elsewhere in ("//evil.example/", "https://evil.example/", "/\\evil.example", "x"):
        response = _login(api, READER, elsewhere)
        assert response.status_code == 303 and response.headers["location"] == "/", elsewhere
    assert (
        api.anonymous.post(
            "/login", json={"token": READER}, headers={"Origin": api.server.base}
        ).status_code
        == 415
    )


# --------------------------------------------------------------------------- request limits


def _timed(call):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_long_targets_big_bodies_and_big_fields_are_refused_fast(api: Api) -> None:
    refusals = {
        414: [
            lambda: api.client.get("/batch/" + "a" * 10_000),
            lambda: api.client.get("/batches", params={"dataset": "d" * 50_000}),
            lambda: api.anonymous.get("/" + "x" * 60_000),
        ],
        413: [
            lambda: api.client.post("/batch/predict", content=b"{" + b" " * 1_000_000 + b"}"),
            # Chunked, with no Content-Length: counted as it arrives.
            lambda: api.client.post("/batch/predict", content=iter([b"x" * 8192] * 100)),
        ],
        422: [
            lambda: api.client.post(
                "/batch/predict", json={"dataset": "demo", "partition": "2" * 60_000}
            ),
            lambda: api.client.post(
                "/batch/predict",
                json={"dataset": "demo", "partition": "2026-11-01", "path": "a/" * 30_000},
            ),
            lambda: api.client.post(
                "/batch/predict", json={"dataset": "d" * 60_000, "partition": "2026-11-01"}
            ),
            lambda: api.client.post(
                "/batch/predict", json={"dataset": "demo", "partition": "2026-11-01", "path": "\0"}
            ),
            lambda: api.client.get("/batches", params={"offset": "99999999999999999999"}),
            lambda: api.client.get("/batches", params={"limit": "9" * 4000}),
            lambda: api.client.get("/batch/" + "b" * 1000),
        ],
    }
    for status, calls in refusals.items():
        for index, call in enumerate(calls):
            response, took = _timed(call)
            assert response.status_code == status, (status, index, response.text[:300])
            assert took < 3, (status, index, took)
            assert len(response.content) < 1000, (status, index)  # no echo of the input


def test_a_body_announced_too_big_is_refused_unread(api: Api) -> None:
    port = api.settings.reporting.api_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /batch/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + OPERATOR.encode() + b"\r\n"
            b"Content-Length: 50000000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert time.monotonic() - started < 2


def test_a_request_head_beyond_every_limit_is_cut_off_at_once(api: Api) -> None:
    # 10 MB of URL: the HTTP parser stops at its limit (64 KB past max_url_bytes) and
    # answers without reading, let alone keeping, the rest.
    port = api.settings.reporting.api_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        try:
            sock.sendall(b"GET /batch/" + b"a" * 10_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            pass  # closed while we were still sending: that is the point
        answer = sock.recv(4096)
        assert time.monotonic() - started < 5
    assert answer == b"" or answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 414")), answer[:200]
    assert api.client.get("/healthz").status_code == 200


def test_errors_show_no_server_path_and_only_a_short_piece_of_the_input(api: Api) -> None:
    home, lake = str(api.settings.home), str(api.settings.lake)
    responses = [
        api.client.post(
            "/batch/predict", json={"dataset": "demo", "partition": "2026-11-01", "path": path}
        )
        for path in ("../../etc", "/etc/passwd", lake + "/../x", "a" * 1024 + "/.." * 2)
    ]
    responses += [
        api.client.post("/batch/predict", json={"dataset": "n" * 120, "partition": "2026-11-01"}),
        api.client.post(
            "/batch/predict", json={"dataset": "demo", "partition": "2026-11-01", "k" * 9000: 1}
        ),
        api.client.get("/batch/" + "z" * 128),
        api.client.get("/reports/demo/2026-12-24/report.html"),
        api.client.get("/batches", params={"from": "2026-13-45"}),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, response.text
        assert home not in response.text and lake not in response.text, response.text
        assert "/etc" not in response.text.replace("../../etc", ""), response.text
        assert len(response.content) < 1000, response.text[:300]
    outside = responses[0].json()["detail"][0]
    assert outside["loc"] == ["body", "path"] and "outside the lake root" in outside["msg"]


# ------------------------------------------------------------------------ security headers

HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def test_every_response_carries_the_security_headers(api: Api) -> None:
    responses = {
        "page": api.client.get("/"),
        "login form": api.anonymous.get("/"),
        "report": api.client.get("/reports/demo/2026-11-02/report.html"),
        "json": api.client.get("/batches"),
        "openapi": api.anonymous.get("/openapi.json"),
        "docs": api.anonymous.get("/docs"),
        "401": api.anonymous.get("/batches"),
        "403": api.reader.post("/batch/predict", json={}),
        "404": api.client.get("/no/such/route"),
        "413": api.client.post("/batch/predict", content=b"x" * 100_000),
        "414": api.client.get("/" + "x" * 5000),
        "422": api.client.post("/batch/predict", json={}),
    }
    for what, response in responses.items():
        for name, value in HEADERS.items():
            assert response.headers.get(name) == value, (what, name)
        policy = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy, what
        assert "script-src" not in policy or what == "docs", what
        assert "server" not in response.headers, what  # no software version to aim at


def test_the_docs_page_runs_only_its_own_inline_script(api: Api) -> None:
    docs = api.anonymous.get("/docs")
    scripts = re.findall(r"<script>(.*?)</script>", docs.text, flags=re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    policy = docs.headers["content-security-policy"]
    assert f"'sha256-{digest}'" in policy and "'unsafe-inline'" not in policy.split(";")[1]


def test_the_api_logs_who_submitted_and_never_a_token(api: Api) -> None:
    assert (
        api.client.post(
            "/batch/predict", json={"dataset": "demo", "partition": "2026-11-09"}
        ).status_code
        == 202
    )
    _eventually(lambda: int("ci-pipeline submitted demo 2026-11-09" in api.server.log), 1)
    log = api.server.log
    assert "1 operator and 1 read tokens" in log and "reads need a token" in log
    for token in (OPERATOR, READER):
        assert token not in log


# ------------------------------------------------------------- configured and generated


def test_without_a_configured_token_one_is_generated_once_and_kept(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings, config_file = live_settings(
        tmp_path, kafka_bootstrap, LANDFALL_REPORTING__API_PORT=str(free_port())
    )
    assert not settings.api.tokens and settings.api.token_file is None
    ensure_all_topics(settings)
    token_file = tmp_path / GENERATED_TOKEN_FILE
    tokens = []
    for _start in range(2):
        server = start_api(settings, config_file, tmp_path / "api.log")
        try:
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            printed = subprocess.run(
                [sys.executable, "-m", "landfall", "api-token", "--config", str(config_file)],
                capture_output=True,
                text=True,
                check=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("LANDFALL_")},
            ).stdout.strip()
            tokens.append(printed)
            with server.client(printed) as client:
                assert client.get("/batches").status_code == 200
            with server.client() as anonymous:
                assert anonymous.get("/batches").status_code == 401
                assert anonymous.get("/").status_code == 401
        finally:
            server.stop()
    assert tokens[0] == tokens[1] and len(tokens[0]) >= 40
    log = (tmp_path / "api.log").read_text()
    # Where the token is, as Jupyter says it; never the token itself.
    assert f"in {token_file}" in log and "landfall api-token" in log
    assert tokens[0] not in log


def test_configured_tokens_and_reads_opened_by_the_setting(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    operator = new_token("configured")
    settings, _ = live_settings(
        tmp_path, kafka_bootstrap, LANDFALL_REPORTING__API_PORT=str(free_port())
    )
    settings = settings.model_copy(
        update={
            "api": ApiSettings(
                tokens=[ApiToken(token=operator, role="operator", name="release-bot")],  # type: ignore[arg-type]
                public_reads=True,
            )
        }
    )
    # The settings print the token masked; only the file written for the process,
    # mode 600, holds it in clear.
    assert operator not in repr(settings) and operator not in str(settings.model_dump(mode="json"))
    config_file = write_config(settings, tmp_path / "api.yaml")
    ensure_all_topics(settings)
    server = start_api(settings, config_file, tmp_path / "api.log")
    try:
        with server.client() as anonymous, server.client(operator) as client:
            assert anonymous.get("/batches").status_code == 200
            assert anonymous.get("/").status_code == 200  # the page opens without a login
            assert anonymous.post("/batch/predict", json={}).status_code == 401
            # Accepted as an operator: what is left is the body's fault (422), not the token's.
            assert client.post("/batch/predict", json={"dataset": "x"}).status_code == 422
            # With reads open, a token that is sent must still be a valid one.
            assert anonymous.get("/batches", headers=_bearer(operator + "x")).status_code == 401
        assert not (tmp_path / GENERATED_TOKEN_FILE).exists()
        assert "reads open to all" in server.log and operator not in server.log
    finally:
        server.stop()
