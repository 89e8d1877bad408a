"""The ``kafka`` section: broker, topics, schema registry and client security."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from landfall.config_base import Frozen, SecretSetting, absolute, given


class TopicSettings(Frozen):
    """One Kafka topic: its name, partition count and retention."""

    name: str
    # Several partitions so a service can run as several replicas of one group; all
    # events of one dataset partition share a key, so they stay in order.
    partitions: int = Field(default=6, ge=1)
    retention_ms: int | None = None


class Topics(Frozen):
    """Every topic landfall reads or writes."""

    landed: TopicSettings = TopicSettings(name="landfall.batch-ready")
    validated: TopicSettings = TopicSettings(name="landfall.batch-validated")
    featurized: TopicSettings = TopicSettings(name="landfall.batch-featurized")
    predicted: TopicSettings = TopicSettings(name="landfall.batch-predicted")
    reported: TopicSettings = TopicSettings(name="landfall.batch-reported")
    failed: TopicSettings = TopicSettings(name="landfall.batch-failed")
    dead_letter: TopicSettings = TopicSettings(name="landfall.dead-letter")

    def all(self) -> list[TopicSettings]:
        """Every topic, in pipeline order."""
        return [
            self.landed,
            self.validated,
            self.featurized,
            self.predicted,
            self.reported,
            self.failed,
            self.dead_letter,
        ]


class LocalBrokerSettings(Frozen):
    """The Apache Kafka that ``landfall up`` / ``landfall broker`` run when no bootstrap is set."""

    # Where clients connect; taken: any free port (a restart prefers the last one used).
    port: int = Field(default=9092, ge=1, le=65535)
    heap_mb: int = Field(default=512, ge=128)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecurity(Frozen):
    """How every Kafka client of landfall authenticates and encrypts.

    The same settings reach each consumer, producer and admin client (librdkafka), the
    faust reporter (aiokafka) and the job API's and CLI's producers. ``protocol`` is
    the listener's security protocol; SASL protocols need ``sasl_mechanism``,
    ``username`` and ``password``; TLS protocols (SSL, SASL_SSL) trust ``ca_file``
    (else the system's CAs) and may present a client certificate (``cert_file`` and
    ``key_file``, the key optionally encrypted with ``key_password``). Passwords are
    secrets: they print as ``**********`` and no error message or log carries them.
    """

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    username: str | None = None
    password: SecretSetting | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretSetting | None = None
    # Check that the broker's certificate names the host connected to (off only for
    # brokers reached by an address their certificate does not list).
    verify_hostname: bool = True

    @property
    def sasl(self) -> bool:
        """Whether the protocol authenticates with SASL."""
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        """Whether the protocol encrypts with TLS."""
        return self.protocol in ("SSL", "SASL_SSL")

    @field_validator("protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _existing_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = absolute(value.expanduser())
        if not path.is_file():
            raise ValueError(f"no such file {path} (kafka.security.{info.field_name})")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        if self.sasl:
            missing = [
                f"kafka.security.{name}"
                for name in ("sasl_mechanism", "username", "password")
                if not given(getattr(self, name))
            ]
            if missing:
                raise ValueError(f"protocol {self.protocol} needs {', '.join(missing)}")
        else:
            for name in ("sasl_mechanism", "username", "password"):
                if given(getattr(self, name)):
                    raise ValueError(
                        f"kafka.security.{name} is set but protocol {self.protocol} does not "
                        "use SASL (set kafka.security.protocol: SASL_SSL or SASL_PLAINTEXT)"
                    )
        if not self.tls:
            for name in ("ca_file", "cert_file", "key_file", "key_password"):
                if given(getattr(self, name)):
                    raise ValueError(
                        f"kafka.security.{name} is set but protocol {self.protocol} does not "
                        "use TLS (set kafka.security.protocol: SASL_SSL or SSL)"
                    )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "kafka.security.cert_file and kafka.security.key_file go together "
                "(the client certificate and its private key)"
            )
        if given(self.key_password) and self.key_file is None:
            raise ValueError(
                "kafka.security.key_password is set but kafka.security.key_file is not"
            )
        return self


class SchemaRegistryAuth(Frozen):
    """HTTP basic credentials for the schema registry (its client's ``basic.auth.user.info``)."""

    username: str = Field(min_length=1)
    password: SecretSetting

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("a basic-auth user name cannot contain ':'")
        return value


def _url_has_credentials(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return any(urlsplit(part.strip()).password for part in url.split(","))
    except ValueError:
        return False


class KafkaSettings(Frozen):
    """The broker, the schema registry and client settings."""

    bootstrap: str | None = Field(
        default=None, description="host:port list; unset means the local broker under home"
    )
    # A secret: it may carry user:password@ (or use schema_registry_auth instead).
    schema_registry_url: SecretSetting | None = None
    schema_registry_auth: SchemaRegistryAuth | None = None
    group_prefix: str = "landfall"
    # Create missing topics and grow those with fewer partitions than configured, at
    # every service's start. Off: a cluster whose topics its operators own; a missing
    # or smaller topic is then an error that names it.
    manage_topics: bool = True
    # A short session (Kafka's minimum) lets a crashed replica's partitions move on
    # within seconds; a clean shutdown leaves the group at once whatever this is.
    session_timeout_ms: int = 6000
    max_poll_interval_ms: int = 300_000
    client_config: dict[str, str] = Field(
        default_factory=dict, description="extra librdkafka settings for every client"
    )
    topics: Topics = Topics()
    local: LocalBrokerSettings = LocalBrokerSettings()
    security: KafkaSecurity = KafkaSecurity()

    @model_validator(mode="after")
    def _one_registry_login(self) -> KafkaSettings:
        # The registry's client refuses both at once, with a less helpful message.
        if self.schema_registry_auth is None:
            return self
        url = self.schema_registry_url.get_secret_value() if self.schema_registry_url else ""
        if not url:
            raise ValueError(
                "kafka.schema_registry_auth is set but kafka.schema_registry_url is not"
            )
        if _url_has_credentials(url):
            raise ValueError(
                "kafka.schema_registry_url carries user:password@ and kafka.schema_registry_auth "
                "is set too: give the credentials once"
            )
        return self
