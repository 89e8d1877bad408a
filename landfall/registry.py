"""MLflow model resolution: ``models:/name@alias`` -> one exact, registered version.

The alias is resolved once per batch, and the exact version is what gets loaded and
recorded everywhere, so a promotion during a batch never mixes two models in it.
Only the configured registry is consulted; no model URI ever comes from an event.
"""

from __future__ import annotations

from dataclasses import dataclass

from landfall.config import ModelSpec, Settings
from landfall.errors import RetryableError, StageFailedError

__all__ = ["ResolvedModel", "configure_mlflow", "mlflow_client", "resolve_model_version"]


@dataclass(frozen=True)
class ResolvedModel:
    """One exact registered model version."""

    name: str
    version: str
    alias: str
    run_id: str | None

    @property
    def uri(self) -> str:
        """The version-pinned URI to load (never the moving alias)."""
        return f"models:/{self.name}/{self.version}"


def mlflow_client(settings: Settings):  # type: ignore[no-untyped-def]
    """An MlflowClient on the configured tracking and registry URIs."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)


def resolve_model_version(settings: Settings, model: ModelSpec) -> ResolvedModel:
    """Resolve the model's alias to an exact version in the configured registry."""
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow_client(settings).get_model_version_by_alias(model.name, model.alias)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise StageFailedError(
                f"model {model.uri} cannot be resolved in the registry: {exc.message}"
            ) from exc
        raise RetryableError(f"the model registry did not answer for {model.uri}: {exc}") from exc
    except OSError as exc:
        raise RetryableError(f"the model registry is unreachable: {exc}") from exc
    return ResolvedModel(
        name=model.name, version=str(version.version), alias=model.alias, run_id=version.run_id
    )


def configure_mlflow(settings: Settings) -> None:
    """Point this process's MLflow at the configured registry (spark_udf reads it)."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
