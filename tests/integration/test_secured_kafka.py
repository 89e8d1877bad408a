"""A secured Apache Kafka: SASL_SSL with SCRAM-SHA-512 users and ACLs.

One broker for the module, set up the way an operator would with Kafka's own tools:
a CA and a broker certificate made with openssl, SCRAM users created by the storage
tool when the log directory is formatted, ACLs granted with ``AclCommand``. Through
its SASL_SSL listener the pipeline runs end to end (the four services as processes);
a wrong password, a CA that did not sign the broker's certificate, and a user without
ACLs each stop a service at start with one line naming the setting to fix, within
seconds; and the planted password is nowhere the run wrote, nor in any event.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError

from landfall.broker import LocalKafka
from landfall.config import ENV_PREFIX, Settings
from landfall.contracts import EventType
from landfall.demo import write_sample_partition
from landfall.errors import ConfigError
from landfall.events import EventWatcher, publish_data_landed
from landfall.kafka_clients import kafka_client_config, kafka_connection_config
from landfall.lake import Lake
from landfall.ports import free_port
from landfall.results import RunHistory
from landfall.serve import ensure_all_topics
from landfall.stack import LocalStack
from landfall.topics import wait_for_broker
from tests.conftest import settings_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

PIPELINE_USER = "pipeline"
# A user the broker knows, with no ACL at all.
STRANGER = "stranger"
PARTITION = "2026-11-03"
# A refusal must be reported this fast: a service waits up to 60 s for its broker.
REFUSAL_WITHIN_S = 10.0


@dataclass(frozen=True)
class SecuredKafka:
    """The broker, its SASL_SSL address, and what a client needs to reach it."""

    broker: LocalKafka
    bootstrap: str
    ca_file: Path
    other_ca_file: Path
    password: str
    stranger_password: str


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(folder: Path) -> None:
    """A CA, a broker certificate it signed (for 127.0.0.1 and localhost), another CA."""
    folder.mkdir(parents=True)
    for name in ("ca", "other-ca"):
        _openssl(
            folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=landfall {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    (folder / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    # openssl 3 writes the key as PKCS#8, as Kafka's PEM keystore wants it.
    _openssl(
        folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
        "-out", "broker.csr", "-subj", "/CN=localhost",
    )  # fmt: skip
    _openssl(
        folder, "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "broker.crt", "-extfile", "broker.ext",
    )  # fmt: skip
    keystore = folder / "broker-keystore.pem"
    keystore.write_text(
        "".join((folder / name).read_text() for name in ("broker.key", "broker.crt", "ca.pem"))
    )
    keystore.chmod(0o600)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """Apache Kafka with a SASL_SSL listener, two SCRAM users and ACLs for one of them."""
    work = tmp_path_factory.mktemp("secured-kafka")
    tls = work / "tls"
    _certificates(tls)
    # Distinctive, so a search of everything written finds any copy of it.
    password = f"PlantedPw{uuid.uuid4().hex}"
    stranger_password = f"StrangerPw{uuid.uuid4().hex}"
    port = free_port()
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    # Created by Kafka's storage tool as it formats the log directory.
    scram_users = (
        "--add-scram", f"SCRAM-SHA-512=[name={PIPELINE_USER},password={password}]",
        "--add-scram", f"SCRAM-SHA-512=[name={STRANGER},password={stranger_password}]",
    )  # fmt: skip
    broker = LocalKafka(
        work / "kafka",
        port=free_port(),
        heap_mb=384,
        listeners={"SECURED": ("SASL_SSL", port)},
        server_properties={
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls / "broker-keystore.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls / "ca.pem"),
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.secured.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.secured.scram-sha-512.sasl.jaas.config": jaas,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The plaintext listeners (clients on this machine, inter-broker, controller)
            # are ANONYMOUS: super users, so the broker itself and the ACL tool work.
            "super.users": "User:ANONYMOUS;User:admin",
        },
        format_args=scram_users,
    ).start()
    try:
        granted = subprocess.run(
            broker._java_command(
                "org.apache.kafka.tools.AclCommand",
                "--bootstrap-server", broker.bootstrap,
                "--add", "--allow-principal", f"User:{PIPELINE_USER}",
                "--operation", "All", "--topic", "*", "--group", "*",
            ),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert granted.returncode == 0, granted.stderr[-2000:]
        yield SecuredKafka(
            broker=broker,
            bootstrap=f"127.0.0.1:{port}",
            ca_file=tls / "ca.pem",
            other_ca_file=tls / "other-ca.pem",
            password=password,
            stranger_password=stranger_password,
        )
    finally:
        broker.stop()


def _environ(
    secured: SecuredKafka,
    *,
    username: str = PIPELINE_USER,
    password: str | None = None,
    ca_file: Path | None = None,
) -> dict[str, str]:
    """The overrides that point landfall at the secured listener, as a user would set them."""
    return {
        f"{ENV_PREFIX}KAFKA_BOOTSTRAP": secured.bootstrap,
        f"{ENV_PREFIX}KAFKA__SECURITY__PROTOCOL": "SASL_SSL",
        f"{ENV_PREFIX}KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
        f"{ENV_PREFIX}KAFKA__SECURITY__USERNAME": username,
        f"{ENV_PREFIX}KAFKA__SECURITY__PASSWORD": password or secured.password,
        f"{ENV_PREFIX}KAFKA__SECURITY__CA_FILE": str(ca_file or secured.ca_file),
        # Any free port for metrics: nothing here may depend on which are taken.
        f"{ENV_PREFIX}TELEMETRY__METRICS_PORT": "0",
    }


def _start_as_a_service_does(settings: Settings) -> None:
    """What ``landfall serve`` does before its first event: wait for the broker, topics."""
    assert settings.kafka.bootstrap
    wait_for_broker(
        settings.kafka.bootstrap, timeout=60, admin_config=kafka_connection_config(settings)
    )
    ensure_all_topics(settings)


def _refusal(settings: Settings) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        _start_as_a_service_does(settings)
    return str(caught.value), time.monotonic() - started


# ---------------------------------------------------------------- clear refusals


def test_a_wrong_password_is_refused_at_once_naming_the_setting(
    secured: SecuredKafka, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = f"WrongPw{uuid.uuid4().hex}"
    settings = settings_for(tmp_path, **_environ(secured, password=wrong))

    message, elapsed = _refusal(settings)

    assert elapsed < REFUSAL_WITHIN_S
    assert f"refused the SASL login of user '{PIPELINE_USER}'" in message
    assert "kafka.security.username / kafka.security.password" in message
    assert "\n" not in message
    # Neither the message nor anything librdkafka printed holds either password.
    captured = capfd.readouterr()
    for text in (message, captured.out, captured.err):
        assert wrong not in text and secured.password not in text


def test_publishing_with_a_wrong_password_fails_at_once_naming_the_setting(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    # The producer of the CLI's `publish` and of the job API. Its error callback raises
    # when a flush ends; publish_data_landed flushes in one-second steps.
    wrong = f"WrongPw{uuid.uuid4().hex}"
    settings = settings_for(tmp_path, **_environ(secured, password=wrong))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="kafka.security.password") as caught:
        publish_data_landed(settings, "demo", PARTITION)
    assert time.monotonic() - started < REFUSAL_WITHIN_S + 2
    assert f"refused the SASL login of user '{PIPELINE_USER}'" in str(caught.value)
    assert wrong not in str(caught.value)


def test_a_service_started_with_a_wrong_password_exits_with_one_clear_line(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    wrong = f"WrongPw{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(_environ(secured, password=wrong), LANDFALL_HOME=str(tmp_path))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "landfall", "serve", "validator"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "kafka.security.password" in errors[0]
    assert wrong not in done.stdout + done.stderr
    assert _files_holding(tmp_path, wrong.encode()) == []
    # Python's start and imports included; the broker's refusal itself takes a second.
    assert elapsed < 60


def test_a_ca_that_did_not_sign_the_broker_certificate_is_named(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, **_environ(secured, ca_file=secured.other_ca_file))

    message, elapsed = _refusal(settings)

    assert elapsed < REFUSAL_WITHIN_S
    assert message.startswith(f"TLS handshake with Kafka at {secured.bootstrap} failed")
    assert "not trusted" in message
    assert f"{secured.other_ca_file} (kafka.security.ca_file)" in message
    assert secured.password not in message


def test_a_user_without_acls_is_told_which_acl_to_grant(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path, **_environ(secured, username=STRANGER, password=secured.stranger_password)
    )

    message, elapsed = _refusal(settings)

    assert elapsed < REFUSAL_WITHIN_S
    assert f"user '{STRANGER}' (kafka.security.username) is not allowed to" in message
    assert "TOPIC_AUTHORIZATION_FAILED" in message
    assert "grant it an ACL (kafka-acls / AclCommand)" in message
    assert f"--allow-principal User:{STRANGER}" in message
    assert secured.stranger_password not in message


# ---------------------------------------------------------------- end to end


def _raw_messages(settings: Settings, timeout: float = 60) -> list[bytes]:
    """Every key, value and header of every topic the pipeline user can read."""
    consumer = Consumer(
        {
            **kafka_client_config(settings),
            "group.id": f"secured-audit-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        topics = consumer.list_topics(timeout=30).topics
        names = sorted(name for name in topics if not name.startswith("__"))
        pending = {(name, p) for name in names for p in topics[name].partitions}
        consumer.subscribe(names)
        found: list[bytes] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((message.topic(), message.partition()))
                continue
            found += [message.key() or b"", message.value() or b""]
            found += [value or b"" for _, value in message.headers() or []]
        assert not pending, f"topics not read to their end: {sorted(pending)[:5]}"
        return found
    finally:
        consumer.close()


def _files_holding(root: Path, secret: bytes) -> list[Path]:
    return sorted(
        path for path in root.rglob("*") if path.is_file() and secret in path.read_bytes()
    )


def test_the_pipeline_runs_end_to_end_through_sasl_ssl_and_no_password_leaks(
    secured: SecuredKafka, registry_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Long: one scenario against one running stack, told in order.
    home = tmp_path_factory.mktemp("secured-home")
    settings = settings_for(
        home,
        **_environ(secured),
        LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{registry_home / 'mlflow.db'}",
    )
    stack = LocalStack(settings, services=("validator", "featurizer", "predictor", "reporter"))
    live = stack.start()
    watcher: EventWatcher | None = None
    try:
        topics = live.kafka.topics
        watcher = EventWatcher(live, [t.name for t in topics.all() if t is not topics.landed])
        sample = write_sample_partition(Lake(live.lake), PARTITION, rows=400)
        landed = publish_data_landed(live, "demo", PARTITION)
        # And a partition that never landed, published with the CLI as an operator
        # would: its producer reaches the secured listener from the stack's config too.
        config_file = stack.log_dir / "stack-config.yaml"
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env[f"{ENV_PREFIX}CONFIG"] = str(config_file)
        cli = subprocess.run(
            [sys.executable, "-m", "landfall", "publish", "demo", "2026-10-20"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        match = re.search(r"run ([0-9a-f-]{36})", cli.stdout)
        assert cli.returncode == 0 and match, cli.stdout + cli.stderr[-3000:]
        assert secured.password not in cli.stdout + cli.stderr

        def reported(run_id: str) -> dict:
            assert watcher is not None
            _, _, record = watcher.wait_for(
                lambda _t, kind, rec: kind is EventType.BATCH_REPORTED and rec["run_id"] == run_id,
                timeout=420,
                alive=stack.check_alive,
            )
            return record

        succeeded = reported(landed["run_id"])
        assert succeeded["status"] == "SUCCEEDED"
        assert 0 < succeeded["rows_scored"] < sample.rows
        assert reported(match.group(1))["status"] == "FAILED"
        db = RunHistory.open(live.results_db_url)
        try:
            (run,) = db.runs_of(landed["batch_id"])
            assert run["status"] == "SUCCEEDED"
        finally:
            db.close()
        events = _raw_messages(live)
    finally:
        if watcher is not None:
            watcher.close()
        stack.stop()

    planted = secured.password.encode()
    # Every event the run produced (stage events, failures, faust's changelog).
    assert len(events) > 10
    assert not [value for value in events if planted in value]
    # The services' config file must hold the password, for only this user to read.
    config_file = stack.log_dir / "stack-config.yaml"
    assert planted in config_file.read_bytes()
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    # Nothing else the run wrote: logs, lake, reports, results DB, traces, faust data.
    written = [path for path in home.rglob("*") if path.is_file()]
    assert any(path.suffix == ".jsonl" for path in written), "no trace was written"
    assert any(path.suffix == ".log" for path in written), "no service log was written"
    assert _files_holding(home, planted) == [config_file]
