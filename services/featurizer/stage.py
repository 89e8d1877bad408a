"""Featurization: the dataset's features, each a Spark SQL expression from config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from landfall.config import DatasetConfig
from landfall.errors import StageFailedError
from landfall.stage import schema_fingerprint

__all__ = ["FeaturizationResult", "featurize_partition"]


@dataclass(frozen=True)
class FeaturizationResult:
    """What one featurized partition holds."""

    rows: int
    features: list[str]
    schema: str


def featurize_partition(
    spark: SparkSession, dataset: DatasetConfig, valid_path: Path, features_path: Path
) -> FeaturizationResult:
    """Compute the configured features of validated rows, keyed by the id column."""
    valid = spark.read.parquet(str(valid_path))
    columns = [F.col(f"`{dataset.id_column}`")]
    for feature in dataset.features:
        column = F.expr(feature.expr).cast("double").alias(feature.name)
        try:
            # Analysing each expression alone (no Spark job) lets the error name it.
            valid.select(column)
        except (ParseException, AnalysisException) as exc:
            raise StageFailedError(
                f"feature {feature.name!r}: expression {feature.expr!r} does not fit the "
                f"validated data: {str(exc).strip().splitlines()[0]}"
            ) from exc
        columns.append(column)
    table = valid.select(*columns)
    table.write.mode("overwrite").parquet(str(features_path))
    # The row count comes from the written files' metadata-backed scan, not a second
    # pass over the expressions.
    rows = spark.read.parquet(str(features_path)).count()
    return FeaturizationResult(
        rows=rows, features=[f.name for f in dataset.features], schema=schema_fingerprint(table)
    )
