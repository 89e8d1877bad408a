"""Register a scikit-learn model trained in Python, with the signature the predictor checks.

What training code does at its end, in one call: log the fitted model with a signature
inferred from its training features (the input names and types the predictor and
`landfall check` hold the feature table to), its metrics on the logged model (what the
quality gate reads), register it under a name and point an alias at the new version.
The demo, the end-to-end benchmark and the tests train their models with it; a team
training elsewhere does the same with MLflow's own calls or `landfall model register`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from landfall.config import Settings
from landfall.registry import configure_mlflow, local_model_experiment, mlflow_client

__all__ = ["register_sklearn_model"]


def register_sklearn_model(
    settings: Settings,
    model: Any,
    features: Any,
    name: str,
    *,
    alias: str = "champion",
    experiment: str | None = None,
    run_name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    trusted_types: Sequence[str] = (),
) -> str:
    """Log ``model`` (fitted on the DataFrame ``features``) and register it as ``name@alias``.

    The signature's output is the model's ``predict`` on ``features`` as floats.
    ``trusted_types`` are the types skops may load beyond its defaults (a tree
    ensemble's predictor class, for one). Returns the new version.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    configure_mlflow(settings)
    # The experiment (created with its artifacts under home on a local store) first.
    mlflow.set_experiment(experiment_id=local_model_experiment(settings, experiment or name))
    with mlflow.start_run(run_name=run_name):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(features, model.predict(features).astype(float)),
            registered_model_name=name,
            **({"skops_trusted_types": list(trusted_types)} if trusted_types else {}),
        )
        if metrics:
            mlflow.log_metrics(dict(metrics), model_id=info.model_id)
    version = str(info.registered_model_version)
    mlflow_client(settings).set_registered_model_alias(name, alias, version)
    return version
