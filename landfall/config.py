"""Typed settings: one YAML file plus ``LANDFALL_*`` environment overrides.

The file names the broker, the lake, Spark, MLflow, the results database and each
dataset. Environment variables override any setting, so one file serves a laptop and
a cluster (landfall/config_sources.py reads both, with pydantic-settings):

- ``LANDFALL_CONFIG``: the YAML file to load when none is given explicitly.
- ``LANDFALL_<SECTION>_<KEY>`` for a top-level section's key, e.g.
  ``LANDFALL_KAFKA_BOOTSTRAP=broker:9092`` or ``LANDFALL_RESULTS_DB_URL=postgresql://...``.
- ``LANDFALL_<A>__<B>__<C>`` for any nested key, e.g.
  ``LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS=6``.

Values from the environment are taken as given and converted to the setting's type
(``6`` for a number, ``true`` for a flag; a password stays the string it is). An unknown
``LANDFALL_*`` variable, or a value its setting refuses, is an error naming the
variable. Relative paths resolve against the working directory at load time, so every
process started from one place shares one lake.

The sections live in config_kafka.py, config_sections.py and config_datasets.py; this
module is the one to import them from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, PrivateAttr, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from landfall.config_base import REVEAL_SECRETS, SecretSetting, absolute
from landfall.config_datasets import DatasetConfig, GateRule, ModelSpec
from landfall.config_kafka import (
    KafkaSecurity,
    KafkaSettings,
    LocalBrokerSettings,
    SchemaRegistryAuth,
    Topics,
    TopicSettings,
)
from landfall.config_sections import (
    API_TOKEN_MIN_CHARS,
    SPARK_SERVICE_NAMES,
    ApiSettings,
    ApiToken,
    FeaturizationSettings,
    HdfsSettings,
    MlflowSettings,
    ObjectStoreSettings,
    ReportingSettings,
    ResultsDbSettings,
    RunnerSettings,
    ScoringSettings,
    SparkServiceSettings,
    SparkSettings,
    SupervisionSettings,
    TelemetrySettings,
    ValidationSettings,
)
from landfall.config_sources import (
    ENV_PREFIX,
    NESTED_DELIMITER,
    EnvironmentSource,
    YamlFileSource,
    validation_problems,
)
from landfall.datasets import ColumnSpec, FeatureSpec, relative_to_lake
from landfall.errors import ConfigError
from landfall.redact import register_settings

__all__ = [
    "API_TOKEN_MIN_CHARS",
    "ApiSettings",
    "ApiToken",
    "ColumnSpec",
    "DatasetConfig",
    "ENV_PREFIX",
    "FeatureSpec",
    "FeaturizationSettings",
    "GateRule",
    "HdfsSettings",
    "KafkaSecurity",
    "KafkaSettings",
    "LocalBrokerSettings",
    "MlflowSettings",
    "ModelSpec",
    "ObjectStoreSettings",
    "REVEAL_SECRETS",
    "ReportingSettings",
    "ResultsDbSettings",
    "RunnerSettings",
    "SPARK_SERVICE_NAMES",
    "SchemaRegistryAuth",
    "ScoringSettings",
    "SecretSetting",
    "Settings",
    "SparkServiceSettings",
    "SparkSettings",
    "SupervisionSettings",
    "TelemetrySettings",
    "TopicSettings",
    "Topics",
    "ValidationSettings",
    "load_settings",
]


class Settings(BaseSettings):
    """All of landfall's settings (load them with :func:`load_settings`)."""

    model_config = SettingsConfigDict(
        # extra="forbid" makes a misspelt key an error; a validation error shows no
        # input values: they may be passwords.
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        # The defaults are frozen section models, valid by construction.
        validate_default=False,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        # An empty variable unsets a setting (None) rather than giving it "".
        env_parse_none_str="",
        case_sensitive=False,
    )

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
    validation: ValidationSettings = ValidationSettings()
    featurization: FeaturizationSettings = FeaturizationSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    api: ApiSettings = ApiSettings()
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)

    # Where each key of the settings file is: the line a runtime finding names.
    _file_lines: dict[tuple[int | str, ...], int] = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # The same values are the same settings, whichever file (and line) they came from.
        if not isinstance(other, Settings):
            return NotImplemented
        return self.__dict__ == other.__dict__

    # Never hashable: its sections hold dicts (pydantic's frozen hash failed on them too).
    __hash__ = None  # type: ignore[assignment]

    def setting_name(self, *loc: int | str) -> str:
        """A setting's dotted key, with its line when the settings file holds it:
        ``datasets.demo.rules.2.expr (line 14)``."""
        key = ".".join(str(part) for part in loc)
        for end in range(len(loc), 0, -1):
            if loc[:end] in self._file_lines:
                return f"{key} (line {self._file_lines[loc[:end]]})"
        return key

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(...) outside load_settings: its arguments over the checked
        # environment; no .env file, no secrets directory.
        return (init_settings, EnvironmentSource(settings_cls, os.environ))


def _clear(value: SecretStr | None) -> str | None:
    return (value.get_secret_value() or None) if value is not None else None


_LAKE_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LAKE_SCHEMES = ("file", "s3a", "s3", "s3n", "hdfs")


def _lake_root(root: str) -> str:
    """The configured lake root, checked: a local path made absolute, or a store's URI."""
    match = _LAKE_URI.match(root)
    if match is None:
        return str(absolute(Path(root)))
    scheme = match.group(1).lower()
    if scheme not in _LAKE_SCHEMES:
        raise ConfigError(
            f"lake_root {root!r}: the scheme {scheme}:// is not supported "
            f"(use a local path, file://, s3a://bucket/prefix or hdfs://namenode:port/path)"
        )
    if scheme == "file":
        return str(absolute(Path(root[len("file://") :])))
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


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from a YAML file (or ``$LANDFALL_CONFIG``) with env overrides."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    file_source = YamlFileSource(Settings, Path(path) if path else None)
    env_source = EnvironmentSource(Settings, environ)
    try:
        # BaseSettings' documented hook for sources built by the caller (this file, this
        # environ); it merges them in order, the first winning. mypy sees only the fields.
        settings = Settings(_build_sources=((env_source, file_source), {}))  # type: ignore[call-arg]
    except SettingsError as exc:  # a variable's value its setting cannot take at all
        raise ConfigError(f"invalid configuration ({path or 'defaults'}): {exc}") from exc
    except ValidationError as exc:
        problems = validation_problems(exc, env_source, file_source)
        raise ConfigError(f"invalid configuration ({path or 'defaults'}): {problems}") from exc
    return _resolved(settings, path, file_source)


def _resolved(settings: Settings, path: str | Path | None, file: YamlFileSource) -> Settings:
    """``settings`` with paths made absolute and the lake root checked, registered for redaction."""
    home = absolute(settings.home)
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
            line = file.line_of(("datasets", name, "raw_path"))
            at = f" (line {line})" if line else ""
            raise ConfigError(
                f"invalid configuration ({path or 'defaults'}): datasets.{name}.raw_path: {exc}{at}"
            ) from None
    loaded._file_lines = dict(getattr(file, "lines", {}))
    # Once per load: from now on this process masks these secrets wherever it writes.
    register_settings(loaded)
    return loaded
