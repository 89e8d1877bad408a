"""Typed settings: one YAML file plus ``LANDFALL_*`` environment overrides.

The file names the broker, the lake, Spark, MLflow, the results database and each
dataset. Environment variables override any setting, so one file serves a laptop and
a cluster:

- ``LANDFALL_CONFIG``: the YAML file to load when none is given explicitly.
- ``LANDFALL_<SECTION>_<KEY>`` for a top-level section's key, e.g.
  ``LANDFALL_KAFKA_BOOTSTRAP=broker:9092`` or ``LANDFALL_SPARK_MASTER=spark://m:7077``.
- ``LANDFALL_<A>__<B>__<C>`` for any nested key, e.g.
  ``LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS=6``.

Values from the environment are parsed as YAML scalars, so ``6`` is a number and
``true`` a boolean. Relative paths resolve against the working directory at load
time, so every process started from one place shares one lake.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from landfall.datasets import (
    RAW_PATH_DEFAULT,
    ColumnSpec,
    DriftSettings,
    FeatureSet,
    FeatureSpec,
    RuleSpec,
    Thresholds,
    UniqueRule,
    check_path_template,
    relative_to_lake,
)
from landfall.errors import ConfigError
from landfall.redact import mask_url_credentials, register_settings

__all__ = [
    "ApiSettings",
    "ApiToken",
    "ColumnSpec",
    "DatasetConfig",
    "FeatureSpec",
    "HdfsSettings",
    "KafkaSecurity",
    "KafkaSettings",
    "ObjectStoreSettings",
    "REVEAL_SECRETS",
    "SchemaRegistryAuth",
    "ScoringSettings",
    "SecretSetting",
    "TelemetrySettings",
    "Settings",
    "TopicSettings",
    "load_settings",
]

ENV_PREFIX = "LANDFALL_"


class _Frozen(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silent default.
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicSettings(_Frozen):
    """One Kafka topic: its name, partition count and retention."""

    name: str
    # Several partitions so a service can run as several replicas of one group; all
    # events of one dataset partition share a key, so they stay in order.
    partitions: int = Field(default=6, ge=1)
    retention_ms: int | None = None


class Topics(_Frozen):
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


class LocalBrokerSettings(_Frozen):
    """The Apache Kafka that ``landfall up`` / ``landfall broker`` run when no bootstrap is set."""

    # Where clients connect; taken: any free port (a restart prefers the last one used).
    port: int = Field(default=9092, ge=1, le=65535)
    heap_mb: int = Field(default=512, ge=128)


# ``Settings.model_dump(mode="json", context=REVEAL_SECRETS)`` writes passwords in clear
# (for the mode-600 file the stack hands its children); any other dump masks them.
REVEAL_SECRETS: dict[str, bool] = {"reveal_secrets": True}


def _reveal_or_mask(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    return value.get_secret_value() if context.get("reveal_secrets") else str(value)


# A credential-bearing setting (a password, a URL that may carry user:password@): it
# prints and dumps as **********, except in a REVEAL_SECRETS dump; code that connects
# reads it with get_secret_value() (or a Settings property such as tracking_uri).
SecretSetting = Annotated[SecretStr, PlainSerializer(_reveal_or_mask, when_used="json")]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
# Keys under kafka.security whose environment override is taken verbatim, never parsed
# as YAML: a password such as ``yes``, ``0123`` or ``a: b`` must stay the string it is.
_VERBATIM_ENV_KEYS = frozenset({"username", "password", "key_password"})
# Other settings taken verbatim from the environment, for the same reason.
_VERBATIM_ENV_PATHS = frozenset(
    {
        ("kafka", "schema_registry_url"),
        ("kafka", "schema_registry_auth", "username"),
        ("kafka", "schema_registry_auth", "password"),
        ("mlflow", "tracking_uri"),
        ("mlflow", "registry_uri"),
        ("results_db", "url"),
        ("object_store", "endpoint"),
        ("object_store", "region"),
        ("object_store", "access_key_id"),
        ("object_store", "secret_access_key"),
        ("object_store", "session_token"),
        ("hdfs", "webhdfs"),
        ("hdfs", "user"),
    }
)


class KafkaSecurity(_Frozen):
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
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None
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
        path = _absolute(value.expanduser())
        if not path.is_file():
            raise ValueError(f"no such file {path} (kafka.security.{info.field_name})")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        if self.sasl:
            missing = [
                f"kafka.security.{name}"
                for name in ("sasl_mechanism", "username", "password")
                if not _given(getattr(self, name))
            ]
            if missing:
                raise ValueError(f"protocol {self.protocol} needs {', '.join(missing)}")
        else:
            for name in ("sasl_mechanism", "username", "password"):
                if _given(getattr(self, name)):
                    raise ValueError(
                        f"kafka.security.{name} is set but protocol {self.protocol} does not "
                        "use SASL (set kafka.security.protocol: SASL_SSL or SASL_PLAINTEXT)"
                    )
        if not self.tls:
            for name in ("ca_file", "cert_file", "key_file", "key_password"):
                if _given(getattr(self, name)):
                    raise ValueError(
                        f"kafka.security.{name} is set but protocol {self.protocol} does not "
                        "use TLS (set kafka.security.protocol: SASL_SSL or SSL)"
                    )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "kafka.security.cert_file and kafka.security.key_file go together "
                "(the client certificate and its private key)"
            )
        if _given(self.key_password) and self.key_file is None:
            raise ValueError(
                "kafka.security.key_password is set but kafka.security.key_file is not"
            )
        return self

    @field_serializer("password", "key_password", when_used="json")
    def _secret(self, value: SecretStr | None, info: FieldSerializationInfo) -> str | None:
        if value is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        return value.get_secret_value() if context.get("reveal_secrets") else str(value)


def _given(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return value is not None and value != ""


class SchemaRegistryAuth(_Frozen):
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


class KafkaSettings(_Frozen):
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


# The stage services, whose Spark settings spark.services may override (the same names
# as landfall.serve.SERVICE_NAMES, which this module cannot import without a cycle).
SPARK_SERVICE_NAMES = ("validator", "featurizer", "predictor", "reporter")


def _spark_conf_values(value: Any) -> Any:
    """Spark conf values as the strings Spark reads: YAML's ``2`` or ``true`` included."""
    if not isinstance(value, Mapping):
        return value
    return {key: _spark_conf_value(item) for key, item in value.items()}


def _spark_conf_value(item: Any) -> Any:
    if isinstance(item, bool):
        return "true" if item else "false"
    return str(item) if isinstance(item, int | float) else item


class SparkServiceSettings(_Frozen):
    """One service's own Spark settings, merged over the shared ``spark.conf``."""

    conf: dict[str, str] = Field(default_factory=dict)

    _conf_values = field_validator("conf", mode="before")(_spark_conf_values)


class SparkSettings(_Frozen):
    """How each service builds its one SparkSession."""

    master: str = "local[2]"
    conf: dict[str, str] = Field(default_factory=dict)
    # e.g. a predictor given more cores of the cluster than the other three services.
    services: dict[str, SparkServiceSettings] = Field(default_factory=dict)

    _conf_values = field_validator("conf", mode="before")(_spark_conf_values)

    @field_validator("services")
    @classmethod
    def _known_services(
        cls, value: dict[str, SparkServiceSettings]
    ) -> dict[str, SparkServiceSettings]:
        unknown = sorted(set(value) - set(SPARK_SERVICE_NAMES))
        if unknown:
            known = ", ".join(SPARK_SERVICE_NAMES)
            raise ValueError(f"unknown service {', '.join(unknown)}; choose from {known}")
        return value

    def conf_for(self, service: str) -> dict[str, str]:
        """The Spark conf of ``service``: ``conf`` with its own ``services.<name>.conf`` over it."""
        own = self.services.get(service)
        return {**self.conf, **(own.conf if own is not None else {})}


class MlflowSettings(_Frozen):
    """Where models are registered; unset URIs default to a SQLite store under home.

    Secrets: a URI may carry user:password@ (Settings.tracking_uri reads it in clear).
    """

    tracking_uri: SecretSetting | None = None
    registry_uri: SecretSetting | None = None


class ResultsDbSettings(_Frozen):
    """The results database (any SQLAlchemy URL); unset means SQLite under home.

    A secret: the URL may carry user:password@ (Settings.results_db_url reads it in clear).
    """

    url: SecretSetting | None = None


def _server_address(
    value: str | None, key: str, shape: str, *, credentials_hint: str
) -> str | None:
    """A server's address (scheme, host, port) from ``key``, or None if not given.

    Refused: anything but http(s), no host, a port that is not a number, a path or a
    query, and credentials in the URL (they belong in secret settings, not in an address
    that ends up in logs).
    """
    if value is None or not value.strip():
        return None
    from urllib.parse import urlsplit

    value = value.strip().rstrip("/")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must look like {shape}, got {mask_url_credentials(value)!r}")
    if parts.username or parts.password:
        raise ValueError(f"{key} carries user:password@: {credentials_hint}")
    if parts.path or parts.query:
        raise ValueError(f"{key} is the server's address only (scheme, host, port), got {value!r}")
    return value


class ObjectStoreSettings(_Frozen):
    """The S3-compatible object store of a lake at ``s3a://bucket/prefix`` (AWS, MinIO ...).

    Spark (``s3a://``, hadoop-aws) and the arrow engine (pyarrow's S3 filesystem) reach
    the store with these same settings (landfall/object_store.py). Without keys both
    use the AWS SDK's default credential chain (environment, profile, instance role).
    The keys and the session token are secrets: they print as ``**********``.
    """

    # http(s)://host[:port] of the store; None: AWS S3 itself, found from the region.
    endpoint: str | None = None
    region: str = Field(default="us-east-1", min_length=1)
    access_key_id: SecretSetting | None = None
    secret_access_key: SecretSetting | None = None
    # Only with temporary credentials (STS), beside their key id and secret.
    session_token: SecretSetting | None = None
    # Buckets addressed as endpoint/bucket/key rather than bucket.endpoint/key: what
    # MinIO and most self-hosted stores need (an endpoint that is an IP address must).
    path_style_access: bool = True
    # How long to wait for a connection before calling the store unreachable.
    connect_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _server_address(
            value,
            "object_store.endpoint",
            "http://host:port or https://host",
            credentials_hint="give the credentials as object_store.access_key_id and "
            "object_store.secret_access_key",
        )

    @model_validator(mode="after")
    def _keys_together(self) -> ObjectStoreSettings:
        if _given(self.access_key_id) != _given(self.secret_access_key):
            raise ValueError(
                "object_store.access_key_id and object_store.secret_access_key go together"
            )
        if _given(self.session_token) and not _given(self.access_key_id):
            raise ValueError(
                "object_store.session_token is set but object_store.access_key_id and "
                "object_store.secret_access_key are not"
            )
        return self


class HdfsSettings(_Frozen):
    """How landfall's own files and the arrow engine reach a lake at ``hdfs://``.

    Spark uses its bundled Hadoop client on the lake root's NameNode (RPC); landfall
    uses the same NameNode's WebHDFS (landfall/webhdfs.py), which needs no Hadoop
    installation. Simple authentication only (no Kerberos yet).
    """

    # http(s)://host:port of the NameNode's HTTP server; None: the lake root's NameNode
    # host on port 9870 (Hadoop 3's dfs.namenode.http-address).
    webhdfs: str | None = None
    # Whom landfall acts as; None: $HADOOP_USER_NAME, else the login name, as Hadoop's
    # own client (so Spark) does.
    user: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("webhdfs")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _server_address(
            value,
            "hdfs.webhdfs",
            "http://namenode:9870 (the NameNode's HTTP address)",
            credentials_hint="set hdfs.user instead",
        )


class RunnerSettings(_Frozen):
    """How the shared consume -> handle -> produce -> commit loop behaves."""

    poll_timeout_s: float = 0.5
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 30.0
    # How long the idempotent producer keeps retrying a record on its own (its
    # delivery.timeout.ms); unacknowledged by then, the batch is redone later instead
    # of the record being produced a second time.
    publish_timeout_s: float = Field(default=30.0, gt=0)
    # A message that this many processes started and died on before finishing it is
    # dead-lettered unread by the next (poison-pill detection, landfall/poison.py).
    max_crashes: int = Field(default=3, ge=1)
    # A message larger than this is not decoded at all: it goes to the dead-letter
    # topic (events are a few hundred bytes; anything near this is not one).
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A dead letter keeps at most this much of the original value, under the 1 MB
    # most clusters allow per record; the rest is cut, and a header gives the size.
    dead_letter_max_bytes: int = Field(default=900_000, ge=1024)
    # On SIGTERM the stage in flight may finish (and commit) within this many seconds;
    # past it, it is abandoned uncommitted and redone by the next owner. `landfall up`
    # and `landfall stop` wait this long plus a margin before they kill a service.
    shutdown_grace_s: float = Field(default=20.0, ge=0)


class SupervisionSettings(_Frozen):
    """How `landfall up` restarts a crashed service, and when it gives up on it."""

    # A service that crashes more than this many times within the window is given up
    # on: `up` stops the stack and exits non-zero, naming it.
    max_restarts: int = Field(default=5, ge=0)
    restart_window_s: float = Field(default=300.0, gt=0)
    # The first restart waits about this long, each further one about twice as long (a
    # random part spreads the restarts of services that crashed together), up to the max.
    restart_delay_s: float = Field(default=1.0, ge=0)
    restart_delay_max_s: float = Field(default=30.0, ge=0)


class ReportingSettings(_Frozen):
    """The reporter and the job API: drift threshold, reference window, address."""

    # Population stability index above which a feature counts as drifted (0.1-0.25 is
    # the usual "worth a look" band).
    psi_threshold: float = Field(default=0.2, gt=0)
    # How many of the dataset's previous partitions the distributions are compared with.
    reference_partitions: int = Field(default=7, ge=1)
    # The faust reporter forgets a run's progress this long after its last event; a
    # redelivery of an event older than that is reported again.
    progress_retention_hours: float = Field(default=168.0, gt=0)
    # A run with no progress for this long counts as stuck (batch_runs_stuck, the
    # LandfallRunsStuck alert; `landfall reconcile` re-drives it).
    stuck_after_s: float = Field(default=3600.0, gt=0)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)


# A token shorter than this is guessable; the one landfall generates has 43 characters.
API_TOKEN_MIN_CHARS = 16
# Visible ASCII only: a token travels in an HTTP header, where other bytes break.
_TOKEN_CHARS = re.compile(r"[!-~]+")


class ApiToken(_Frozen):
    """One bearer token of the job API and what it may do.

    ``read`` tokens read (status, history, metrics, reports); ``operator`` tokens also
    change things (submit batches). ``name`` says whose token it is in the API's log,
    which never shows the token itself.
    """

    token: SecretSetting
    role: Literal["read", "operator"] = "read"  # least privilege unless said otherwise
    name: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("token")
    @classmethod
    def _strong(cls, value: SecretStr) -> SecretStr:
        # The messages say what is wrong, never what the token was.
        plain = value.get_secret_value()
        if len(plain) < API_TOKEN_MIN_CHARS:
            raise ValueError(f"an API token needs at least {API_TOKEN_MIN_CHARS} characters")
        if _TOKEN_CHARS.fullmatch(plain) is None:
            raise ValueError("an API token is visible ASCII without spaces")
        return value


class ApiSettings(_Frozen):
    """Who may use the job API, and how much a request may be.

    Tokens come from ``tokens`` and from ``token_file`` (one ``ROLE TOKEN [NAME]`` a
    line; a relative path is under home). With neither, the API generates one operator
    token into ``<home>/api-token`` (mode 600) at its first start and reuses it.
    """

    tokens: list[ApiToken] = Field(default_factory=list)
    token_file: Path | None = None
    # Reads (status page, history, reports) without a token; changes always need one.
    public_reads: bool = False
    # How long a browser stays logged in to the status page after entering a token.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Mark the login cookie Secure: set it when a TLS proxy serves the API as https.
    secure_cookies: bool = False
    # Longer request targets (path and query) are refused with 414 before routing.
    max_url_bytes: int = Field(default=4096, ge=256, le=1024 * 1024)
    # Larger request bodies are refused with 413; a submission is a few hundred bytes.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Requests in flight beyond this are answered 503 at once instead of queueing.
    max_concurrent_requests: int = Field(default=64, ge=1)


class TelemetrySettings(_Frozen):
    """Metrics and traces (landfall/telemetry.py)."""

    # Serve Prometheus /metrics on this port (0: any free port); unset: no endpoint.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Export spans over OTLP/HTTP here, e.g. Jaeger's http://jaeger:4318/v1/traces.
    otlp_endpoint: str | None = None
    # Also write each service's spans as JSON lines to <trace_dir>/<service>.jsonl
    # (a relative trace_dir is under home).
    trace_dir: Path | None = None
    # The fraction of new traces kept; a trace started upstream follows its parent.
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)


class ScoringSettings(_Frozen):
    """How the predictor runs a model over a feature table.

    ``arrow`` (the default) runs each model as Arrow-native Python tasks on the Spark
    cluster: a task reads its share of the feature table's row groups with pyarrow,
    scores them batch by batch and writes its own part file, so rows never pass through
    Spark's row format (bench/README.md has the figures). ``spark_udf`` scores through
    ``mlflow.pyfunc.spark_udf`` in a Spark DataFrame instead.
    """

    engine: Literal["arrow", "spark_udf"] = "arrow"
    # A task scores at most this many rows; there are at least as many tasks as cores.
    rows_per_task: int = Field(default=8_000_000, ge=1)
    # Rows the model sees per call, and rows per row group of the prediction files.
    batch_rows: int = Field(default=262_144, ge=1)
    # BLAS/OpenMP threads the model may use inside each task (a task already has a core
    # of its own); None leaves the libraries' own defaults.
    model_threads: int | None = Field(default=1, ge=1)


class GateRule(_Frozen):
    """One quality-gate bound on a registered metric: ``min`` (at least) and/or ``max``."""

    metric: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> GateRule:
        if self.min is None and self.max is None:
            raise ValueError(f"gate rule for {self.metric!r} needs a min or a max bound")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate rule for {self.metric!r} has min {self.min} > max {self.max}")
        return self

    def describe(self) -> str:
        """The bound in words, e.g. ``accuracy >= 0.8``."""
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return f"{self.metric} {' and '.join(bounds)}"


class ModelSpec(_Frozen):
    """The registered model that scores a dataset, as ``models:/name@alias``.

    ``gate`` bounds the version's registered metrics: a version outside any bound (or
    without one of the metrics) is refused by the predictor and by ``landfall model
    promote``. ``challenger`` names a second alias of the same registered model that
    scores every batch beside the champion, for comparison only.
    """

    uri: str
    challenger: str | None = None
    gate: list[GateRule] = Field(default_factory=list)

    @field_validator("uri")
    @classmethod
    def _registered_alias(cls, value: str) -> str:
        name, _, alias = value.removeprefix("models:/").partition("@")
        if not value.startswith("models:/") or not name or not alias or "/" in name:
            raise ValueError(f"model uri must look like models:/name@alias, got {value!r}")
        return value

    @model_validator(mode="after")
    def _distinct_aliases(self) -> ModelSpec:
        if self.challenger is not None and self.challenger == self.alias:
            raise ValueError(f"the challenger alias {self.challenger!r} is the champion's alias")
        metrics = [rule.metric for rule in self.gate]
        if len(metrics) != len(set(metrics)):
            raise ValueError("each gate metric may appear once (put min and max in one rule)")
        return self

    @property
    def name(self) -> str:
        """The registered model's name."""
        return self.uri.removeprefix("models:/").split("@", 1)[0]

    @property
    def alias(self) -> str:
        """The alias that names the version to use."""
        return self.uri.split("@", 1)[1]


class DatasetConfig(_Frozen):
    """Everything landfall needs to know about one dataset."""

    format: Literal["csv", "parquet", "json"] = "csv"
    # Where a partition lands, relative to the lake root (or a URI below it):
    # {dataset} and {partition} are filled in, e.g. "landing/{dataset}/date={partition}".
    raw_path: str = RAW_PATH_DEFAULT
    id_column: str = "id"
    columns: list[ColumnSpec]
    # Columns the files carry beyond the declared ones: reported either way, then
    # kept in the validated table or dropped from it.
    extra_columns: Literal["keep", "drop"] = "drop"
    rules: list[RuleSpec] = Field(default_factory=list)
    thresholds: Thresholds = Thresholds()
    feature_set: FeatureSet = FeatureSet()
    features: list[FeatureSpec]
    model: ModelSpec
    drift: DriftSettings = DriftSettings()

    @field_validator("raw_path")
    @classmethod
    def _raw_path_template(cls, value: str) -> str:
        from landfall.lake import OUTPUT_ZONES

        checked = check_path_template(value, allowed=("dataset", "partition"))
        first = checked.split("/", 2)
        # Landfall's own folders are never where data lands.
        if first[0] == "_landfall" or (
            first[0] == "{dataset}" and len(first) > 1 and first[1] in OUTPUT_ZONES
        ):
            raise ValueError(f"{value!r} lies in landfall's own {'/'.join(first[:2])} folder")
        return checked

    def drift_thresholds(self, default: float) -> dict[str, float | None]:
        """Each feature column's PSI threshold; None: not watched for drift.

        A column's own entry in ``drift.features`` wins over its feature's, which wins
        over ``drift.threshold``, which wins over ``default`` (reporting.psi_threshold).
        """
        dataset_default = self.drift.threshold or default
        thresholds: dict[str, float | None] = {}
        for feature in self.features:
            for column in feature.output_names():
                entry = self.drift.features.get(column) or self.drift.features.get(feature.name)
                if entry is not None and not entry.enabled:
                    thresholds[column] = None
                else:
                    own = entry.threshold if entry is not None else None
                    thresholds[column] = own or dataset_default
        return thresholds

    @model_validator(mode="after")
    def _consistent(self) -> DatasetConfig:
        names = [c.name for c in self.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"columns declared twice: {', '.join(duplicates)}")
        if self.id_column not in names:
            raise ValueError(f"id_column {self.id_column!r} is not among the declared columns")
        rules = [r.name for r in self.rules]
        if len(rules) != len(set(rules)):
            raise ValueError("rule names must be unique")
        for rule in self.rules:
            for column in _rule_columns(rule):
                if column not in names:
                    raise ValueError(f"rule {rule.name!r} names undeclared column {column!r}")
        unknown = sorted(set(self.thresholds.per_rule) - set(rules))
        if unknown:
            raise ValueError(f"thresholds.per_rule names unknown rule(s): {', '.join(unknown)}")
        # Two features making one column would leave the model one of them, silently;
        # Spark resolves names regardless of case, so x_A and x_a are one column too.
        made: dict[str, str] = {self.id_column.lower(): "the id column"}
        columns = set()
        for feature in self.features:
            for column in feature.output_names():
                if column.lower() in made:
                    raise ValueError(
                        f"feature {feature.name!r} makes column {column!r}, which "
                        f"{made[column.lower()]} already is (names are compared ignoring case)"
                    )
                made[column.lower()] = f"feature {feature.name!r}"
                columns.add(column)
        watched = {f.name for f in self.features} | columns
        unknown = sorted(set(self.drift.features) - watched)
        if unknown:
            raise ValueError(
                f"drift.features names what no feature makes: {', '.join(unknown)} "
                "(a feature's name or one of its columns)"
            )
        return self


def _rule_columns(rule: RuleSpec) -> list[str]:
    if isinstance(rule, UniqueRule):
        return list(rule.columns)
    column = getattr(rule, "column", None)
    return [column] if column else []


class Settings(_Frozen):
    """All of landfall's settings."""

    # A validation error shows no input values: they may be passwords.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    home: Path = Path(".landfall")
    # A local folder (a path or file://), an object store (s3a://bucket/prefix) or HDFS
    # (hdfs://namenode:port/path).
    lake_root: str | None = None
    kafka: KafkaSettings = KafkaSettings()
    spark: SparkSettings = SparkSettings()
    mlflow: MlflowSettings = MlflowSettings()
    results_db: ResultsDbSettings = ResultsDbSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()
    hdfs: HdfsSettings = HdfsSettings()
    runner: RunnerSettings = RunnerSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    reporting: ReportingSettings = ReportingSettings()
    scoring: ScoringSettings = ScoringSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    api: ApiSettings = ApiSettings()
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)

    @property
    def lake_uri(self) -> str:
        """The lake root as configured: a local absolute path, or a store's URI."""
        return self.lake_root if self.lake_root is not None else str(self.home / "lake")

    @property
    def lake(self) -> Path:
        """The lake root as a local folder; a lake in an object store has none.

        Code that works on any lake uses ``Lake.from_settings(settings)``.
        """
        uri = self.lake_uri
        if uri.startswith("file://"):
            return Path(uri[len("file://") :])
        if _LAKE_URI.match(uri):
            raise ConfigError(f"lake_root {uri!r} is not a local folder")
        return Path(uri)

    # The properties below hand out credential-bearing settings in clear, for the code
    # that connects; anything that prints them goes through landfall.redact.redact.

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI (in clear)."""
        return _clear(self.mlflow.tracking_uri) or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        """The MLflow model registry URI, the tracking URI unless set (in clear)."""
        return _clear(self.mlflow.registry_uri) or self.tracking_uri

    @property
    def results_db_url(self) -> str:
        """The SQLAlchemy URL of the results database (in clear)."""
        return _clear(self.results_db.url) or f"sqlite:///{self.home / 'results.db'}"

    @property
    def schema_registry_url(self) -> str | None:
        """The schema registry URL(s), in clear; None: no registry."""
        return _clear(self.kafka.schema_registry_url)

    def dataset(self, name: str) -> DatasetConfig:
        """The named dataset's configuration, or a ConfigError listing the known ones."""
        try:
            return self.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise ConfigError(f"unknown dataset {name!r} (configured: {known})") from None


def _clear(value: SecretStr | None) -> str | None:
    return (value.get_secret_value() or None) if value is not None else None


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    sections = set(Settings.model_fields)
    overrides = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if "__" in key:
            path = key.split("__")
        elif key in sections:
            path = [key]
        else:
            section, _, rest = key.partition("_")
            if section not in sections or not rest:
                continue  # not ours (e.g. LANDFALL_TEST_SOMETHING used by tools)
            path = [section, rest]
        overrides.append((path, _env_value(path, raw)))
    return overrides


def _env_value(path: list[str], raw: str) -> Any:
    if path[:2] == ["kafka", "security"] and path[-1] in _VERBATIM_ENV_KEYS:
        return raw or None
    if tuple(path) in _VERBATIM_ENV_PATHS:
        return raw or None
    return yaml.safe_load(raw) if raw else None


_LAKE_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LAKE_SCHEMES = ("file", "s3a", "s3", "s3n", "hdfs")


def _lake_root(root: str) -> str:
    """The configured lake root, checked: a local path made absolute, or a store's URI."""
    match = _LAKE_URI.match(root)
    if match is None:
        return str(_absolute(Path(root)))
    scheme = match.group(1).lower()
    if scheme not in _LAKE_SCHEMES:
        raise ConfigError(
            f"lake_root {root!r}: the scheme {scheme}:// is not supported "
            f"(use a local path, file://, s3a://bucket/prefix or hdfs://namenode:port/path)"
        )
    if scheme == "file":
        return str(_absolute(Path(root[len("file://") :])))
    if scheme == "hdfs":
        if not root[match.end() :].split("/", 1)[0]:
            raise ConfigError(
                f"lake_root {root!r} names no NameNode (hdfs://namenode:port/path): "
                "landfall reads no Hadoop configuration for a default one"
            )
        return root.rstrip("/")
    bucket = root[match.end() :].split("/", 1)[0]
    if not bucket:
        raise ConfigError(f"lake_root {root!r} names no bucket (s3a://bucket/prefix)")
    return root.rstrip("/")


def _absolute(path: Path) -> Path:
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from a YAML file (or ``$LANDFALL_CONFIG``) with env overrides."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    tree: dict[str, Any] = {}
    if path:
        file = Path(path)
        try:
            loaded = yaml.safe_load(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {file} must hold a mapping at the top level")
        tree = loaded or {}
    for key_path, value in _env_overrides(environ):
        _set_path(tree, key_path, value)
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration ({path or 'defaults'}): {problems}") from exc
    home = _absolute(settings.home)
    telemetry = settings.telemetry
    if telemetry.trace_dir is not None:  # a relative trace_dir is under home
        telemetry = telemetry.model_copy(update={"trace_dir": home / telemetry.trace_dir})
    loaded = settings.model_copy(
        update={
            "home": home,
            "lake_root": _lake_root(settings.lake_uri),
            "telemetry": telemetry,
        }
    )
    for name, dataset in loaded.datasets.items():
        try:  # a full URI must lie in the lake; the lake root is known only now
            relative_to_lake(dataset.raw_path, str(loaded.lake_root))
        except ValueError as exc:
            raise ConfigError(
                f"invalid configuration ({path or 'defaults'}): datasets.{name}.raw_path: {exc}"
            ) from None
    # Once per load: from now on this process masks these secrets wherever it writes.
    register_settings(loaded)
    return loaded
