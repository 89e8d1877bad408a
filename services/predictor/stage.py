"""Scoring: a registered MLflow model over a feature table, keyed by record id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from landfall.config import DatasetConfig
from landfall.errors import StageFailedError
from landfall.registry import ResolvedModel
from landfall.stage import schema_fingerprint

__all__ = ["PREDICTION_COLUMN", "PredictionResult", "score_partition"]

PREDICTION_COLUMN = "prediction"


@dataclass(frozen=True)
class PredictionResult:
    """What one scored partition holds."""

    rows: int
    schema: str


def _model_inputs(model_uri: str, dataset: DatasetConfig) -> list[str]:
    """The columns the model takes, in its signature's order (else the configured features)."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return [f.name for f in dataset.features]
    return list(signature.inputs.input_names())


def score_partition(
    spark: SparkSession,
    dataset: DatasetConfig,
    model: ResolvedModel,
    features_path: Path,
    predictions_path: Path,
) -> PredictionResult:
    """Score every feature row with the exact model version; one prediction per id."""
    import mlflow.pyfunc

    features = spark.read.parquet(str(features_path))
    inputs = _model_inputs(model.uri, dataset)
    missing = [c for c in inputs if c not in features.columns]
    if missing:
        raise StageFailedError(
            f"model {model.uri} needs column(s) {', '.join(missing)} that the feature table "
            f"lacks (it has {', '.join(features.columns)})"
        )
    # env_manager="local": the service's own environment already has the model's
    # packages, and building a fresh one would need the network.
    predict = mlflow.pyfunc.spark_udf(spark, model.uri, result_type="double", env_manager="local")
    # Each prediction stays on the row of the id it belongs to: no join is needed,
    # so the output has exactly one row per feature row.
    scored = features.select(
        F.col(f"`{dataset.id_column}`"),
        predict(*[F.col(f"`{c}`") for c in inputs]).alias(PREDICTION_COLUMN),
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
    )
    scored.write.mode("overwrite").parquet(str(predictions_path))
    rows = spark.read.parquet(str(predictions_path)).count()
    return PredictionResult(rows=rows, schema=schema_fingerprint(scored))
