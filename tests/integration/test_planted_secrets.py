"""No secret leaves its setting: planted passwords, failing components, everything searched.

A distinct password goes into every credential-bearing setting: the Kafka SASL login
(a real SCRAM user of a broker of this test), the results database URL (a real
PostgreSQL, which lets it in), the MLflow tracking and registry URIs (user:password@ a
port nobody listens on, so the predictor's model lookup fails), the schema registry URL
and its basic-auth password (given to `landfall publish`, which then fails), and a job
API token. Then each component fails: the predictor on the unreachable model registry,
the reporter on a run whose predictions are gone, `landfall publish` on the unreachable
schema registry, `landfall model register` on the unreachable tracking server, and the
predictor dead-letters a malformed message. The reporter records the failures (events,
report files, the results database, the API).

Then everything landfall produced is searched for each password: every record of every
topic (dead letters and internal topics included), every file under home (service logs,
traces, reports, the lake, the broker's own log segments), every row of the results
database, the CLI's output and the API's answers. The control: the configuration files
written on purpose to hold them (mode 600) are the only places each password is found,
and the failures they caused are there, masked (``bob:**********@``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from sqlalchemy import MetaData, create_engine, select

from landfall.broker import LocalKafka, broker_dir
from landfall.config import ENV_PREFIX, REVEAL_SECRETS, Settings
from landfall.contracts import EventType, partition_key
from landfall.dead_letters import DEAD_LETTER_REASON
from landfall.events import EventWatcher, featurized_event
from landfall.kafka_clients import event_codec, kafka_client_config
from landfall.ports import free_port
from landfall.redact import MASK, write_private
from landfall.stack import LocalStack
from tests.conftest import settings_for
from tests.postgres import create_database, postgres_server
from tests.reporting_support import write_run

__all__ = ["postgres_server"]  # the fixture, imported for this module

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

PIPELINE_USER = "pipeline"
SCORED_PARTITION = "2026-11-05"
REPORTED_PARTITION = "2026-11-06"
TIMEOUT = 240
GARBAGE = b"\x00garbage that is no event"


def _planted(label: str) -> str:
    # Distinct and unguessable: found anywhere, it can only have been copied there.
    return f"Planted{label}{uuid.uuid4().hex}"


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("planted")


@pytest.fixture
def passwords() -> dict[str, str]:
    labels = ("Sasl", "ResultsDb", "Tracking", "Registry", "SchemaUrl", "SchemaAuth", "ApiToken")
    return {label: _planted(label) for label in labels}


@pytest.fixture
def sasl_broker(home: Path, passwords: dict[str, str]) -> Iterator[str]:
    """Apache Kafka with a SASL_PLAINTEXT listener and one SCRAM user; its log under home.

    Under home, so the search of every file there reads every topic's segments too.
    """
    port = free_port()
    broker = LocalKafka(
        broker_dir(home),
        port=free_port(),
        heap_mb=384,
        listeners={"SASL": ("SASL_PLAINTEXT", port)},
        server_properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        },
        # Kafka's storage tool creates the user (a salted hash, never the password).
        format_args=(
            "--add-scram",
            f"SCRAM-SHA-512=[name={PIPELINE_USER},password={passwords['Sasl']}]",
        ),
    ).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        broker.stop()


def _environ(
    bootstrap: str, results_db: str, passwords: dict[str, str], dead_port: int
) -> dict[str, str]:
    """Every credential-bearing setting with its planted password, as a user sets them."""
    api_tokens = [{"token": passwords["ApiToken"], "role": "operator", "name": "auditor"}]
    return {
        f"{ENV_PREFIX}KAFKA_BOOTSTRAP": bootstrap,
        f"{ENV_PREFIX}KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT",
        f"{ENV_PREFIX}KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
        f"{ENV_PREFIX}KAFKA__SECURITY__USERNAME": PIPELINE_USER,
        f"{ENV_PREFIX}KAFKA__SECURITY__PASSWORD": passwords["Sasl"],
        # PostgreSQL trusts local logins here: the password travels and is let in.
        f"{ENV_PREFIX}RESULTS_DB__URL": results_db.replace(
            "://landfall@", f"://landfall:{passwords['ResultsDb']}@", 1
        ),
        f"{ENV_PREFIX}MLFLOW__TRACKING_URI": (
            f"http://alice:{passwords['Tracking']}@127.0.0.1:{dead_port}"
        ),
        f"{ENV_PREFIX}MLFLOW__REGISTRY_URI": (
            f"http://bob:{passwords['Registry']}@127.0.0.1:{dead_port}"
        ),
        f"{ENV_PREFIX}API__TOKENS": json.dumps(api_tokens),
        # One attempt: the registry is not coming back, and the test has no time to wait.
        f"{ENV_PREFIX}RUNNER__MAX_ATTEMPTS": "1",
        f"{ENV_PREFIX}TELEMETRY__METRICS_PORT": "0",
        f"{ENV_PREFIX}REPORTING__API_PORT": "0",
    }


def _produce(settings: Settings, topic: str, value: bytes, key: bytes | None = None) -> None:
    producer = Producer({**kafka_client_config(settings), "acks": "all"})
    producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def _publish(settings: Settings, event_type: EventType, record: dict[str, Any], topic: str) -> None:
    value = event_codec(settings).encode(event_type, record, topic=topic)
    _produce(settings, topic, value, partition_key(record))


def _private_config(path: Path, settings: Settings) -> Path:
    """``settings`` in a file as `landfall up` writes one: secrets in clear, mode 600."""
    write_private(path, yaml.safe_dump(settings.model_dump(mode="json", context=REVEAL_SECRETS)))
    return path


def _start_cli(config_file: Path, *args: str) -> subprocess.Popen[str]:
    """A `landfall` command on ``config_file``, started now and awaited later."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env[f"{ENV_PREFIX}CONFIG"] = str(config_file)
    return subprocess.Popen(
        [sys.executable, "-m", "landfall", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _failed_output(command: subprocess.Popen[str]) -> str:
    """What the command printed; it must have failed."""
    out, err = command.communicate(timeout=120)
    assert command.returncode != 0, out + err
    return out + err


def _with_schema_registry(settings: Settings, url: str, auth: dict[str, str] | None) -> Settings:
    kafka = settings.kafka.model_validate(
        {
            **settings.kafka.model_dump(mode="json", context=REVEAL_SECRETS),
            "schema_registry_url": url,
            "schema_registry_auth": auth,
        }
    )
    return settings.model_copy(update={"kafka": kafka})


def _every_record(settings: Settings) -> list[bytes]:
    """Every key, value and header of every topic, internal ones included, start to end."""
    consumer = Consumer(
        {**kafka_client_config(settings), "group.id": f"audit-{uuid.uuid4().hex[:8]}"}
    )
    try:
        topics = consumer.list_topics(timeout=30).topics
        ends = {}
        for name, metadata in topics.items():
            for number in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, number), timeout=30)
                if high > low:
                    ends[(name, number)] = high
        consumer.assign([TopicPartition(name, number, 0) for name, number in ends])
        found: list[bytes] = []
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            found += [message.key() or b"", message.value() or b""]
            found += [value or b"" for _, value in message.headers() or []]
            where = (message.topic() or "", message.partition() or 0)
            if (message.offset() or 0) + 1 >= ends.get(where, 0):
                ends.pop(where, None)
        assert not ends, f"topics not read to their end: {sorted(ends)[:5]}"
        assert {"__consumer_offsets", settings.kafka.topics.dead_letter.name} <= set(topics)
        return found
    finally:
        consumer.close()


def _database_rows(url: str) -> list[str]:
    """Every row of every table of the results database, as text."""
    engine = create_engine(url)
    try:
        tables = MetaData()
        tables.reflect(engine)
        with engine.connect() as conn:
            return [
                repr(tuple(row))
                for table in tables.sorted_tables
                for row in conn.execute(select(table))
            ]
    finally:
        engine.dispose()


def _api_get(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_no_planted_password_is_anywhere_but_the_files_meant_to_hold_it(
    home: Path,
    passwords: dict[str, str],
    sasl_broker: str,
    postgres_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Long: one scenario against one running stack, told in order.
    dead_port = free_port()  # nobody listens: every registry call is refused
    # Nothing will answer there: MLflow gives up at the first refusal (services and CLI
    # inherit this environment).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = settings_for(
        home, **_environ(sasl_broker, create_database(postgres_server), passwords, dead_port)
    )
    stack = LocalStack(settings, services=("predictor", "reporter", "api"))
    live = stack.start()
    topics = live.kafka.topics
    watcher = EventWatcher(live, [topics.failed.name, topics.reported.name])
    answers: list[str] = []
    # The CLI, while the services start: `landfall publish` meets a schema registry
    # that refuses, with credentials in its URL, then in their own setting; `landfall
    # model register` meets user:password@ a tracking server that refuses (with the
    # stack's own configuration file).
    model = home / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    registry_url = f"http://carol:{passwords['SchemaUrl']}@127.0.0.1:{dead_port}"
    registry_auth = {"username": "carol", "password": passwords["SchemaAuth"]}
    publish_url, publish_auth = (
        _private_config(home / f"{name}.yaml", _with_schema_registry(live, url, auth))
        for name, url, auth in (
            ("cli-registry-url", registry_url, None),
            ("cli-registry-auth", f"http://127.0.0.1:{dead_port}", registry_auth),
        )
    )
    commands = [
        _start_cli(publish_url, "publish", "demo", "2026-11-07"),
        _start_cli(publish_auth, "publish", "demo", "2026-11-07"),
        _start_cli(stack.log_dir / "stack-config.yaml", "model", "register", str(model),
                   "-n", "planted"),
    ]  # fmt: skip
    try:
        # The predictor: its model lookup meets user:password@ a registry that refuses.
        scored = featurized_event(
            live, "demo", SCORED_PARTITION, rows=10, features=["f1"], producer_name="tests/0"
        )
        _publish(live, EventType.BATCH_FEATURIZED, scored, topics.featurized.name)
        # ... and a message it cannot read, for the dead-letter topic.
        _produce(live, topics.featurized.name, GARBAGE)
        # The reporter: a run whose predictions vanished before it could report them.
        gone = write_run(live.lake, REPORTED_PARTITION)
        shutil.rmtree(live.lake / "demo" / "predictions" / REPORTED_PARTITION)
        _publish(live, EventType.BATCH_PREDICTED, gone.predicted, topics.predicted.name)

        def reported(run_id: str) -> dict[str, Any]:
            _, _, record = watcher.wait_for(
                lambda _t, kind, rec: kind is EventType.BATCH_REPORTED and rec["run_id"] == run_id,
                timeout=TIMEOUT,
                alive=stack.check_alive,
            )
            return record

        model_failure = reported(scored["run_id"])
        report_failure = reported(gone.run_id)
        assert (model_failure["status"], model_failure["failed_stage"]) == ("FAILED", "prediction")
        assert (report_failure["status"], report_failure["failed_stage"]) == ("FAILED", "reporting")

        # The job API: the recorded failures, for the planted token only.
        assert stack.api_url is not None
        status, batches = _api_get(f"{stack.api_url}/batches", passwords["ApiToken"])
        assert status == 200, batches[:500]
        refused, denial = _api_get(f"{stack.api_url}/batches", None)
        assert refused in (401, 403), denial[:500]
        answers += [batches, denial]

        cli_outputs = [_failed_output(command) for command in commands]
        answers += cli_outputs

        # The malformed message was set aside as it came, with landfall's reason.
        (letter,) = _dead_letters(live)
        assert letter.value() == GARBAGE
        assert any(key == DEAD_LETTER_REASON for key, _ in letter.headers() or [])
        db_rows = _database_rows(live.results_db_url)
        records = _every_record(live)
    finally:
        watcher.close()
        stack.stop()
        for command in commands:
            if command.poll() is None:
                command.kill()
                command.communicate()

    # Where the passwords were put on purpose: the configuration files (the stack's,
    # and each CLI run's), and nowhere else.
    stack_config = stack.log_dir / "stack-config.yaml"
    cli_url, cli_auth = home / "cli-registry-url.yaml", home / "cli-registry-auth.yaml"
    meant = {
        label: {stack_config, cli_url, cli_auth}
        for label in ("Sasl", "ResultsDb", "Tracking", "Registry", "ApiToken")
    }
    meant["SchemaUrl"], meant["SchemaAuth"] = {cli_url}, {cli_auth}

    written = sorted(path for path in home.rglob("*") if path.is_file())
    leaks, found_where_meant = {}, {}
    for label, password in passwords.items():
        planted = password.encode()
        holders = {path for path in written if planted in path.read_bytes()}
        found_where_meant[label] = holders >= meant[label]
        places = [
            *(str(path.relative_to(home)) for path in sorted(holders - meant[label])),
            *(f"topic record {i}" for i, value in enumerate(records) if planted in value),
            *(f"results DB row {row[:80]}" for row in db_rows if password in row),
            *(
                f"CLI output or API answer {i}"
                for i, text in enumerate(answers)
                if password in text
            ),
        ]
        if places:
            leaks[label] = places
    assert not leaks

    # The controls. The search finds each password where it was put on purpose ...
    assert all(found_where_meant.values()), found_where_meant
    # ... and it reads what it claims to: the dead letter's bytes are among the records.
    assert GARBAGE in records
    # Files that hold secrets are for this user only (the broker's properties may).
    for path in (stack_config, cli_url, cli_auth, broker_dir(home) / "server.properties"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # The failure that carried a password is everywhere it should be, masked: the
    # event, the API, the results database, the report file, the log and the trace.
    masked_registry = f"http://bob:{MASK}@127.0.0.1:{dead_port}"
    assert masked_registry in model_failure["failure_reason"]
    assert masked_registry in batches
    assert any(masked_registry in row for row in db_rows)
    (report_file,) = [p for p in written if p.name == "report.json" and SCORED_PARTITION in str(p)]
    assert masked_registry in report_file.read_text()
    assert masked_registry in (stack.log_dir / "predictor.log").read_text()
    traces = "".join(p.read_text() for p in written if p.suffix == ".jsonl")
    assert masked_registry in traces
    assert f"http://alice:{MASK}@127.0.0.1:{dead_port}" in cli_outputs[2]


def _dead_letters(settings: Settings) -> list[Message]:
    """The records on the dead-letter topic, once there is one."""
    consumer = Consumer(
        {**kafka_client_config(settings), "group.id": f"dead-{uuid.uuid4().hex[:8]}",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([settings.kafka.topics.dead_letter.name])
    found: list[Message] = []
    deadline, quiet_since = time.monotonic() + TIMEOUT, time.monotonic()
    try:
        # Until one came, then a few quiet seconds: a second copy would show.
        while time.monotonic() < deadline and not (found and time.monotonic() - quiet_since > 3):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                found.append(message)
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return found
