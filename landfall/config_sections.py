"""The settings sections beside kafka and datasets: Spark, MLflow, stores, loop, API, telemetry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from landfall.config_base import Frozen, SecretSetting, given, server_address

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


# A JVM memory size as Spark reads it: a number with an optional unit (k, m, g, t).
_MEMORY_SIZE = r"^[0-9]+[kKmMgGtT]?[bB]?$"


class _SparkResources(Frozen):
    """The sizes an operator sets most, as plain keys beside the raw ``conf``.

    ``driver_memory`` and ``executor_memory`` become ``spark.driver.memory`` and
    ``spark.executor.memory``; ``cores`` is the session's share of cores: the ``N`` of a
    ``local[N]`` master, ``spark.cores.max`` on a cluster. A key set both ways at one
    level is refused rather than one of them silently winning.
    """

    driver_memory: str | None = Field(default=None, pattern=_MEMORY_SIZE)
    executor_memory: str | None = Field(default=None, pattern=_MEMORY_SIZE)
    cores: int | None = Field(default=None, ge=1)
    conf: dict[str, str] = Field(default_factory=dict)

    _conf_values = field_validator("conf", mode="before")(_spark_conf_values)

    @model_validator(mode="after")
    def _each_setting_once(self) -> _SparkResources:
        for field_name, key in _PLAIN_CONF_KEYS.items():
            if getattr(self, field_name) is not None and key in self.conf:
                raise ValueError(f"{field_name} and conf[{key!r}] set the same thing; keep one")
        if self.cores is not None and _CORES_KEY in self.conf:
            raise ValueError(f"cores and conf[{_CORES_KEY!r}] set the same thing; keep one")
        return self

    def plain_conf(self) -> dict[str, str]:
        """The memory keys as Spark conf entries (cores depend on the master)."""
        return {
            key: getattr(self, field_name)
            for field_name, key in _PLAIN_CONF_KEYS.items()
            if getattr(self, field_name) is not None
        }


_PLAIN_CONF_KEYS = {
    "driver_memory": "spark.driver.memory",
    "executor_memory": "spark.executor.memory",
}
# Checked for a clash only: cores is the N of local[N] or, on a cluster, this key.
_CORES_KEY = "spark.cores.max"
_LOCAL_MASTER = re.compile(r"^local(\[[^\]]*\])?$")


class SparkServiceSettings(_SparkResources):
    """One service's own Spark settings, over the shared ones: e.g. a predictor with
    more memory and cores than the other three, or on a cluster while they stay local."""

    master: str | None = None


class SparkSettings(_SparkResources):
    """How each service builds its one SparkSession."""

    master: str = "local[2]"
    # e.g. a predictor given more cores of the cluster than the other three services.
    services: dict[str, SparkServiceSettings] = Field(default_factory=dict)

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

    def master_for(self, service: str) -> str:
        """The master ``service`` runs on; ``cores`` fills in a local master's ``[N]``."""
        own = self.services.get(service)
        master = own.master if own is not None and own.master else self.master
        cores = self._cores_for(service)
        if cores is not None and _LOCAL_MASTER.match(master):
            return f"local[{cores}]"
        return master

    def conf_for(self, service: str) -> dict[str, str]:
        """The Spark conf of ``service``, each level over the one before: ``conf`` and the
        plain keys, then its own ``services.<name>`` conf and plain keys."""
        cluster = not _LOCAL_MASTER.match(self.master_for(service))
        conf: dict[str, str] = {}
        own = self.services.get(service)
        for level in (self, own) if own is not None else (self,):
            conf.update({**level.conf, **level.plain_conf()})
            if cluster and level.cores is not None:
                conf["spark.cores.max"] = str(level.cores)
        return conf

    def _cores_for(self, service: str) -> int | None:
        own = self.services.get(service)
        return own.cores if own is not None and own.cores is not None else self.cores


class MlflowSettings(Frozen):
    """Where models are registered; unset URIs default to a SQLite store under home.

    Secrets: a URI may carry user:password@ (Settings.tracking_uri reads it in clear).
    """

    tracking_uri: SecretSetting | None = None
    registry_uri: SecretSetting | None = None


class ResultsDbSettings(Frozen):
    """The results database (any SQLAlchemy URL); unset means SQLite under home.

    A secret: the URL may carry user:password@ (Settings.results_db_url reads it in clear).
    """

    url: SecretSetting | None = None


class ObjectStoreSettings(Frozen):
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
        return server_address(
            value,
            "object_store.endpoint",
            "http://host:port or https://host",
            credentials_hint="give the credentials as object_store.access_key_id and "
            "object_store.secret_access_key",
        )

    @model_validator(mode="after")
    def _keys_together(self) -> ObjectStoreSettings:
        if given(self.access_key_id) != given(self.secret_access_key):
            raise ValueError(
                "object_store.access_key_id and object_store.secret_access_key go together"
            )
        if given(self.session_token) and not given(self.access_key_id):
            raise ValueError(
                "object_store.session_token is set but object_store.access_key_id and "
                "object_store.secret_access_key are not"
            )
        return self


class HdfsSettings(Frozen):
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
        return server_address(
            value,
            "hdfs.webhdfs",
            "http://namenode:9870 (the NameNode's HTTP address)",
            credentials_hint="set hdfs.user instead",
        )


class RunnerSettings(Frozen):
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


class SupervisionSettings(Frozen):
    """How `landfall up` restarts a crashed service, and when it gives up on it."""

    # A service that crashes more than this many times within the window is given up
    # on: `up` stops the stack and exits non-zero, naming it.
    max_restarts: int = Field(default=5, ge=0)
    restart_window_s: float = Field(default=300.0, gt=0)
    # The first restart waits about this long, each further one about twice as long (a
    # random part spreads the restarts of services that crashed together), up to the max.
    restart_delay_s: float = Field(default=1.0, ge=0)
    restart_delay_max_s: float = Field(default=30.0, ge=0)


class ReportingSettings(Frozen):
    """The reporter and the job API: drift threshold, reference window, address."""

    # Population stability index above which a feature counts as drifted (0.1-0.25 is
    # the usual "worth a look" band).
    psi_threshold: float = Field(default=0.2, gt=0)
    # How many of the dataset's previous partitions the distributions are compared with.
    reference_partitions: int = Field(default=7, ge=1)
    # The faust reporter forgets a run's progress this long after its last event; a
    # redelivery of an event older than that is reported again.
    progress_retention_hours: float = Field(default=168.0, gt=0)
    # A run with no progress for this long counts as stuck (landfall_batch_runs_stuck, the
    # LandfallRunsStuck alert; `landfall reconcile` re-drives it).
    stuck_after_s: float = Field(default=3600.0, gt=0)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)


# A token shorter than this is guessable; the one landfall generates has 43 characters.
API_TOKEN_MIN_CHARS = 16
# Visible ASCII only: a token travels in an HTTP header, where other bytes break.
_TOKEN_CHARS = re.compile(r"[!-~]+")


class ApiToken(Frozen):
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


class ApiSettings(Frozen):
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


class TelemetrySettings(Frozen):
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


class ScoringSettings(Frozen):
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
    # 65,536: the same speed as 262,144 (bench/README.md), a smaller peak per worker.
    batch_rows: int = Field(default=65_536, ge=1)
    # BLAS/OpenMP threads the model may use inside each task (a task already has a core
    # of its own); None leaves the libraries' own defaults.
    model_threads: int | None = Field(default=1, ge=1)


class FeaturizationSettings(Frozen):
    """How the featurizer computes and writes a partition's features.

    ``arrow`` computes them in Arrow-native Python tasks on the Spark cluster, each
    writing its own part file with pyarrow (Spark's parquet writer was three quarters
    of the stage); it takes landfall's own feature kinds and expressions of double
    arithmetic (services/featurizer/arrow_engine.py says exactly which). ``spark``
    computes them in one Spark query, the only engine for date parts, reference joins
    and every other expression. ``auto`` (the default) uses ``arrow`` whenever every
    feature allows it, else ``spark``.
    """

    engine: Literal["auto", "arrow", "spark"] = "auto"
    # A task computes at most this many rows; there are at least as many tasks as cores.
    rows_per_task: int = Field(default=8_000_000, ge=1)
    # Rows computed per record batch, and rows per row group of the feature files.
    batch_rows: int = Field(default=131_072, ge=1)


class ValidationSettings(Frozen):
    """How the validator checks a landed partition.

    ``arrow`` runs the checks as Arrow-native Python tasks on the Spark cluster (as the
    predictor's arrow engine scores): each task reads its share of the partition's row
    groups with pyarrow and writes its own valid and quarantine part files.
    ``spark`` runs them as Spark DataFrame jobs, the only engine for CSV or JSON input,
    free ``expression`` rules and casts the arrow engine does not implement. ``auto``
    (the default) uses ``arrow`` whenever the dataset allows it, else ``spark``.
    """

    engine: Literal["auto", "arrow", "spark"] = "auto"
    # A task checks at most this many rows; there are at least as many tasks as cores.
    rows_per_task: int = Field(default=8_000_000, ge=1)
    # Rows checked per record batch, and rows per row group of the part files.
    batch_rows: int = Field(default=131_072, ge=1)
