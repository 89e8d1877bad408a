"""The command line: its commands exist, and bad input gets a clear error."""

from __future__ import annotations

import os
import subprocess
import sys


def _landfall(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "landfall", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_help_lists_the_commands() -> None:
    result = _landfall("--help")
    assert result.returncode == 0
    for command in ("demo", "up", "serve", "publish", "backfill", "replay", "model"):
        assert f" {command} " in result.stdout


def test_publish_for_an_unknown_dataset_names_the_known_ones() -> None:
    result = _landfall("publish", "nope", "2026-11-01", LANDFALL_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert result.returncode == 2
    assert "unknown dataset 'nope'" in result.stderr and "demo" in result.stderr


def test_serve_an_unknown_service_is_refused() -> None:
    result = _landfall("serve", "scorer", LANDFALL_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert result.returncode == 2
    assert "unknown service 'scorer'" in result.stderr


def test_a_taken_metrics_port_is_a_clear_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _landfall(
            "serve", "validator",
            LANDFALL_KAFKA_BOOTSTRAP="127.0.0.1:1", LANDFALL_TELEMETRY__METRICS_PORT=str(port),
        )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port} (telemetry.metrics_port)" in result.stderr


def test_a_model_version_must_be_a_version_number() -> None:
    result = _landfall(
        "publish", "demo", "2026-11-01", "--model-version", "latest",
        LANDFALL_KAFKA_BOOTSTRAP="127.0.0.1:1",
    )  # fmt: skip
    assert result.returncode == 2
    assert "takes a version number, got 'latest'" in result.stderr
