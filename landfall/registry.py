"""The MLflow model registry: resolution, registered metrics, the quality gate, promotion.

The alias is resolved once per batch, and the exact version is what gets loaded and
recorded everywhere, so a promotion during a batch never mixes two models in it.
Only the configured registry is consulted; no model URI ever comes from an event: a
pinned version is a version *number* of the dataset's configured model.

A version's *registered metrics* are the metrics of its MLflow logged model (what
``landfall model register --metric`` records, or ``mlflow.log_metric(..., model_id=)``),
falling back, name by name, to the metrics of the run that produced it (what training
code that predates MLflow 3's logged models records). The quality gate of a dataset
(``model.gate`` in config) bounds these; a version lacking a gated metric fails it.

Registry failures are translated at this boundary: a model, version or alias that does
not exist is a ``StageFailedError`` (a retry cannot help); anything else the registry
does, or fails to do (a refused connection, a timeout, a server error), is a
``RetryableError``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from landfall.config import GateRule, ModelSpec, Settings
from landfall.errors import RetryableError, StageFailedError

__all__ = [
    "GateCheck",
    "ResolvedModel",
    "VersionSummary",
    "check_gate",
    "configure_mlflow",
    "datasets_serving",
    "enforce_gate",
    "list_versions",
    "local_model_experiment",
    "mlflow_client",
    "promote_version",
    "register_model",
    "registered_metrics",
    "resolve_model_version",
    "translate_registry_errors",
]

T = TypeVar("T")

# Error codes meaning "no such thing": retrying cannot make it appear.
_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})
# The runner owns retries (bounded, with backoff); MLflow's own HTTP retries would
# otherwise hold a batch for minutes on an unreachable server. The environment wins.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
LOCAL_MODEL_EXPERIMENT = "landfall-registry"


@dataclass(frozen=True)
class ResolvedModel:
    """One exact registered model version, and how it was chosen."""

    name: str
    version: str
    alias: str | None  # None: the version was pinned for the batch, not resolved
    run_id: str | None
    source: str | None = None

    @property
    def uri(self) -> str:
        """The version-pinned URI to load (never the moving alias)."""
        return f"models:/{self.name}/{self.version}"

    @property
    def pinned(self) -> bool:
        """Whether the version was pinned for the batch rather than resolved from an alias."""
        return self.alias is None

    def describe(self) -> dict[str, Any]:
        """The manifest's record of this model."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "pinned": self.pinned,
            "uri": self.uri,
            "run_id": self.run_id,
            "source": self.source,
        }


@dataclass(frozen=True)
class GateCheck:
    """One gate rule against one version's registered metric value."""

    rule: GateRule
    value: float | None

    @property
    def passed(self) -> bool:
        """Whether the value is present and within the rule's bounds."""
        if self.value is None:
            return False
        low, high = self.rule.min, self.rule.max
        return (low is None or self.value >= low) and (high is None or self.value <= high)

    def explain(self) -> str:
        """E.g. ``accuracy 0.71 is below the minimum 0.8``."""
        rule, value = self.rule, self.value
        if value is None:
            return (
                f"{rule.metric} is not among the version's registered metrics ({rule.describe()})"
            )
        if rule.min is not None and value < rule.min:
            return f"{rule.metric} {value:g} is below the minimum {rule.min:g}"
        if rule.max is not None and value > rule.max:
            return f"{rule.metric} {value:g} is above the maximum {rule.max:g}"
        return f"{rule.metric} {value:g} passes ({rule.describe()})"

    def describe(self) -> dict[str, Any]:
        """The manifest's record of this check."""
        return {
            "metric": self.rule.metric,
            "value": self.value,
            "min": self.rule.min,
            "max": self.rule.max,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class VersionSummary:
    """What ``landfall model list`` shows of one version."""

    name: str
    version: str
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    registered_at: datetime
    run_id: str | None
    source: str | None
    status: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- clients


def _bound_http_retries() -> None:
    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def mlflow_client(settings: Settings):  # type: ignore[no-untyped-def]
    """An MlflowClient on the configured tracking and registry URIs."""
    from mlflow.tracking import MlflowClient

    _bound_http_retries()
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def configure_mlflow(settings: Settings) -> None:
    """Point this process's MLflow at the configured registry (spark_udf reads it)."""
    import mlflow

    _bound_http_retries()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)


def translate_registry_errors(what: str, call: Callable[[], T]) -> T:
    """Run one registry call, translating its failures into landfall's vocabulary."""
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in _NOT_FOUND:
            raise StageFailedError(
                f"{what}: {exc.message}", details={"registry_error": str(exc.error_code)}
            ) from exc
        raise RetryableError(f"the model registry failed on {what}: {exc.message}") from exc
    except OSError as exc:
        raise RetryableError(f"the model registry is unreachable for {what}: {exc}") from exc


# ------------------------------------------------------------------------- resolution


def resolve_model_version(
    settings: Settings, model: ModelSpec, *, alias: str | None = None, version: str | None = None
) -> ResolvedModel:
    """The exact version a batch uses: ``version`` if pinned, else what the alias names now.

    ``alias`` defaults to the spec's (the champion's); a pinned ``version`` must be a
    version number of the spec's model, never a URI.
    """
    client = mlflow_client(settings)
    if version is not None:
        if not str(version).strip().isdigit():
            raise StageFailedError(
                f"a pinned model version must be a version number of {model.name}, got {version!r}",
                details={"model_name": model.name, "pinned_version": str(version)},
            )
        pinned = str(int(str(version).strip()))
        found = translate_registry_errors(
            f"model {model.name} version {pinned} cannot be resolved in the registry",
            lambda: client.get_model_version(model.name, pinned),
        )
        return _resolved(model.name, found, alias=None)
    alias = alias or model.alias
    found = translate_registry_errors(
        f"model models:/{model.name}@{alias} cannot be resolved in the registry",
        lambda: client.get_model_version_by_alias(model.name, alias),
    )
    return _resolved(model.name, found, alias=alias)


def _resolved(name: str, found: Any, *, alias: str | None) -> ResolvedModel:
    """The registry's version record as the exact version a batch uses."""
    return ResolvedModel(
        name=name, version=str(found.version), alias=alias, run_id=found.run_id, source=found.source
    )


def _logged_model_id(source: str | None, model_id: str | None) -> str | None:
    if model_id:
        return model_id
    # MLflow 3 registers logged models by their own URI, models:/m-<id>.
    if source and source.startswith("models:/m-") and "/" not in source[len("models:/") :]:
        return source[len("models:/") :]
    return None


def _latest(metrics: Iterable[Any]) -> dict[str, float]:
    """The latest value of each metric key (by step, then timestamp)."""
    best: dict[str, tuple[int, int, float]] = {}
    for metric in metrics:
        rank = (int(metric.step or 0), int(metric.timestamp or 0), float(metric.value))
        if metric.key not in best or rank[:2] >= best[metric.key][:2]:
            best[metric.key] = rank
    return {key: value for key, (_s, _t, value) in best.items()}


def registered_metrics(settings: Settings, name: str, version: str) -> dict[str, float]:
    """A version's registered metrics: its logged model's, then its source run's."""
    client = mlflow_client(settings)
    found = translate_registry_errors(
        f"model {name} version {version} cannot be found in the registry",
        lambda: client.get_model_version(name, version),
    )
    metrics: dict[str, float] = {}
    if found.run_id:
        try:
            run = translate_registry_errors(
                f"run {found.run_id} of model {name} version {version}",
                lambda: client.get_run(found.run_id),
            )
            metrics.update({k: float(v) for k, v in run.data.metrics.items()})
        except StageFailedError:
            pass  # a deleted run has no metrics to give; the logged model may still have some
    model_id = _logged_model_id(found.source, getattr(found, "model_id", None))
    if model_id:
        try:
            logged = translate_registry_errors(
                f"logged model {model_id} of model {name} version {version}",
                lambda: client.get_logged_model(model_id),
            )
            metrics.update(_latest(logged.metrics or []))
        except StageFailedError:
            pass
    return metrics


# ------------------------------------------------------------------------ the gate


def check_gate(rules: Iterable[GateRule], metrics: Mapping[str, float]) -> list[GateCheck]:
    """Each gate rule checked against the registered metrics."""
    return [GateCheck(rule, metrics.get(rule.metric)) for rule in rules]


def enforce_gate(
    settings: Settings, spec: ModelSpec, model: ResolvedModel, *, dataset: str
) -> list[GateCheck]:
    """Check ``model`` against the dataset's gate; a failure is a ``StageFailedError``."""
    if not spec.gate:
        return []
    checks = check_gate(spec.gate, registered_metrics(settings, model.name, model.version))
    failed = [c for c in checks if not c.passed]
    if failed:
        raise StageFailedError(
            f"model {model.name} version {model.version} fails the quality gate of dataset "
            f"{dataset}: " + "; ".join(c.explain() for c in failed),
            details={
                "model_name": model.name,
                "model_version": model.version,
                **{
                    f"gate.{c.rule.metric}": f"{'missing' if c.value is None else f'{c.value:g}'}"
                    f" (required {c.rule.describe().removeprefix(c.rule.metric).strip()})"
                    for c in failed
                },
            },
        )
    return checks


def datasets_serving(settings: Settings, name: str, alias: str) -> dict[str, ModelSpec]:
    """The datasets whose configured model is ``name`` at ``alias`` (champion or challenger)."""
    return {
        dataset: config.model
        for dataset, config in sorted(settings.datasets.items())
        if config.model.name == name and alias in (config.model.alias, config.model.challenger)
    }


# ----------------------------------------------------------------- registry commands


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def local_model_experiment(settings: Settings, experiment: str) -> str:
    """The id of ``experiment``, created if missing (artifacts under home on a local store)."""
    import mlflow

    client = mlflow_client(settings)
    found = translate_registry_errors(
        f"experiment {experiment}", lambda: client.get_experiment_by_name(experiment)
    )
    if found is not None:
        return str(found.experiment_id)
    # A local store keeps artifacts under home, not wherever the CLI was started.
    location = (
        (settings.home / "mlartifacts").as_uri() if _is_local_store(settings.tracking_uri) else None
    )
    configure_mlflow(settings)
    return str(
        translate_registry_errors(
            f"creating experiment {experiment}",
            lambda: mlflow.create_experiment(experiment, artifact_location=location),
        )
    )


def register_model(
    settings: Settings,
    source: str,
    name: str,
    *,
    metrics: Mapping[str, float] | None = None,
    experiment: str = LOCAL_MODEL_EXPERIMENT,
) -> VersionSummary:
    """Register a logged model (``runs:/...``, ``models:/m-...``) or a local model directory.

    ``metrics`` are recorded on the version's logged model (and so on its run), where
    the quality gate reads them.
    """
    import mlflow
    from mlflow.entities import LoggedModelStatus

    configure_mlflow(settings)
    client = mlflow_client(settings)
    metrics = dict(metrics or {})
    local = Path(source).expanduser()
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", source):  # no URI scheme: a local path
        if not (local / "MLmodel").is_file():
            raise StageFailedError(f"{source} is not an MLflow model directory (no MLmodel file)")
        experiment_id = local_model_experiment(settings, experiment)

        def log_local() -> str:
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{name}") as run:
                logged = client.create_logged_model(
                    experiment_id, name=name, source_run_id=run.info.run_id
                )
                client.log_model_artifacts(logged.model_id, str(local.resolve()))
                client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            return str(logged.model_id)

        source = "models:/" + translate_registry_errors(f"logging {local} as a model", log_local)
    elif not source.startswith(("runs:/", "models:/m-")):
        raise StageFailedError(
            f"cannot register {source!r}: give runs:/<run_id>/<path>, models:/m-<model_id> "
            "or a local MLflow model directory"
        )
    created = translate_registry_errors(
        f"registering {source} as {name}", lambda: mlflow.register_model(source, name)
    )
    version = str(created.version)
    if metrics:
        model_id = _logged_model_id(created.source, getattr(created, "model_id", None))
        run_id = created.run_id
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if run_id is None:
                raise StageFailedError(
                    f"{name} version {version} has no run to record metric {key} on"
                )
            translate_registry_errors(
                f"recording metric {key} on {name} version {version}",
                lambda key=key, value=value: client.log_metric(  # type: ignore[misc]
                    run_id, key, float(value), timestamp=now, step=0, model_id=model_id
                ),
            )
    return _summary(settings, client, name, version)


def _summary(settings: Settings, client: Any, name: str, version: str) -> VersionSummary:
    found = translate_registry_errors(
        f"model {name} version {version} cannot be found in the registry",
        lambda: client.get_model_version(name, version),
    )
    return VersionSummary(
        name=name,
        version=str(found.version),
        aliases=tuple(sorted(found.aliases or [])),
        metrics=registered_metrics(settings, name, str(found.version)),
        registered_at=datetime.fromtimestamp(found.creation_timestamp / 1000, tz=UTC),
        run_id=found.run_id,
        source=found.source,
        status=found.status,
        tags=dict(found.tags or {}),
    )


def promote_version(
    settings: Settings,
    name: str,
    version: str,
    alias: str,
    *,
    force: bool = False,
    datasets: Iterable[str] | None = None,
) -> tuple[VersionSummary, dict[str, list[GateCheck]]]:
    """Point ``alias`` at ``version``, unless it fails a gate of a dataset that uses it.

    The gates checked are those of ``datasets`` when given, else of every configured
    dataset whose model is ``name`` at ``alias`` (as champion or challenger). ``force``
    records the checks but moves the alias anyway; the predictor still enforces its
    dataset's gate on the champion at scoring time.
    """
    client = mlflow_client(settings)
    if not str(version).isdigit():
        raise StageFailedError(f"a model version is a number, got {version!r}")
    translate_registry_errors(
        f"model {name} version {version} cannot be found in the registry",
        lambda: client.get_model_version(name, version),
    )
    if datasets is None:
        specs = datasets_serving(settings, name, alias)
    else:
        specs = {d: settings.dataset(d).model for d in datasets}
        wrong = sorted(d for d, spec in specs.items() if spec.name != name)
        if wrong:
            raise StageFailedError(
                f"dataset(s) {', '.join(wrong)} are not scored by {name}; their gates do not apply"
            )
    metrics = registered_metrics(settings, name, version)
    checks = {dataset: check_gate(spec.gate, metrics) for dataset, spec in specs.items()}
    failures = [
        f"dataset {dataset}: {c.explain()}"
        for dataset, results in checks.items()
        for c in results
        if not c.passed
    ]
    if failures and not force:
        raise StageFailedError(
            f"{name} version {version} fails the quality gate, so @{alias} stays where it is "
            f"(--force overrides): " + "; ".join(failures)
        )
    translate_registry_errors(
        f"setting {name}@{alias} to version {version}",
        lambda: client.set_registered_model_alias(name, alias, version),
    )
    return _summary(settings, client, name, version), checks


def list_versions(settings: Settings, name: str) -> list[VersionSummary]:
    """Every version of a registered model, newest first."""
    if "'" in name:
        raise StageFailedError(f"a registered model name has no quotes, got {name!r}")
    client = mlflow_client(settings)
    translate_registry_errors(
        f"registered model {name} cannot be found", lambda: client.get_registered_model(name)
    )
    versions = translate_registry_errors(
        f"versions of {name}",
        lambda: client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"]),
    )
    return [_summary(settings, client, name, str(v.version)) for v in versions]
