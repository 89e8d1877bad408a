"""The command line: its commands exist, and bad input gets a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
    for command in (
        "demo", "up", "serve", "publish", "backfill", "replay", "reconcile", "gc", "model",
        "dlq", "schemas",
    ):  # fmt: skip
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


def test_a_format_the_validator_cannot_read_is_refused() -> None:
    result = _landfall(
        "publish", "demo", "2026-11-01", "--format", "xls", LANDFALL_KAFKA_BOOTSTRAP="127.0.0.1:1"
    )
    assert result.returncode == 2
    assert "takes one of csv, json, parquet, got 'xls'" in result.stderr


def test_api_token_prints_the_generated_token_and_refuses_when_tokens_are_configured(
    tmp_path: Path,
) -> None:
    first = _landfall("api-token", LANDFALL_HOME=str(tmp_path))
    again = _landfall("api-token", LANDFALL_HOME=str(tmp_path))
    assert first.returncode == 0 and again.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert len(token) >= 40 and again.stdout.strip() == token
    assert token in (tmp_path / "api-token").read_text()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read {'r' * 20}\n")
    configured = _landfall(
        "api-token", LANDFALL_HOME=str(tmp_path), LANDFALL_API_TOKEN_FILE=str(tokens)
    )
    assert configured.returncode == 2
    assert "API tokens are configured" in configured.stderr and "r" * 20 not in configured.stderr


def test_up_with_a_missing_api_token_file_stops_before_starting_anything(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tokens"
    result = _landfall("up", LANDFALL_HOME=str(tmp_path), LANDFALL_API_TOKEN_FILE=str(missing))
    assert result.returncode == 2
    assert f"API token file {missing} does not exist" in result.stderr
    assert not (tmp_path / "kafka").exists() and not (tmp_path / "api-token").exists()


def test_gc_and_reconcile_show_their_plans(tmp_path: Path) -> None:
    home = {"LANDFALL_HOME": str(tmp_path)}
    swept = _landfall("gc", "--dry-run", **home)
    assert swept.returncode == 0, swept.stderr
    assert "would remove 0 old run(s) and 0 abandoned output(s)" in swept.stdout
    unknown = _landfall("reconcile", "nope", "2026-11-01", "2026-11-02", "--dry-run", **home)
    assert unknown.returncode == 2 and "unknown dataset 'nope'" in unknown.stderr
    backwards = _landfall("reconcile", "demo", "2026-11-02", "2026-11-01", "--dry-run", **home)
    assert backwards.returncode == 2 and backwards.stderr.startswith("error:")
    nothing = _landfall("reconcile", "demo", "2026-11-01", "2026-11-02", "--dry-run", **home)
    assert nothing.returncode == 0 and "would re-drive 0 partition(s)" in nothing.stdout
