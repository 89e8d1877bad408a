"""The featurizer's arrow engine, task side: one task's features computed with pyarrow.

A task reads its share of the validated table's row groups (only the columns the
features use), computes every feature column batch by batch and writes its own part
file (landfall.arrow_io.part_file). The recipes come from arrow_engine.py, which
admits only what is computed here exactly as Spark computes it: landfall's own feature
kinds, and expressions of double arithmetic that Spark has already analysed (its
implicit casts and constants resolved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from landfall.arrow_io import ArrowTask, part_file, release_unused_memory

if TYPE_CHECKING:
    from landfall.object_store import StoreSettings

__all__ = ["UNSEEN_MARKER", "ArrowFeature", "FeaturePlan", "Term", "run_task"]

# Marks the error a feature raises from inside a task, so the driver can tell it apart
# (the Spark engine's query raises it with the same words).
UNSEEN_MARKER = "landfall-unseen-value"

# An analysed expression as the task evaluates it: ("column", name), ("constant", value)
# or (operation, operand, ...) with operation one of _OPERATIONS.
Term = tuple
_OPERATIONS = {
    "add": pc.add,
    "subtract": pc.subtract,
    "multiply": pc.multiply,
    "negate": pc.negate,
    "abs": pc.abs,
}


@dataclass(frozen=True)
class ArrowFeature:
    """How one feature's column(s) are computed."""

    name: str
    kind: str  # expr, bucketize, one_hot, ordinal
    column: str | None = None  # the source column (every kind but expr)
    term: Term | None = None  # expr
    splits: tuple[float, ...] = ()  # bucketize
    vocabulary: tuple[str, ...] = ()  # one_hot, ordinal
    unseen: str = "ignore"  # one_hot, ordinal
    unseen_value: float = -1.0  # ordinal


@dataclass(frozen=True)
class FeaturePlan:
    """Everything a task needs, shipped to it by Spark."""

    id_column: str
    features: tuple[ArrowFeature, ...]
    read_columns: tuple[str, ...]
    schema: pa.Schema  # the feature table's: the id column, then a double per output
    output_dir: str
    batch_rows: int
    compression: str


def _evaluate(term: Term, batch: pa.RecordBatch) -> pa.Array:
    operation = term[0]
    if operation == "column":  # a numeric column; Spark casts it to double (never lossy)
        return pc.cast(batch.column(term[1]), pa.float64(), safe=False)
    if operation == "constant":
        if term[1] is None:
            return pa.nulls(batch.num_rows, pa.float64())
        return pa.array(np.full(batch.num_rows, term[1], dtype=np.float64))
    operands = [_evaluate(operand, batch) for operand in term[1:]]
    return _OPERATIONS[operation](*operands)


def _bucket(values: pa.Array, splits: tuple[float, ...]) -> pa.Array:
    """How many split points each value reaches; Spark ranks NaN above every number."""
    numbers = pc.cast(values, pa.float64(), safe=False)
    filled = numbers.fill_null(0.0).to_numpy(zero_copy_only=False)
    # numpy sorts NaN last too: a NaN reaches every split.
    index = np.searchsorted(np.asarray(splits, dtype=np.float64), filled, side="right")
    return pa.array(index.astype(np.float64), mask=numbers.is_null().to_numpy(zero_copy_only=False))


def _unseen_check(feature: ArrowFeature, text: pa.Array, known: pa.Array) -> None:
    if feature.unseen != "error":
        return
    unseen = pc.and_(pc.is_valid(text), pc.invert(known))
    if pc.any(unseen).as_py():
        value = text.filter(unseen)[0].as_py()
        raise ValueError(
            f"{UNSEEN_MARKER}: feature {feature.name!r}: value {value} of column "
            f"{feature.column!r} is not in its vocabulary"
        )


def _one_hot(feature: ArrowFeature, text: pa.Array) -> list[pa.Array]:
    known = pc.is_in(text, value_set=pa.array(feature.vocabulary, pa.string()))
    known = known.fill_null(False)
    _unseen_check(feature, text, known)
    columns = [
        pc.equal(text, pa.scalar(value, pa.string())).fill_null(False).cast(pa.float64())
        for value in feature.vocabulary
    ]
    if feature.unseen == "other":
        columns.append(pc.and_(pc.is_valid(text), pc.invert(known)).cast(pa.float64()))
    return columns


def _ordinal(feature: ArrowFeature, text: pa.Array) -> pa.Array:
    position = pc.index_in(text, value_set=pa.array(feature.vocabulary, pa.string()))
    _unseen_check(feature, text, pc.is_valid(position))
    return position.cast(pa.float64()).fill_null(feature.unseen_value)


def _feature_columns(feature: ArrowFeature, batch: pa.RecordBatch) -> list[pa.Array]:
    if feature.kind == "expr":
        assert feature.term is not None
        return [_evaluate(feature.term, batch)]
    values = batch.column(feature.column)
    if feature.kind == "bucketize":
        return [_bucket(values, feature.splits)]
    # A category is compared as Spark's cast to string writes it (strings, integers).
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    if feature.kind == "one_hot":
        return _one_hot(feature, text)
    return [_ordinal(feature, text)]


def _featurized(plan: FeaturePlan, batch: pa.RecordBatch) -> pa.RecordBatch:
    columns = [batch.column(plan.id_column)]
    for feature in plan.features:
        columns += _feature_columns(feature, batch)
    return pa.RecordBatch.from_arrays(columns, schema=plan.schema)


def run_task(task: ArrowTask, plan: FeaturePlan, store: StoreSettings | None = None) -> int:
    """Featurize one task's row groups into its part file; the rows written."""
    rows = 0
    try:
        with part_file(plan.output_dir, task.index, plan.schema, plan.compression, store) as out:
            for batch in task.batches(plan.batch_rows, store, list(plan.read_columns)):
                out.write_batch(_featurized(plan, batch))
                rows += batch.num_rows
    finally:
        release_unused_memory()
    return rows
