"""Featurization: the dataset's features, declared in config, computed in one Spark query.

Feature kinds (``landfall.datasets``): Spark SQL expressions, buckets, one-hot and
ordinal encodings over a fixed vocabulary, and date parts; reference tables in the lake
(a landfall zone, or any folder, as of the partition date or static) are joined first
so features can use their columns. Every feature column is a double, keyed by the
dataset's id column; its name comes from the feature's ``output_names()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import reduce
from operator import add
from pathlib import Path
from typing import TYPE_CHECKING

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException, ParseException, PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from landfall.config import DatasetConfig, FeaturizationSettings
from landfall.datasets import (
    BucketizeFeature,
    DatePartsFeature,
    ExpressionFeature,
    FeatureSpec,
    OneHotFeature,
    OrdinalFeature,
    ReferenceJoin,
    relative_to_lake,
)
from landfall.errors import StageFailedError
from landfall.lake import RUNS_DIR, Lake, LakePath
from landfall.stage import schema_fingerprint, spark_job_group, write_parquet
from services.featurizer.arrow_engine import arrow_recipe, featurize_with_arrow
from services.featurizer.arrow_tasks import UNSEEN_MARKER

if TYPE_CHECKING:
    from landfall.object_store import StoreSettings

__all__ = [
    "FeaturizationResult",
    "feature_columns",
    "feature_table_types",
    "featurize_partition",
    "join_references",
]


@dataclass(frozen=True)
class FeaturizationResult:
    """What one featurized partition holds."""

    rows: int
    features: list[str]
    schema: str
    references: dict[str, str]  # reference name -> the lake path used
    spark_jobs: int
    engine: str = "spark"  # which engine computed them: arrow or spark


def _unseen(feature: OneHotFeature | OrdinalFeature, column: Column, known: Column) -> Column:
    """An expression that fails the task on a value outside the vocabulary."""
    return F.when(
        column.isNotNull() & ~known,
        F.raise_error(
            F.concat(
                F.lit(f"{UNSEEN_MARKER}: feature {feature.name!r}: value "),
                column.cast("string"),
                F.lit(f" of column {feature.column!r} is not in its vocabulary"),
            )
        ),
    )


def feature_columns(feature: FeatureSpec) -> list[Column]:
    """The output column(s) of one feature, each a double named after it."""
    if isinstance(feature, ExpressionFeature):
        return [F.expr(feature.expr).cast("double").alias(feature.name)]
    source = F.col(f"`{feature.column}`")
    if isinstance(feature, BucketizeFeature):
        # The bucket index is how many split points the value reaches; null stays null.
        index = reduce(add, [(source >= split).cast("int") for split in feature.splits])
        return [index.cast("double").alias(feature.name)]
    if isinstance(feature, DatePartsFeature):
        moment = source.cast("timestamp")
        extract = {
            "year": F.year,
            "month": F.month,
            "day": F.dayofmonth,
            "dayofweek": F.dayofweek,
            "dayofyear": F.dayofyear,
            "hour": F.hour,
            "weekofyear": F.weekofyear,
        }
        return [
            extract[part](moment).cast("double").alias(f"{feature.name}_{part}")
            for part in feature.parts
        ]
    known = source.cast("string").isin(feature.vocabulary)
    if isinstance(feature, OneHotFeature):
        columns = [
            F.coalesce((source.cast("string") == value).cast("double"), F.lit(0.0)).alias(name)
            for value, name in zip(feature.vocabulary, feature.value_columns(), strict=True)
        ]
        if feature.unseen == "other":
            other = (source.isNotNull() & ~known).cast("double")
            columns.append(other.alias(f"{feature.name}_other"))
        elif feature.unseen == "error":
            # Riding on the first column keeps the check inside the same single pass.
            guarded = F.coalesce(_unseen(feature, source, known), columns[0])
            columns[0] = guarded.alias(feature.value_columns()[0])
        return columns
    assert isinstance(feature, OrdinalFeature)
    positions = F.create_map(
        *[item for i, v in enumerate(feature.vocabulary) for item in (F.lit(v), F.lit(float(i)))]
    )
    position = F.coalesce(positions[source.cast("string")], F.lit(feature.unseen_value))
    if feature.unseen == "error":
        position = F.coalesce(_unseen(feature, source, known), position)
    return [position.cast("double").alias(feature.name)]


def feature_table_types(dataset: DatasetConfig) -> dict[str, str]:
    """The feature table's columns and Spark types, as ``featurize_partition`` writes them.

    Known from the config alone, without Spark or data: the id column keeps its
    declared type, and each feature's ``output_names()`` are doubles (``feature_columns``
    casts every one). The predictor checks its models against this before any batch.
    """
    id_type = next(c.type for c in dataset.columns if c.name == dataset.id_column)
    table = {dataset.id_column: str(id_type)}
    for feature in dataset.features:
        table.update(dict.fromkeys(feature.output_names(), "double"))
    return table


def _reference_folder(lake: Lake, reference: ReferenceJoin, partition: str) -> LakePath:
    """The folder a reference is read from for one batch: as of its partition, or static."""
    if reference.path is not None:
        template = relative_to_lake(reference.path, lake.uri)
        if "{partition}" not in template:
            static = lake.path(template)
            if not static.is_dir():
                raise StageFailedError(
                    f"reference {reference.name!r}: {template} does not exist in the lake",
                    retryable=True,  # it may land later
                )
            return static
        available = lake.template_partitions(template)
        where = template
    elif reference.zone == "raw":  # landed data, where the dataset's raw_path puts it
        available = lake.template_partitions(
            lake.raw_path_template(reference.dataset or ""), dataset=reference.dataset or ""
        )
        where = f"{reference.dataset} (raw)"
    else:
        zone_dir = lake.root / f"{reference.dataset}" / reference.zone
        # Folders written there outside landfall: read as they are.
        available = {
            p.name: p
            for p in zone_dir.iterdir()
            if not p.name.startswith(("_", ".")) and p.is_dir() and not (p / RUNS_DIR).exists()
        }
        # Landfall's own outputs: each partition's committed one.
        available |= lake.committed_partitions(f"{reference.dataset}", reference.zone)  # type: ignore[arg-type]
        where = f"{reference.dataset}/{reference.zone}"
    candidates = sorted(name for name in available if name <= partition)
    if not candidates:
        raise StageFailedError(
            f"reference {reference.name!r}: no partition of {where} at or before {partition}",
            retryable=True,  # it may land later
        )
    return available[candidates[-1]]


def _read_reference(spark: SparkSession, reference: ReferenceJoin, path: LakePath) -> DataFrame:
    if reference.format == "csv":
        # A reference's types come from its file: keys must compare with the batch's.
        return spark.read.option("header", True).option("inferSchema", True).csv(str(path))
    if reference.format == "json":
        return spark.read.json(str(path))
    return spark.read.parquet(str(path))


def join_references(
    spark: SparkSession,
    frame: DataFrame,
    lake: Lake,
    references: list[ReferenceJoin],
    partition: str,
) -> tuple[DataFrame, dict[str, str]]:
    """Left-join each reference table on its keys; refuse references with duplicate keys."""
    used = {}
    for reference in references:
        path = _reference_folder(lake, reference, partition)
        table = _read_reference(spark, reference, path)
        missing = [c for c in [*reference.keys, *reference.columns] if c not in table.columns]
        missing += [f"{c} (in the batch)" for c in reference.keys if c not in frame.columns]
        if missing:
            raise StageFailedError(
                f"reference {reference.name!r} ({path.rel}): missing column(s) {', '.join(missing)}"
            )
        # A key that repeats in the reference would multiply the batch's rows.
        duplicated = table.groupBy(*reference.keys).count().filter("count > 1").limit(1).collect()
        if duplicated:
            raise StageFailedError(
                f"reference {reference.name!r} ({path.rel}) has duplicate keys, e.g. "
                f"{ {k: duplicated[0][k] for k in reference.keys} }"
            )
        brought = [F.col(f"`{c}`").alias(f"{reference.prefix}{c}") for c in reference.columns]
        frame = frame.join(table.select(*reference.keys, *brought), on=reference.keys, how="left")
        used[reference.name] = lake.relative(path)
    return frame, used


def _analysed_features(dataset: DatasetConfig, frame: DataFrame) -> list[list[Column]]:
    """Each feature's Spark columns, analysed one by one (no job) so an error names it."""
    produced = []
    for index, feature in enumerate(dataset.features):
        try:
            columns = feature_columns(feature)
            frame.select(*columns)
        except (ParseException, AnalysisException) as exc:
            detail = str(exc).strip().splitlines()[0]
            raise StageFailedError(
                f"feature {feature.name!r} does not fit the validated data: {detail}",
                setting=("features", index, "expr" if feature.kind == "expr" else "column"),
            ) from exc
        produced.append(columns)
    return produced


def _unseen_failure(exc: Exception) -> StageFailedError | None:
    """The batch's error when a task failed on a value outside a vocabulary."""
    message = str(exc)
    if UNSEEN_MARKER not in message:
        return None
    detail = message[message.index(UNSEEN_MARKER) + len(UNSEEN_MARKER) + 2 :]
    # Spark appends the error's SQL state to the line: not the user's business.
    return StageFailedError(re.sub(r"\s*SQLSTATE: \w+$", "", detail.splitlines()[0]))


def featurize_partition(
    spark: SparkSession,
    dataset: DatasetConfig,
    valid_path: LakePath | Path,
    features_path: LakePath | Path,
    *,
    lake: Lake | None = None,
    partition: str | None = None,
    settings: FeaturizationSettings | None = None,
    store: StoreSettings | None = None,
) -> FeaturizationResult:
    """Compute the configured features of validated rows, keyed by the id column.

    ``settings.engine`` picks the engine (arrow_engine.py says when arrow can);
    ``store``: the object store's (or HDFS's) settings when the lake is in one.
    """
    settings = settings or FeaturizationSettings()
    with spark_job_group(spark, "featurize") as jobs:
        frame = spark.read.parquet(str(valid_path))
        references: dict[str, str] = {}
        if dataset.feature_set.references:
            if lake is None or partition is None:
                raise StageFailedError("reference joins need the lake and the partition")
            frame, references = join_references(
                spark, frame, lake, dataset.feature_set.references, partition
            )
        produced = _analysed_features(dataset, frame)
        id_column = F.col(f"`{dataset.id_column}`")
        table = frame.select(id_column, *[c for columns in produced for c in columns])
        names = [field.name for field in table.schema.fields[1:]]
        recipe = arrow_recipe(dataset, frame, produced, settings)
        try:
            if recipe is not None:
                rows = featurize_with_arrow(
                    spark, recipe, table.schema.fields[0].name, names,
                    valid_path, features_path, settings, store,
                )  # fmt: skip
            else:
                write_parquet(table, features_path)
                # The count comes from the written files, not a second pass.
                rows = spark.read.parquet(str(features_path)).count()
        except (PySparkException, Py4JJavaError) as exc:
            failure = _unseen_failure(exc)
            if failure is not None:
                raise failure from exc
            raise
        return FeaturizationResult(
            rows=rows,
            features=names,
            schema=schema_fingerprint(table),
            references=references,
            spark_jobs=jobs(),
            engine="spark" if recipe is None else "arrow",
        )
