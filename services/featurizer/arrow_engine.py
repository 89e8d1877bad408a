"""The featurizer's arrow engine, driver side: can it compute the features, and running it.

Spark computes 5M rows of the bench's 32 features in about 2.6 s on two cores, then
spends 8 s writing them with its parquet writer; pyarrow writes the same table in
about 2 s. So when every feature can be computed exactly as Spark computes it, the
features are computed and written by arrow tasks (arrow_tasks.py), as the validator
and the predictor do.

Exactly as Spark: an ``expr`` feature is first analysed by Spark (no job), and its
analysed tree, with Spark's implicit casts and folded constants, is taken only when it
is double arithmetic (``+``, ``-``, ``*``, unary minus, ``abs``) over numeric columns.
Division (a zero divisor fails the query in ANSI mode), functions, and integer
arithmetic (overflow) stay with Spark, as do date parts (time zones) and reference
joins. :func:`arrow_recipe` says which, or returns the recipe.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from landfall.arrow_io import arrow_location, location_of, plan_tasks
from landfall.config import DatasetConfig, FeaturizationSettings
from landfall.datasets import (
    BucketizeFeature,
    ExpressionFeature,
    FeatureSpec,
    OneHotFeature,
    OrdinalFeature,
)
from landfall.errors import StageFailedError
from landfall.lake import LakePath
from services.featurizer.arrow_tasks import ArrowFeature, FeaturePlan, Term, run_task

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from landfall.object_store import StoreSettings

__all__ = ["arrow_recipe", "featurize_with_arrow"]

_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double")
_CATEGORY = ("string", "tinyint", "smallint", "int", "bigint")  # cast to string alike
_ID_TYPES = ("string", "tinyint", "smallint", "int", "bigint", "date")
_BINARY = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply"}
_UNARY = {"UnaryMinus": "negate", "Abs": "abs"}


class _Untranslatable(Exception):
    """An analysed expression the tasks cannot compute as Spark does."""


def _term(node: Any) -> Term:
    """The task's form of one analysed Catalyst expression (a py4j object)."""
    kind = node.nodeName()
    data_type = node.dataType().simpleString()
    children = [node.children().apply(i) for i in range(node.children().size())]
    if kind == "Alias":
        return _term(children[0])
    # A sign change is exact in any width: float's then widened equals double's.
    exact = data_type == "double" or (kind in _UNARY and data_type == "float")
    if not exact and kind != "AttributeReference":
        raise _Untranslatable(f"{kind} of type {data_type}")
    if node.foldable():  # constants, casts of constants: Spark computes them itself
        return ("constant", node.eval(None))
    if kind == "AttributeReference":
        if data_type not in _NUMERIC:
            raise _Untranslatable(f"column {node.name()} of type {data_type}")
        return ("column", node.name())
    if kind == "Cast":
        source = children[0].dataType().simpleString()
        if source not in _NUMERIC:
            raise _Untranslatable(f"a cast from {source}")
        return _term(children[0])  # a task reads every column as a double
    if kind in _BINARY:
        return (_BINARY[kind], _term(children[0]), _term(children[1]))
    if kind in _UNARY:
        return (_UNARY[kind], _term(children[0]))
    raise _Untranslatable(kind)


def _expression_term(frame: DataFrame, column: Column) -> Term:
    analysed = frame.select(column)._jdf.queryExecution().analyzed()
    return _term(analysed.projectList().apply(0))


def _refused(feature: FeatureSpec, index: int, why: str) -> StageFailedError:
    return StageFailedError(
        f"featurization.engine arrow cannot compute feature {feature.name!r}: {why} "
        "(use auto or spark)",
        setting=("features", index),
    )


def _recipe(
    feature: FeatureSpec, index: int, frame: DataFrame, column: Column, types: Mapping[str, str]
) -> ArrowFeature:
    if isinstance(feature, ExpressionFeature):
        try:
            term = _expression_term(frame, column)
        except _Untranslatable as exc:
            raise _refused(feature, index, f"only Spark computes {exc}") from None
        return ArrowFeature(feature.name, "expr", term=term)
    if not isinstance(feature, BucketizeFeature | OneHotFeature | OrdinalFeature):
        raise _refused(feature, index, f"only Spark computes {feature.kind} features")
    source = types.get(feature.column, "")
    if isinstance(feature, BucketizeFeature):
        if source not in _NUMERIC:
            raise _refused(feature, index, f"its column is {source}")
        return ArrowFeature(feature.name, "bucketize", feature.column, splits=tuple(feature.splits))
    if source not in _CATEGORY:
        raise _refused(feature, index, f"its column is {source}")
    if len(set(feature.vocabulary)) != len(feature.vocabulary):
        raise _refused(feature, index, "its vocabulary repeats a value")
    unseen_value = feature.unseen_value if isinstance(feature, OrdinalFeature) else -1.0
    return ArrowFeature(
        feature.name,
        feature.kind,
        feature.column,
        vocabulary=tuple(feature.vocabulary),
        unseen=feature.unseen,
        unseen_value=unseen_value,
    )


def arrow_recipe(
    dataset: DatasetConfig,
    frame: DataFrame,
    produced: list[list[Column]],
    settings: FeaturizationSettings,
) -> tuple[ArrowFeature, ...] | None:
    """The arrow tasks' recipe for every feature, or None when Spark must compute them.

    ``frame``: the validated rows as Spark reads them; ``produced``: each feature's
    Spark columns (featurizer.stage.feature_columns). With ``engine: arrow``, a feature
    the tasks cannot compute fails the batch, naming it.
    """
    if settings.engine == "spark":
        return None
    try:
        types = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
        if dataset.feature_set.references:
            raise StageFailedError(
                "featurization.engine arrow cannot join reference tables (use auto or spark)",
                setting=("feature_set", "references"),
            )
        if types.get(dataset.id_column) not in _ID_TYPES:
            raise StageFailedError(
                f"featurization.engine arrow cannot carry an id column of type "
                f"{types.get(dataset.id_column)} (use auto or spark)",
                setting=("id_column",),
            )
        return tuple(
            _recipe(feature, index, frame, columns[0], types)
            for index, (feature, columns) in enumerate(zip(dataset.features, produced, strict=True))
        )
    except StageFailedError:
        if settings.engine == "arrow":
            raise
        return None


def _read_columns(id_column: str, recipe: tuple[ArrowFeature, ...]) -> tuple[str, ...]:
    def columns(term: Term) -> list[str]:
        if term[0] == "column":
            return [term[1]]
        return [name for operand in term[1:] if isinstance(operand, tuple)
                for name in columns(operand)]  # fmt: skip

    needed = [id_column]
    for feature in recipe:
        needed += columns(feature.term) if feature.term is not None else [feature.column or ""]
    return tuple(dict.fromkeys(needed))


def featurize_with_arrow(
    spark: SparkSession,
    recipe: tuple[ArrowFeature, ...],
    id_column: str,
    output_names: list[str],
    valid_path: LakePath | Path,
    features_path: LakePath | Path,
    settings: FeaturizationSettings,
    store: StoreSettings | None = None,
) -> int:
    """Compute and write the feature table with arrow tasks; the rows written."""
    context = spark.sparkContext
    tasks, schema = plan_tasks(
        location_of(valid_path), context.defaultParallelism, settings.rows_per_task, store
    )
    output = location_of(features_path)
    filesystem, folder = arrow_location(output, store)
    filesystem.create_dir(folder, recursive=True)
    filesystem.delete_dir_contents(folder, missing_dir_ok=True)  # Spark's overwrite, too
    table_schema = pa.schema(
        [schema.field(id_column), *[pa.field(name, pa.float64()) for name in output_names]]
    )
    codec = spark.conf.get("spark.sql.parquet.compression.codec", "snappy") or "snappy"
    plan = FeaturePlan(
        id_column=id_column,
        features=recipe,
        read_columns=_read_columns(id_column, recipe),
        schema=table_schema,
        output_dir=output,
        batch_rows=settings.batch_rows,
        compression="none" if codec in ("none", "uncompressed") else codec,
    )
    run = functools.partial(run_task, plan=plan, store=store)
    return sum(context.parallelize(tasks, len(tasks)).map(run).collect())
