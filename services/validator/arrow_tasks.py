"""Validation as Arrow-native Spark tasks: the checks of stage.py, batch by batch in pyarrow.

Each task (``landfall.arrow_io``: the predictor's scoring tasks work the same way) reads
its row groups of the raw partition in record batches and, for every batch, computes
each check exactly as the Spark engine's columns do (see stage.py): the implicit
not-null of non-nullable columns and the id, the type checks, the configured rules
(passing on a missing value, except not-null), errors and warnings. It writes the valid
rows and the quarantined rows (landed values and the names of the broken checks, errors
first) as its own part files, and hands the driver its figures: rows, failures per
check and per column a mergeable profile (count, min, max, sum, a HyperLogLog sketch).

What the engine implements is described by :class:`ArrowPlan`, which the driver builds
only for datasets the engine can validate (arrow_engine.py decides).
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from landfall.arrow_io import ArrowTask, part_file, release_unused_memory
from services.validator.distinct_sketch import DistinctSketch

if TYPE_CHECKING:
    from landfall.object_store import StoreSettings

__all__ = [
    "ArrowCheck",
    "ArrowPlan",
    "ColumnFigures",
    "TaskFigures",
    "cast_landed",
    "java_number",
    "run_task",
]

# Spark simple type names of the declared types the engine reads, as Arrow types.
ARROW_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "tinyint": pa.int8(),
    "smallint": pa.int16(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "date": pa.date32(),
}


@dataclass(frozen=True)
class ArrowCheck:
    """One check as the engine runs it; ``kind`` picks which of the fields count."""

    name: str
    severity: str
    kind: str  # not_null | never (a cast that cannot lose) | range | allowed | regex | unique
    column: str = ""
    lower: tuple[float, bool] | None = None
    upper: tuple[float, bool] | None = None
    values: tuple[Any, ...] = ()
    pattern: str = ""
    keys: tuple[str, ...] = ()
    repeated: pa.Table | None = None  # unique: the keys found more than once


@dataclass(frozen=True)
class ArrowPlan:
    """Everything a task needs: the columns, their types, the checks in Spark's order."""

    declared: tuple[tuple[str, str, str], ...]  # (name, declared type, landed type)
    extras: tuple[str, ...]
    keep_extras: bool
    checks: tuple[ArrowCheck, ...]
    landed_schema: pa.Schema  # the raw partition's, as pyarrow reads its files
    valid_dir: str
    quarantine_dir: str
    batch_rows: int
    compression: str

    def ordered_checks(self) -> list[ArrowCheck]:
        """Errors first, then warnings, each in check order: how reasons are listed."""
        errors = [c for c in self.checks if c.severity == "error"]
        return errors + [c for c in self.checks if c.severity == "warn"]


@dataclass
class ColumnFigures:
    """A declared column's profile over one task's rows; :meth:`merge` adds another's."""

    count: int = 0
    low: Any = None  # NaN not included: Spark ranks NaN above every number
    high: Any = None
    nan: bool = False
    total: float = 0.0
    sketch: bytes = b""

    def merge(self, other: ColumnFigures) -> None:
        """Add another task's figures of the same column."""
        self.count += other.count
        self.nan |= other.nan
        self.total += other.total
        if other.low is not None and (self.low is None or other.low < self.low):
            self.low = other.low
        if other.high is not None and (self.high is None or other.high > self.high):
            self.high = other.high


@dataclass
class TaskFigures:
    """What a task reports back besides its files."""

    landed: int = 0
    valid: int = 0
    warned: int = 0
    failures: list[int] = field(default_factory=list)
    columns: list[ColumnFigures] = field(default_factory=list)


def java_number(value: float, single: bool = False) -> str:
    """A float as Java's Double.toString (Float.toString if ``single``), as Spark casts it.

    The shortest digits that read back as the value; plain notation from 10^-3 up to
    10^7, scientific outside (``1.0E7``, ``1.0E-4``).
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    number = np.float32(value) if single else np.float64(value)
    mantissa, exponent_text = np.format_float_scientific(number, unique=True).split("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    exponent = int(exponent_text)
    if -3 <= exponent < 7:
        if exponent < 0:
            return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
        whole = digits[: exponent + 1].ljust(exponent + 1, "0")
        return f"{sign}{whole}.{digits[exponent + 1 :] or '0'}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent}"


def cast_landed(values: pa.Array, declared: str, landed: str) -> pa.Array:
    """A landed column as its declared type, as Spark's cast renders it.

    Only the casts the driver accepted arrive here: the same type, a widening between
    numeric types, or any of the engine's types to string.
    """
    target = ARROW_TYPES[declared]
    if landed == declared:
        return values if values.type == target else values.cast(target)
    if declared == "string" and landed in ("double", "float"):
        # Spark writes doubles as Java does (1.0E7); render each distinct value once.
        encoded = pc.dictionary_encode(values)
        single = landed == "float"
        rendered = pa.array(
            [java_number(v, single) for v in encoded.dictionary.to_pylist()], pa.string()
        )
        return pc.take(rendered, encoded.indices)
    return values.cast(target)


# ------------------------------------------------------------------ checks of a batch


def _mask(condition: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(condition, False), dtype=bool)


def _outside(check: ArrowCheck, value: pa.Array) -> pa.Array:
    outside = pa.array(np.zeros(len(value), dtype=bool))
    if check.lower is not None:
        low, exclusive = check.lower
        outside = pc.or_(outside, (pc.less_equal if exclusive else pc.less)(value, low))
    if check.upper is not None:
        high, exclusive = check.upper
        outside = pc.or_(outside, (pc.greater_equal if exclusive else pc.greater)(value, high))
        if pa.types.is_floating(value.type):
            # Spark ranks NaN above every number: it breaks any upper bound.
            outside = pc.or_(outside, pc.is_nan(value))
    return outside


def _repeated_rows(check: ArrowCheck, typed: dict[str, pa.Array]) -> np.ndarray:
    rows = len(next(iter(typed.values())))
    flagged = np.zeros(rows, dtype=bool)
    if check.repeated is None or check.repeated.num_rows == 0:
        return flagged
    keys = pa.table({**{k: typed[k] for k in check.keys}, "__row": np.arange(rows)})
    # A semi join never matches a null key: a missing key is no duplicate (as in Spark).
    found = keys.join(check.repeated, keys=list(check.keys), join_type="left semi")
    flagged[found.column("__row").to_numpy()] = True
    return flagged


def _broken(check: ArrowCheck, landed: pa.RecordBatch, typed: dict[str, pa.Array]) -> np.ndarray:
    """Rows of the batch that break the check, as Spark's column for it says."""
    if check.kind == "not_null":
        return _mask(pc.is_null(landed.column(check.column)))
    if check.kind == "never":
        return np.zeros(landed.num_rows, dtype=bool)
    if check.kind == "unique":
        return _repeated_rows(check, typed)
    value = typed[check.column]
    if check.kind == "range":
        broken = _outside(check, value)
    elif check.kind == "allowed":
        if pa.types.is_integer(value.type) and any(isinstance(v, float) for v in check.values):
            value = value.cast(pa.float64())  # as Spark compares an int with a double
        broken = pc.invert(pc.is_in(value, value_set=pa.array(check.values, value.type)))
    else:
        broken = pc.invert(pc.match_substring_regex(value, check.pattern))
    return _mask(pc.and_(pc.is_valid(value), broken))


def _reasons(masks: list[np.ndarray], names: list[str], rows: np.ndarray) -> pa.Array:
    """Each chosen row's broken checks' names, in the order given."""
    if not names:
        return pa.array([[]] * len(rows), pa.list_(pa.string()))
    table = np.stack([m[rows] for m in masks], axis=1)
    offsets = np.concatenate([[0], np.cumsum(table.sum(axis=1))]).astype(np.int32)
    flat = np.array(names, dtype=object)[np.nonzero(table)[1]]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.string()))


# ------------------------------------------------------------------ profile of a batch


def _profile_batch(
    figures: ColumnFigures, sketch: DistinctSketch, values: pa.Array, declared: str
) -> None:
    present = values.filter(pc.is_valid(values))
    figures.count += len(present)
    if len(present) == 0:
        return
    sketch.update(present)
    if declared == "boolean":
        return
    if pa.types.is_floating(present.type):
        nan = pc.is_nan(present)
        figures.nan |= bool(pc.any(nan).as_py())
        figures.total += pc.sum(present.cast(pa.float64())).as_py()
        present = present.filter(pc.invert(nan))
    elif declared != "string" and declared != "date":
        figures.total += pc.sum(present.cast(pa.float64())).as_py()
    if len(present):
        extremes = pc.min_max(present)
        figures.merge(ColumnFigures(low=extremes["min"].as_py(), high=extremes["max"].as_py()))


# ------------------------------------------------------------------ one task


def _schemas(plan: ArrowPlan, landed: pa.Schema) -> tuple[pa.Schema, pa.Schema]:
    kept = list(plan.extras) if plan.keep_extras else []
    valid = pa.schema(
        [pa.field(name, ARROW_TYPES[kind]) for name, kind, _ in plan.declared]
        + [pa.field(name, landed.field(name).type) for name in kept]
    )
    quarantine = pa.schema(
        [pa.field(name, landed.field(name).type) for name, _, _ in plan.declared]
        + [pa.field(name, landed.field(name).type) for name in plan.extras]
        + [pa.field("_quarantine_reasons", pa.list_(pa.string()))]
    )
    return valid, quarantine


def _column(batch: pa.RecordBatch, target: pa.Field) -> pa.Array:
    """A column of the batch as the partition's schema types it (files may differ)."""
    values = batch.column(target.name)
    return values if values.type == target.type else values.cast(target.type)


def _check_batch(
    plan: ArrowPlan,
    batch: pa.RecordBatch,
    figures: TaskFigures,
    sketches: list[DistinctSketch],
    schemas: tuple[pa.Schema, pa.Schema],
) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """One batch checked: its valid rows and its quarantined rows; figures added up."""
    typed = {
        name: cast_landed(batch.column(name), kind, landed) for name, kind, landed in plan.declared
    }
    masks = [_broken(check, batch, typed) for check in plan.checks]
    rows = batch.num_rows
    invalid, warned = np.zeros(rows, dtype=bool), np.zeros(rows, dtype=bool)
    for check, mask in zip(plan.checks, masks, strict=True):
        if check.severity == "error":
            invalid |= mask
        else:
            warned |= mask
    figures.landed += rows
    figures.valid += int((~invalid).sum())
    figures.warned += int((~invalid & warned).sum())
    for i, mask in enumerate(masks):
        figures.failures[i] += int(mask.sum())
    for i, (name, kind, _) in enumerate(plan.declared):
        _profile_batch(figures.columns[i], sketches[i], typed[name], kind)
    valid_schema, quarantine_schema = schemas
    keep = pa.array(~invalid)
    valid = pa.RecordBatch.from_arrays(
        [typed[f.name] if f.name in typed else _column(batch, f) for f in valid_schema],
        schema=valid_schema,
    ).filter(keep)
    chosen = np.nonzero(invalid)[0]
    ordered = plan.ordered_checks()
    by_name = dict(zip([c.name for c in plan.checks], masks, strict=True))
    reasons = _reasons([by_name[c.name] for c in ordered], [c.name for c in ordered], chosen)
    landed_columns = [_column(batch, f).take(chosen) for f in list(quarantine_schema)[:-1]]
    quarantined = pa.RecordBatch.from_arrays([*landed_columns, reasons], schema=quarantine_schema)
    return valid, quarantined


def run_task(task: ArrowTask, plan: ArrowPlan, store: StoreSettings | None = None) -> TaskFigures:
    """Check one task's row groups; write its valid and quarantine part files."""
    figures = TaskFigures(
        failures=[0] * len(plan.checks), columns=[ColumnFigures() for _ in plan.declared]
    )
    sketches = [DistinctSketch(declared) for _, declared, _ in plan.declared]
    schemas = _schemas(plan, plan.landed_schema)
    # Released once the writers have closed (their buffers too), on failure as well.
    with ExitStack() as stack:
        stack.callback(release_unused_memory)
        directories = (plan.valid_dir, plan.quarantine_dir)
        writers = [
            stack.enter_context(part_file(directory, task.index, schema, plan.compression, store))
            for directory, schema in zip(directories, schemas, strict=True)
        ]
        for batch in task.batches(plan.batch_rows, store):
            valid, quarantined = _check_batch(plan, batch, figures, sketches, schemas)
            writers[0].write_batch(valid)
            writers[1].write_batch(quarantined)
    for column, sketch in zip(figures.columns, sketches, strict=True):
        column.sketch = sketch.serialize()
    return figures
