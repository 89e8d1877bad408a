"""Every Kafka client landfall creates takes its settings from here.

Consumers, producers and admin clients (librdkafka, through confluent-kafka) are
configured by :func:`kafka_client_config`, so the bootstrap address, the security
settings (``kafka.security``) and ``kafka.client_config`` reach each one the same
way; ``kafka.client_config`` comes last and may override any of them. The faust
reporter (aiokafka) takes the same security settings as
:func:`faust_broker_credentials`.

On a secured connection each client also gets an error callback that turns a refused
login or TLS handshake into a :class:`ConfigError` naming the setting, raised from the
client's next ``poll``/``flush``/``consume``: librdkafka alone would retry forever.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient

from landfall.codec import EventCodec
from landfall.config import KafkaSecurity, Settings
from landfall.errors import ConfigError
from landfall.redact import secret_values
from landfall.topics import explain_kafka_error

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = [
    "RefusalCheck",
    "admin_client",
    "event_codec",
    "faust_broker_credentials",
    "kafka_client_config",
    "kafka_connection_config",
    "kafka_secrets",
    "registry_connection",
    "security_client_config",
    "ssl_context",
]


def security_client_config(security: KafkaSecurity) -> dict[str, str]:
    """The librdkafka settings for ``kafka.security`` (none for PLAINTEXT)."""
    if security.protocol == "PLAINTEXT":
        return {}
    config = {"security.protocol": security.protocol.lower()}
    if security.sasl:
        assert security.sasl_mechanism and security.username and security.password
        config["sasl.mechanism"] = security.sasl_mechanism
        config["sasl.username"] = security.username
        config["sasl.password"] = security.password.get_secret_value()
    if security.tls:
        if security.ca_file is not None:
            config["ssl.ca.location"] = str(security.ca_file)
        if security.cert_file is not None and security.key_file is not None:
            config["ssl.certificate.location"] = str(security.cert_file)
            config["ssl.key.location"] = str(security.key_file)
        if security.key_password is not None:
            config["ssl.key.password"] = security.key_password.get_secret_value()
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if security.verify_hostname else "none"
        )
    return config


def kafka_connection_config(settings: Settings) -> dict[str, Any]:
    """Security settings and ``kafka.client_config``: all but the bootstrap address.

    What :mod:`landfall.topics` takes as ``admin_config``.
    """
    return {**security_client_config(settings.kafka.security), **settings.kafka.client_config}


class RefusalCheck:
    """A librdkafka ``error_cb``: a refused login or TLS handshake raises ConfigError.

    confluent-kafka re-raises it from the call that served the callback, so a client
    with a wrong password or an untrusted CA fails at once with one clear line; other
    errors (a broker restarting) stay librdkafka's to retry.
    """

    def __init__(self, bootstrap: str, config: dict[str, Any]) -> None:
        self.bootstrap = bootstrap
        self.config = config

    def __call__(self, error: KafkaError) -> None:
        message = explain_kafka_error(error, self.bootstrap, self.config)
        if message is not None:
            raise ConfigError(message)


def kafka_client_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka settings every client shares, built in one place."""
    bootstrap = settings.kafka.bootstrap
    if not bootstrap:
        raise ConfigError("no Kafka bootstrap configured (kafka.bootstrap)")
    config = {"bootstrap.servers": bootstrap, **kafka_connection_config(settings)}
    if str(config.get("security.protocol", "plaintext")).lower() != "plaintext":
        config["error_cb"] = RefusalCheck(bootstrap, dict(config))
    return config


def kafka_secrets(settings: Settings) -> list[str]:
    """Every secret the Kafka settings hold, to redact from messages."""
    return secret_values(kafka_connection_config(settings))


def registry_connection(settings: Settings) -> tuple[str, dict[str, Any]] | None:
    """The configured schema registry's URL and client settings (its login); None: none."""
    url = settings.schema_registry_url
    if url is None:
        return None
    config: dict[str, Any] = {}
    auth = settings.kafka.schema_registry_auth
    if auth is not None:
        # confluent-kafka's SchemaRegistryClient: HTTP basic credentials as user:password.
        config["basic.auth.user.info"] = f"{auth.username}:{auth.password.get_secret_value()}"
    return url, config


def event_codec(settings: Settings) -> EventCodec:
    """The event codec on the configured schema registry, logged in as configured (if any)."""
    connection = registry_connection(settings)
    return EventCodec() if connection is None else EventCodec(*connection)


def admin_client(settings: Settings) -> AdminClient:
    """An admin client on the configured broker."""
    return AdminClient(kafka_client_config(settings))


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """A TLS client context for ``kafka.security``: its CA (else the system's), its cert."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(security.ca_file) if security.ca_file is not None else None,
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"kafka.security.ca_file {security.ca_file} holds no usable CA certificate: {exc}"
        ) from None
    context.check_hostname = security.verify_hostname
    if security.cert_file is not None and security.key_file is not None:
        password = security.key_password.get_secret_value() if security.key_password else None
        try:
            context.load_cert_chain(security.cert_file, security.key_file, password=password)
        except (ssl.SSLError, OSError) as exc:
            # The exception's text is OpenSSL's and never holds the key's password.
            raise ConfigError(
                f"kafka.security.cert_file {security.cert_file} / kafka.security.key_file "
                f"{security.key_file} (kafka.security.key_password) cannot be loaded: {exc}"
            ) from None
    return context


def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """``kafka.security`` as faust's ``broker_credentials`` (None: plaintext).

    faust (aiokafka) reads no librdkafka settings, so a security protocol given only in
    ``kafka.client_config`` would leave the reporter on plaintext: that is refused.
    """
    security = settings.kafka.security
    other = str(settings.kafka.client_config.get("security.protocol", security.protocol))
    if other.upper() != security.protocol:
        raise ConfigError(
            f"kafka.client_config sets security.protocol {other!r} but kafka.security.protocol "
            f"is {security.protocol}: the faust reporter reads only kafka.security, so set "
            "the protocol (and the credentials) there"
        )
    if security.protocol == "PLAINTEXT":
        return None
    import faust

    context = ssl_context(security) if security.tls else None
    if security.sasl:
        assert security.username and security.password and security.sasl_mechanism
        return faust.SASLCredentials(
            username=security.username,
            password=security.password.get_secret_value(),
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    assert context is not None
    return faust.SSLCredentials(context)
