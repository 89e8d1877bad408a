"""kafka.security: validation, secrets that never print, and what each client receives."""

from __future__ import annotations

import ssl
import traceback
from pathlib import Path

import pytest
import yaml
from confluent_kafka import KafkaError

from landfall.config import REVEAL_SECRETS, Settings, load_settings
from landfall.demo import DEMO_CONFIG
from landfall.errors import ConfigError
from landfall.kafka_clients import (
    RefusalCheck,
    faust_broker_credentials,
    kafka_client_config,
    kafka_connection_config,
    kafka_secrets,
)
from landfall.redact import MASK, redact, redacted, secret_values
from landfall.runner_partitions import runner_consumer_config
from landfall.topics import explain_kafka_error

PASSWORD = "pl4nted-unit-Secret"


def _settings(tmp_path: Path, **security: str) -> Settings:
    environ = {"LANDFALL_HOME": str(tmp_path), "LANDFALL_KAFKA_BOOTSTRAP": "broker:9093"}
    environ.update({f"LANDFALL_KAFKA__SECURITY__{k.upper()}": v for k, v in security.items()})
    return load_settings(DEMO_CONFIG, environ=environ)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    # Not a real certificate: the settings only check that the file exists.
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def _sasl_ssl(tmp_path: Path, ca_file: Path, **extra: str) -> Settings:
    security = {
        "protocol": "sasl_ssl",
        "sasl_mechanism": "scram-sha-512",
        "username": "pipeline",
        "password": PASSWORD,
        "ca_file": str(ca_file),
    }
    return _settings(tmp_path, **{**security, **extra})


def test_the_default_is_plaintext_and_adds_nothing_to_the_clients(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.kafka.security.protocol == "PLAINTEXT"
    assert kafka_client_config(settings) == {"bootstrap.servers": "broker:9093"}
    assert faust_broker_credentials(settings) is None


def test_sasl_ssl_reaches_every_librdkafka_client(tmp_path: Path, ca_file: Path) -> None:
    settings = _sasl_ssl(tmp_path, ca_file)
    config = kafka_client_config(settings)
    # Raises ConfigError from the client's poll when the broker refuses the login.
    assert isinstance(config.pop("error_cb"), RefusalCheck)
    assert config == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "pipeline",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(ca_file),
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert "bootstrap.servers" not in kafka_connection_config(settings)
    assert kafka_secrets(settings) == [PASSWORD]


def test_client_config_still_overrides_the_security_settings(tmp_path: Path, ca_file: Path) -> None:
    settings = _sasl_ssl(
        tmp_path,
        ca_file,
        verify_hostname="false",
    )
    settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={"client_config": {"ssl.endpoint.identification.algorithm": "https"}}
            )
        }
    )
    config = kafka_client_config(settings)
    assert config["ssl.endpoint.identification.algorithm"] == "https"


def test_a_runners_consumer_fetches_briskly_unless_client_config_says_otherwise(
    tmp_path: Path, ca_file: Path
) -> None:
    settings = _sasl_ssl(tmp_path, ca_file)
    config = runner_consumer_config(settings, "landfall-predictor")
    # A short fetch wait keeps the hop after a paused partition resumes short; the
    # security settings and the runner's own commit discipline are all there.
    assert config["fetch.wait.max.ms"] == 100
    assert config["security.protocol"] == "sasl_ssl"
    assert (config["group.id"], config["enable.auto.commit"]) == ("landfall-predictor", False)
    chosen = settings.kafka.model_copy(update={"client_config": {"fetch.wait.max.ms": "500"}})
    config = runner_consumer_config(settings.model_copy(update={"kafka": chosen}), "g")
    assert config["fetch.wait.max.ms"] == "500"


def test_a_client_certificate_and_an_encrypted_key(tmp_path: Path, ca_file: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert")
    key.write_text("key")
    settings = _settings(
        tmp_path,
        protocol="SSL",
        ca_file=str(ca_file),
        cert_file=str(cert),
        key_file=str(key),
        key_password=PASSWORD,
        verify_hostname="false",
    )
    config = kafka_client_config(settings)
    assert config["security.protocol"] == "ssl"
    assert (config["ssl.certificate.location"], config["ssl.key.location"]) == (str(cert), str(key))
    assert config["ssl.key.password"] == PASSWORD
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert "sasl.username" not in config


def test_passwords_print_masked_and_survive_the_stacks_round_trip(
    tmp_path: Path, ca_file: Path
) -> None:
    settings = _sasl_ssl(tmp_path, ca_file)
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.model_dump())
    assert PASSWORD not in yaml.safe_dump(settings.model_dump(mode="json"))
    # The stack's children read exactly what this process holds, password included.
    dumped = yaml.safe_dump(settings.model_dump(mode="json", context=REVEAL_SECRETS))
    assert PASSWORD in dumped
    config_file = tmp_path / "stack-config.yaml"
    config_file.write_text(dumped)
    reloaded = load_settings(config_file, environ={})
    assert reloaded == settings
    assert reloaded.kafka.security.password is not None
    assert reloaded.kafka.security.password.get_secret_value() == PASSWORD


@pytest.mark.parametrize("password", ["yes", "0123", "a: b", "[x", "null", "12345"])
def test_a_password_from_the_environment_is_taken_verbatim(
    tmp_path: Path, ca_file: Path, password: str
) -> None:
    settings = _sasl_ssl(tmp_path, ca_file, password=password)
    assert kafka_client_config(settings)["sasl.password"] == password


@pytest.mark.parametrize(
    ("security", "named"),
    [
        ({"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "username": "u"}, "password"),
        ({"protocol": "SASL_PLAINTEXT", "username": "u", "password": PASSWORD}, "sasl_mechanism"),
        ({"username": "u", "password": PASSWORD}, "kafka.security.username"),
        ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "kafka.security.sasl_mechanism"),
        ({"protocol": "TLS"}, "kafka.security.protocol"),
        ({"protocol": "SSL", "ca_file": "/no/such/ca.pem"}, "kafka.security.ca_file"),
        ({"protocol": "PLAINTEXT", "ca_file": "{ca}"}, "kafka.security.ca_file"),
        ({"protocol": "SSL", "cert_file": "{ca}"}, "kafka.security.key_file"),
        ({"protocol": "SSL", "password": PASSWORD}, "kafka.security.password"),
    ],
)
def test_inconsistent_security_is_an_error_naming_the_key_and_never_the_password(
    tmp_path: Path, ca_file: Path, security: dict[str, str], named: str
) -> None:
    values = {k: v.replace("{ca}", str(ca_file)) for k, v in security.items()}
    with pytest.raises(ConfigError, match=named) as caught:
        _settings(tmp_path, **values)
    # Not in the message, nor anywhere in the chained exceptions a traceback shows.
    assert PASSWORD not in "".join(traceback.format_exception(caught.value))


def test_faust_gets_the_same_credentials_and_ca(tmp_path: Path) -> None:
    # A real CA certificate: the reporter builds its TLS context from it.
    ca = Path(ssl.get_default_verify_paths().cafile or "")
    if not ca.is_file():
        pytest.skip("no system CA bundle to stand in for a CA file")
    settings = _settings(
        tmp_path,
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        username="pipeline",
        password=PASSWORD,
        ca_file=str(ca),
    )
    credentials = faust_broker_credentials(settings)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("pipeline", PASSWORD)
    assert auth["ssl_context"].check_hostname is True
    assert PASSWORD not in repr(credentials)


def test_faust_refuses_a_protocol_set_only_in_client_config(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    kafka = settings.kafka.model_copy(update={"client_config": {"security.protocol": "ssl"}})
    with pytest.raises(ConfigError, match="kafka.security.protocol"):
        faust_broker_credentials(settings.model_copy(update={"kafka": kafka}))


def test_redaction_masks_secret_values() -> None:
    config = {"sasl.username": "bob", "sasl.password": PASSWORD, "ssl.key.password": "k3y-pw"}
    assert secret_values(config) == [PASSWORD, "k3y-pw"]
    text = f"failed with sasl.password={PASSWORD} and k3y-pw"
    assert redact(text, secret_values(config)) == f"failed with sasl.password={MASK} and {MASK}"
    assert redacted(config) == {"sasl.username": "bob", "sasl.password": MASK,
                                "ssl.key.password": MASK}  # fmt: skip


def test_refusals_are_explained_with_the_setting_to_fix() -> None:
    config = {"sasl.username": "bob", "sasl.password": PASSWORD, "ssl.ca.location": "/ca.pem"}
    login = KafkaError(
        KafkaError._AUTHENTICATION,
        f"sasl_ssl://h:9093/bootstrap: SASL authentication error: bad {PASSWORD}",
    )
    message = explain_kafka_error(login, "h:9093", config)
    assert message is not None
    assert "refused the SASL login of user 'bob'" in message
    assert "kafka.security.password" in message
    assert PASSWORD not in message
    tls = KafkaError(
        KafkaError._SSL, "ssl://h:9093/bootstrap: SSL handshake failed: certificate verify failed"
    )
    message = explain_kafka_error(tls, "h:9093", config)
    assert message is not None and "kafka.security.ca_file" in message and "/ca.pem" in message
    acl = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED, "Group authorization failed")
    message = explain_kafka_error(acl, "h:9093", config, action="join group 'g'", resource="g")
    assert message is not None
    assert "user 'bob' (kafka.security.username) is not allowed to join group 'g'" in message
    assert "--allow-principal User:bob --operation All --group 'g'" in message
    assert explain_kafka_error(KafkaError(KafkaError._TRANSPORT), "h:9093", config) is None


def test_a_secured_clients_error_callback_raises_on_a_refused_login(
    tmp_path: Path, ca_file: Path
) -> None:
    check = kafka_client_config(_sasl_ssl(tmp_path, ca_file))["error_cb"]
    check(KafkaError(KafkaError._TRANSPORT, "broker restarting"))  # librdkafka retries
    with pytest.raises(ConfigError, match="kafka.security.password") as caught:
        check(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "registry at http://alice:s3cr%40t@mlflow:5000/api unreachable",
            "registry at http://alice:**********@mlflow:5000/api unreachable",
        ),
        (
            "postgresql+psycopg://landfall:pw@db:5432/x and s3a://k:v@bucket/p",
            "postgresql+psycopg://landfall:**********@db:5432/x and s3a://k:**********@bucket/p",
        ),
        ("no credentials at http://host:8080/path", "no credentials at http://host:8080/path"),
        ("https://:token@host/", "https://:**********@host/"),
    ],
)
def test_url_credentials_are_masked_in_any_text(text: str, masked: str) -> None:
    from landfall.redact import mask_url_credentials

    assert mask_url_credentials(text) == masked
