"""The job API as a real process for tests: tokens, a started server, clients per role."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2
import yaml

from landfall.config import REVEAL_SECRETS, Settings
from tests.reporting_support import LandfallProcess


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
