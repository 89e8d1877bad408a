"""Secrets stay in their settings: secret types, the one redaction path, private files.

The integration test (tests/integration/test_planted_secrets.py) plants passwords in a
running stack and searches everything it wrote; these are the pieces, one by one.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from landfall.config import REVEAL_SECRETS, Settings, load_settings
from landfall.demo import DEMO_CONFIG
from landfall.errors import ConfigError, RetryableError
from landfall.kafka_clients import event_codec
from landfall.ports import free_port
from landfall.redact import (
    MASK,
    install_redaction,
    redact,
    redact_tree,
    register_secrets,
    settings_secrets,
    write_private,
)
from landfall.results import open_results_db


def _planted(label: str) -> str:
    # Distinct and unguessable, so finding one anywhere can only mean it leaked.
    return f"{label}{uuid.uuid4().hex}"


def _secret_environ(tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Overrides that put a distinct password in every credential-bearing setting."""
    pw = {name: _planted(name) for name in ("Db", "Track", "Reg", "Schema", "Sasl")}
    environ = {
        "LANDFALL_HOME": str(tmp_path),
        "LANDFALL_RESULTS_DB__URL": f"postgresql+psycopg://landfall:{pw['Db']}@db:5432/results",
        "LANDFALL_MLFLOW__TRACKING_URI": f"http://alice:{pw['Track']}@mlflow:5000",
        "LANDFALL_MLFLOW__REGISTRY_URI": f"https://bob:{pw['Reg']}@registry.example/mlflow",
        "LANDFALL_KAFKA__SCHEMA_REGISTRY_URL": f"http://carol:{pw['Schema']}@schemas:8081",
        "LANDFALL_KAFKA_BOOTSTRAP": "broker:9092",
        "LANDFALL_KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT",
        "LANDFALL_KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
        "LANDFALL_KAFKA__SECURITY__USERNAME": "pipeline",
        "LANDFALL_KAFKA__SECURITY__PASSWORD": pw["Sasl"],
    }
    return environ, pw


def test_every_credential_bearing_setting_prints_masked_and_connects_in_clear(
    tmp_path: Path,
) -> None:
    environ, pw = _secret_environ(tmp_path)
    settings = load_settings(DEMO_CONFIG, environ=environ)
    printed = [
        str(settings),
        repr(settings),
        str(settings.model_dump()),
        yaml.safe_dump(settings.model_dump(mode="json")),
    ]
    for text in printed:
        assert not [name for name, secret in pw.items() if secret in text], text[:300]
    assert settings.mlflow.tracking_uri is not None
    assert str(settings.mlflow.tracking_uri) == MASK
    # The code that connects reads them in clear.
    assert settings.results_db_url == environ["LANDFALL_RESULTS_DB__URL"]
    assert settings.tracking_uri == environ["LANDFALL_MLFLOW__TRACKING_URI"]
    assert settings.registry_uri == environ["LANDFALL_MLFLOW__REGISTRY_URI"]
    assert settings.schema_registry_url == environ["LANDFALL_KAFKA__SCHEMA_REGISTRY_URL"]
    # The dump `landfall up` hands its services keeps them all, and loads back the same.
    revealed = yaml.safe_dump(settings.model_dump(mode="json", context=REVEAL_SECRETS))
    assert all(secret in revealed for secret in pw.values())
    config_file = tmp_path / "stack-config.yaml"
    config_file.write_text(revealed)
    assert load_settings(config_file, environ={}) == settings


def test_the_registry_uri_defaults_to_the_tracking_uri_in_clear(tmp_path: Path) -> None:
    uri = f"http://alice:{_planted('Track')}@mlflow:5000"
    settings = load_settings(
        DEMO_CONFIG,
        environ={"LANDFALL_HOME": str(tmp_path), "LANDFALL_MLFLOW__TRACKING_URI": uri},
    )
    assert settings.registry_uri == settings.tracking_uri == uri
    assert settings.schema_registry_url is None


def test_a_secret_from_the_environment_stays_the_string_it_is(tmp_path: Path) -> None:
    # YAML would read 0123 as the number 83 (octal) or 123; a password is text.
    settings = load_settings(
        DEMO_CONFIG,
        environ={
            "LANDFALL_HOME": str(tmp_path),
            "LANDFALL_KAFKA__SCHEMA_REGISTRY_URL": "http://schemas:8081",
            "LANDFALL_KAFKA__SCHEMA_REGISTRY_AUTH__USERNAME": "carol",
            "LANDFALL_KAFKA__SCHEMA_REGISTRY_AUTH__PASSWORD": "0123",
        },
    )
    auth = settings.kafka.schema_registry_auth
    assert auth is not None and auth.password.get_secret_value() == "0123"


def test_schema_registry_credentials_reach_its_client(tmp_path: Path) -> None:
    password = _planted("Schema")
    settings = load_settings(
        DEMO_CONFIG,
        environ={
            "LANDFALL_HOME": str(tmp_path),
            # A URL of its own: codecs share one client per URL and configuration.
            "LANDFALL_KAFKA__SCHEMA_REGISTRY_URL": f"http://schemas-{uuid.uuid4().hex[:6]}:8081",
            "LANDFALL_KAFKA__SCHEMA_REGISTRY_AUTH__USERNAME": "carol",
            "LANDFALL_KAFKA__SCHEMA_REGISTRY_AUTH__PASSWORD": password,
        },
    )
    assert password not in yaml.safe_dump(settings.model_dump(mode="json"))
    codec = event_codec(settings)
    # confluent-kafka's client sends these as HTTP basic credentials.
    assert codec._registry.client._rest_client.auth == ("carol", password)
    plain = settings.kafka.model_copy(
        update={"schema_registry_url": None, "schema_registry_auth": None}
    )
    assert event_codec(settings.model_copy(update={"kafka": plain}))._registry is None


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        (
            {"LANDFALL_KAFKA__SCHEMA_REGISTRY_AUTH__USERNAME": "carol"},
            "kafka.schema_registry_url is not",
        ),
        (
            {
                "LANDFALL_KAFKA__SCHEMA_REGISTRY_URL": "http://carol:{pw}@schemas:8081",
                "LANDFALL_KAFKA__SCHEMA_REGISTRY_AUTH__USERNAME": "carol",
            },
            "give the credentials once",
        ),
    ],
)
def test_schema_registry_credentials_are_given_once(
    tmp_path: Path, environ: dict[str, str], problem: str
) -> None:
    password = _planted("Schema")
    overrides = {k: v.format(pw=password) for k, v in environ.items()}
    overrides["LANDFALL_KAFKA__SCHEMA_REGISTRY_AUTH__PASSWORD"] = password
    with pytest.raises(ConfigError, match=problem) as caught:
        load_settings(DEMO_CONFIG, environ={"LANDFALL_HOME": str(tmp_path), **overrides})
    assert password not in str(caught.value)


def test_loading_settings_registers_their_secrets_for_every_message(tmp_path: Path) -> None:
    environ, pw = _secret_environ(tmp_path)
    load_settings(DEMO_CONFIG, environ=environ)
    # Bare, as a driver or a client library might quote one, and inside URLs.
    text = (
        f"login failed with {pw['Sasl']}; token {pw['Db']} refused; "
        f"GET https://bob:{pw['Reg']}@registry.example/mlflow/api failed"
    )
    masked = redact(text)
    assert not [name for name, secret in pw.items() if secret in masked]
    assert masked == (
        f"login failed with {MASK}; token {MASK} refused; "
        f"GET https://bob:{MASK}@registry.example/mlflow/api failed"
    )
    assert redact_tree({"reason": text, "details": {"uri": [text]}, "rows": 3}) == {
        "reason": masked,
        "details": {"uri": [masked]},
        "rows": 3,
    }


def test_a_weak_secret_is_masked_in_urls_only_and_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # compose's results DB: the password is also the user and database name.
    url = "postgresql+psycopg://landfall:landfall@postgres:5432/landfall"
    settings = load_settings(
        DEMO_CONFIG,
        environ={"LANDFALL_HOME": str(tmp_path / "weak"), "LANDFALL_RESULTS_DB__URL": url},
    )
    searched, weak = settings_secrets(settings)
    assert "landfall" not in searched and weak == ["results_db.url"]
    # Masking the bare word would mask topic names and loggers in every line.
    assert redact(f"{url} on topic landfall.batch-ready") == (
        f"postgresql+psycopg://landfall:{MASK}@postgres:5432/landfall on topic landfall.batch-ready"
    )
    with caplog.at_level(logging.WARNING, logger="landfall.redact"):
        load_settings(
            DEMO_CONFIG,
            environ={
                "LANDFALL_HOME": str(tmp_path / "weak2"),
                "LANDFALL_MLFLOW__TRACKING_URI": "http://u:abc@mlflow:5000",
            },
        )
    assert "mlflow.tracking_uri" in caplog.text and "abc" not in caplog.text


def test_secrets_under_secret_keys_of_free_form_settings_are_collected() -> None:
    secret = _planted("S3")
    settings = Settings.model_validate(
        {
            "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": secret}},
            "telemetry": {"otlp_endpoint": "http://u:OtlpPw99@jaeger:4318/v1/traces?token=Tk42x"},
        }
    )
    searched, _ = settings_secrets(settings)
    assert {secret, "OtlpPw99", "Tk42x"} <= set(searched)


def test_every_log_record_and_traceback_is_redacted(tmp_path: Path) -> None:
    secret = _planted("Logged")
    register_secrets([secret])
    install_redaction()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.redaction.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting to %s with %s", "http://u:pw@h/", secret)
        try:
            raise RuntimeError(f"refused {secret}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    written = out.getvalue()
    assert secret not in written
    assert f"connecting to http://u:{MASK}@h/ with {MASK}" in written
    assert f"RuntimeError: refused {MASK}" in written


def test_an_uncaught_exception_is_printed_redacted(tmp_path: Path) -> None:
    environ, pw = _secret_environ(tmp_path)
    # As a CLI command starts: settings from the environment, then a crash in a worker
    # thread and one in the main thread.
    code = f"""
import threading
from landfall.cli_common import cli_settings
cli_settings(None)
def work():
    raise ValueError({pw["Db"]!r})
thread = threading.Thread(target=work)
thread.start()
thread.join()
raise RuntimeError("mlflow at http://alice:{pw["Track"]}@mlflow:5000 and {pw["Sasl"]}")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDFALL_")} | environ
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Exception in thread" in done.stderr and "ValueError" in done.stderr
    assert f"RuntimeError: mlflow at http://alice:{MASK}@mlflow:5000 and {MASK}" in done.stderr
    assert not [name for name, secret in pw.items() if secret in done.stderr], done.stderr


def test_spans_leave_the_process_redacted(tmp_path: Path) -> None:
    from landfall.telemetry import _JsonLinesExporter, _Redacting

    secret = _planted("Span")
    register_secrets([secret])
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Redacting(_JsonLinesExporter(path))))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(f"stage {secret}") as span:
        span.set_attribute("uri", f"http://u:{secret}@h")
        span.set_attribute("uris", [f"http://u:pw@h/{secret}"])
        span.add_event("retry", {"error": f"refused {secret}"})
        span.record_exception(RuntimeError(f"failed with {secret}"))
        span.set_status(Status(StatusCode.ERROR, f"gave up: {secret}"))
    provider.shutdown()
    written = path.read_text()
    assert written.count(MASK) >= 6
    assert secret not in written


def test_a_private_file_is_created_for_its_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "stack-config.yaml"
    path.write_text("old")
    path.chmod(0o644)
    previous = os.umask(0)  # no umask to narrow a careless mode
    try:
        write_private(path, "password: x\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "password: x\n"
    assert [p.name for p in tmp_path.iterdir()] == ["stack-config.yaml"]  # no temporary left


def test_a_results_db_url_whose_driver_cannot_load_is_a_masked_config_error() -> None:
    password = _planted("Db")
    with pytest.raises(ConfigError) as caught:
        open_results_db(f"nosuchdialect+nodriver://landfall:{password}@db/results")
    assert "results_db.url" in str(caught.value)
    assert password not in str(caught.value)


def test_an_unreachable_results_db_fails_retryably_without_its_password() -> None:
    password = _planted("Db")
    with pytest.raises(RetryableError) as caught:
        open_results_db(f"postgresql+psycopg://landfall:{password}@127.0.0.1:{free_port()}/results")
    assert password not in str(caught.value)
    assert "unusable" in str(caught.value)


def test_masking_url_passwords_stays_linear_on_hostile_text() -> None:
    """A long run of scheme characters once cost quadratic time (a megabyte: minutes)."""
    import time

    from landfall.redact import mask_url_credentials

    started = time.monotonic()
    for text in ("p" * 1_000_000, "http://u:" + "x" * 1_000_000, "a://" * 250_000):
        mask_url_credentials(text)
    assert time.monotonic() - started < 5
