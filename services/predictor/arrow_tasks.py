"""Scoring as Arrow-native Spark tasks: the predictor's default engine.

Spark schedules the work and pyarrow moves the data. The driver splits the feature
table's row groups into a few balanced tasks (``landfall.arrow_io.plan_tasks``); each task, in a
Spark Python worker, reads its row groups with pyarrow, scores them batch by batch with
the same per-batch code the spark_udf engine runs (``scorer.score_frame``) and writes
its own part file. Rows never pass through Spark's row format: reading, scoring and
writing a row costs what it costs in one pyarrow process, on every core of the cluster.

Model versions travel to the workers as zip archives (``SparkContext.addArchive``,
which works on a cluster as on a local master) and are loaded once per Python worker. A
task writes under a hidden name and renames when complete, so a retried or speculative
attempt never leaves a partial file where readers look.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from landfall.object_store import StoreSettings

from landfall.arrow_io import ArrowTask, part_file, release_unused_memory
from services.predictor.scorer import PREDICTION_COLUMN, ScorerPlan, load_for_scoring, score_frame

__all__ = [
    "ModelShipment",
    "TaskOutcome",
    "arrow_type",
    "output_schema",
    "run_task",
]

# Spark simple type names -> Arrow types, for model inputs and predictions.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def arrow_type(spark_type: str) -> pa.DataType:
    """The Arrow type a Spark simple type name is written as."""
    return _ARROW_TYPES[spark_type]


@dataclass(frozen=True)
class ModelShipment:
    """What a task needs to score with one model version: its files, plan and columns."""

    prefix: str  # "" for the champion, "challenger_" for the challenger
    name: str
    version: str
    uri: str
    files: str  # the name of the model's archive among the Spark files (unpacked there)
    plan: dict[str, Any]  # ScorerPlan.to_config()
    # The model's input columns and the Spark type each is widened to (None: as is).
    inputs: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class TaskOutcome:
    """What a task reports back: rows written and the champion/challenger tallies."""

    rows: int
    compared: int = 0  # rows both models scored
    measure: float = 0.0  # classifiers: rows they agree on; regressors: sum of |difference|


# The exact version on every row costs one dictionary entry per file, not a string per
# row; without pyarrow's schema in the file (store_schema=False) readers see strings.
_CONSTANT = pa.dictionary(pa.int32(), pa.string())
_MODEL_COLUMNS = ["model_name", "model_version", "model_uri"]


def output_schema(id_field: pa.Field, models: list[ModelShipment]) -> pa.Schema:
    """The prediction files' schema: the id, each model's outputs, its exact version."""
    fields = [id_field]
    for model in models:
        plan = ScorerPlan.from_config(model.plan)
        fields.append(pa.field(model.prefix + PREDICTION_COLUMN, arrow_type(plan.prediction_type)))
        fields += [pa.field(model.prefix + name, pa.float64()) for name in plan.probability_columns]
        constants = ["model_version", "model_uri"] if model.prefix else _MODEL_COLUMNS
        fields += [pa.field(model.prefix + name, _CONSTANT) for name in constants]
    return pa.schema(fields)


# ------------------------------------------------------------------ in the workers

# Loaded models by their Spark files name, kept while the Python worker lives (Spark
# reuses workers across tasks and batches); the least recently used go first.
_LOADED: dict[str, tuple[ScorerPlan, Any, Any]] = {}
_KEEP_LOADED = 4


def _load(model: ModelShipment) -> tuple[ScorerPlan, Any, Any]:
    loaded = _LOADED.pop(model.files, None)
    if loaded is None:
        from pyspark import SparkFiles

        pyfunc, raw = load_for_scoring(f"{SparkFiles.get(model.files)}/model")
        loaded = (ScorerPlan.from_config(model.plan), pyfunc, raw)
    _LOADED[model.files] = loaded  # now the most recently used
    while len(_LOADED) > _KEEP_LOADED:
        del _LOADED[next(iter(_LOADED))]
    return loaded


def _inputs(batch: pa.RecordBatch, model: ModelShipment) -> Any:
    """The model's input columns of one batch as pandas, widened as the driver decided."""
    arrays, names = [], []
    for name, spark_type in model.inputs:
        column = batch.column(name)
        if spark_type is not None and column.type != arrow_type(spark_type):
            # Spark's widening (ints to doubles and the like) never fails on a value.
            column = pc.cast(column, arrow_type(spark_type), safe=False)
        arrays.append(column)
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names).to_pandas()


def _constant(value: str, rows: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), [value])


def _scored_columns(
    model: ModelShipment, plan: ScorerPlan, scored: Any, rows: int, schema: pa.Schema
) -> list[pa.Array]:
    columns = [
        pa.array(scored[name], type=schema.field(model.prefix + name).type, from_pandas=True)
        for name in plan.output_columns
    ]
    constants = (
        [model.version, model.uri] if model.prefix else [model.name, model.version, model.uri]
    )
    return columns + [_constant(value, rows) for value in constants]


def _tally(champion: pa.Array, challenger: pa.Array, kind: str) -> tuple[int, float]:
    both = pc.and_(pc.is_valid(champion), pc.is_valid(challenger))
    compared = pc.sum(both).as_py() or 0
    if kind == "classifier":
        same = pc.equal(champion.cast(pa.string()), challenger.cast(pa.string()))
        return compared, float(pc.sum(pc.and_(both, same)).as_py() or 0)
    difference = pc.abs(pc.subtract(champion.cast(pa.float64()), challenger.cast(pa.float64())))
    return compared, float(pc.sum(pc.filter(difference, both)).as_py() or 0.0)


def _thread_limit(threads: int | None) -> Any:
    if threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    return threadpool_limits(threads)


def run_task(
    task: ArrowTask,
    models: list[ModelShipment],
    schema: pa.Schema,
    *,
    id_column: str,
    output: str,
    batch_rows: int,
    compression: str,
    model_threads: int | None,
    store: StoreSettings | None = None,
) -> TaskOutcome:
    """Score one task's row groups with every model and write its part file."""
    needed = [id_column, *dict.fromkeys(n for m in models for n, _ in m.inputs)]
    rows = compared = 0
    measure = 0.0
    kind = ScorerPlan.from_config(models[0].plan).kind
    try:
        with (
            _thread_limit(model_threads),
            part_file(output, task.index, schema, compression, store) as writer,
        ):
            for batch in task.batches(batch_rows, store, needed):
                columns: list[pa.Array] = [batch.column(id_column)]
                predictions = []
                for model in models:
                    plan, pyfunc, raw = _load(model)
                    scored = score_frame(plan, pyfunc, raw, _inputs(batch, model))
                    scored_columns = _scored_columns(model, plan, scored, batch.num_rows, schema)
                    predictions.append(scored_columns[0])
                    columns += scored_columns
                if len(predictions) > 1:
                    pair = _tally(predictions[0], predictions[1], kind)
                    compared += pair[0]
                    measure += pair[1]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
                rows += batch.num_rows
    finally:
        release_unused_memory()  # once the writer has closed, on failure as well
    return TaskOutcome(rows=rows, compared=compared, measure=measure)
