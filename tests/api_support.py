"""The job API as a real process for tests: tokens, a started server, clients per role."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import yaml

from landfall.config import REVEAL_SECRETS, Settings
from landfall.ingress import batch_id_for
from landfall.lake import Lake
from landfall.results import RunKey, RunRecorder
from services.reporter.html import render_report_html
from tests.reporting_support import LandfallProcess, finished_report


def new_token(label: str) -> str:
    """A fresh random token; the label only makes a failing test easier to read."""
    return f"{label}-{secrets.token_urlsafe(24)}"


def write_token_file(path: Path, lines: list[str]) -> Path:
    """A token file of ``ROLE TOKEN [NAME]`` lines, mode 600 as an operator would keep it."""
    path.write_text("\n".join(["# tokens of the test API", *lines]) + "\n")
    path.chmod(0o600)
    return path


def api_settings(home: Path, bootstrap: str, token_lines: list[str]) -> tuple[Settings, Path]:
    """Settings (and their file) for an API of its own under ``home``, with these tokens.

    Its topics exist, and it listens on a free port.
    """
    from landfall.ports import free_port
    from landfall.serve import ensure_all_topics
    from tests.reporting_support import live_settings

    token_file = write_token_file(home / "tokens", token_lines)
    settings, config_file = live_settings(
        home,
        bootstrap,
        LANDFALL_REPORTING__API_PORT=str(free_port()),
        LANDFALL_API_TOKEN_FILE=str(token_file),
    )
    ensure_all_topics(settings)
    return settings, config_file


def write_config(settings: Settings, path: Path) -> Path:
    """The settings as a config file, secrets (API tokens) in clear, mode 600."""
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", context=REVEAL_SECRETS)))
    return path


@dataclass
class ApiServer:
    """``landfall serve api`` running on ``base``."""

    process: LandfallProcess
    base: str

    def client(self, token: str | None = None, **options: object) -> httpx2.Client:
        """A client that sends ``token`` as a bearer token (none: anonymous)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx2.Client(base_url=self.base, headers=headers, timeout=30, **options)  # type: ignore[arg-type]

    @property
    def log(self) -> str:
        return self.process.log.read_text(errors="replace")

    def stop(self) -> int:
        return self.process.stop()


def start_api(settings: Settings, config_file: Path, log: Path, timeout: float = 120) -> ApiServer:
    """Start the API process and wait until it answers (the OpenAPI needs no token)."""
    process = LandfallProcess("api", config_file, log)
    base = f"http://127.0.0.1:{settings.reporting.api_port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            process.check_alive()
            try:
                if httpx2.get(f"{base}/healthz", timeout=2).status_code == 200:
                    return ApiServer(process, base)
            except httpx2.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
    except BaseException:
        process.stop()
        raise


# The API under test with two finished batches, as test_api*.py share it (conftest.py).

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


def seed_api_history(settings: Settings) -> None:
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


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def eventually(probe, expected: int, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (got := probe()) != expected:
        assert time.monotonic() < deadline, f"still {got}, not {expected}"
        time.sleep(0.2)


def login(api: Api, token: str, next_url: str = "/", **headers: str) -> httpx2.Response:
    return api.anonymous.post(
        "/login",
        data={"token": token, "next": next_url},
        headers={"Origin": api.server.base, **headers},
    )
