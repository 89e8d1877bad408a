"""The job API's guards over real HTTP: the browser's session, limits, headers, errors.

The API under test is the one test_api.py uses (tests/integration/conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from landfall.api_tokens import GENERATED_TOKEN_FILE
from landfall.config import ApiSettings, ApiToken
from landfall.ingress import batch_id_for
from landfall.ports import free_port
from landfall.serve import ensure_all_topics
from tests.api_support import (
    OPERATOR,
    READER,
    Api,
    bearer,
    eventually,
    login,
    new_token,
    start_api,
    write_config,
)
from tests.reporting_support import live_settings

pytestmark = [pytest.mark.broker]


# --------------------------------------------------------------------------- the browser


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
    cross = login(api, READER, Origin="http://evil.example")
    assert cross.status_code == 403 and "set-cookie" not in cross.headers
    assert login(api, READER, Origin="null").status_code == 403  # a sandboxed or file page
    for elsewhere in ("//evil.example/", "https://evil.example/", "/\\evil.example", "x"):
        response = login(api, READER, elsewhere)
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
    eventually(lambda: int("ci-pipeline submitted demo 2026-11-09" in api.server.log), 1)
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
            assert anonymous.get("/batches", headers=bearer(operator + "x")).status_code == 401
        assert not (tmp_path / GENERATED_TOKEN_FILE).exists()
        assert "reads open to all" in server.log and operator not in server.log
    finally:
        server.stop()
