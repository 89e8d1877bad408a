"""The validator's arrow engine, driver side: can it validate a dataset, and running it.

:func:`arrow_refusal` says why a dataset needs the Spark engine (or None when the arrow
engine can do it); :func:`validate_with_arrow` plans the tasks (arrow_tasks.py), finds
the repeated keys of each uniqueness rule once, by reading only the key columns with
pyarrow, and merges what the tasks report into the figures the Spark engine observes
(the same keys as its ``Observation``), so stage.py turns either into one
ValidationResult.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from datasketches import hll_sketch, hll_union

from landfall.arrow_io import arrow_location, location_of, plan_tasks, release_unused_memory
from landfall.config import DatasetConfig, ValidationSettings
from landfall.datasets import (
    AllowedValuesRule,
    ExpressionRule,
    NotNullRule,
    RangeRule,
    RegexRule,
    RuleSpec,
    UniqueRule,
)
from landfall.errors import StageFailedError
from landfall.lake import LakePath
from services.validator.arrow_tasks import (
    ARROW_TYPES,
    ArrowCheck,
    ArrowPlan,
    ColumnFigures,
    TaskFigures,
    cast_landed,
    java_number,
    run_task,
)
from services.validator.distinct_sketch import SKETCH_LG_K

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from landfall.object_store import StoreSettings

__all__ = [
    "arrow_can_validate",
    "arrow_refusal",
    "arrow_schema",
    "implicit_checks",
    "remove_folder",
    "validate_with_arrow",
]

_NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double")
# Casts between numeric types that never change a value: Spark's type check of such a
# column never fires, and the arrow engine needs no round trip to find lost values.
_WIDENINGS = {
    ("tinyint", "int"), ("tinyint", "bigint"), ("smallint", "int"), ("smallint", "bigint"),
    ("int", "bigint"), ("tinyint", "float"), ("smallint", "float"), ("tinyint", "double"),
    ("smallint", "double"), ("int", "double"), ("float", "double"),
}  # fmt: skip
_SPARK_NAMES = {str(arrow): spark for spark, arrow in ARROW_TYPES.items()}
_SPARK_NAMES["large_string"] = "string"


def implicit_checks(dataset: DatasetConfig, landed_types: dict[str, str]) -> list[ArrowCheck]:
    """The checks every dataset gets, in order: not-null (non-nullable and the id), types.

    Both engines name and order them from here. A type check's ``kind`` is ``never``
    when the landed type widens to the declared one (no value can be lost).
    """
    checks = []
    for column in dataset.columns:
        if not column.nullable or column.name == dataset.id_column:
            checks.append(ArrowCheck(f"not_null:{column.name}", "error", "not_null", column.name))
        source = landed_types[column.name]
        if column.type == "string" or source == column.type:
            continue
        kind = "never" if (source, column.type) in _WIDENINGS else "cast"
        checks.append(ArrowCheck(f"type:{column.name}:{column.type}", "error", kind, column.name))
    return checks


def _refused(what: str, why: str, *setting: str | int) -> StageFailedError:
    return StageFailedError(
        f"validation.engine arrow cannot validate {what}: {why} (use auto or spark)",
        setting=setting,
    )


def _column_refusal(
    dataset: DatasetConfig, landed_types: dict[str, str], schema: pa.Schema
) -> StageFailedError | None:
    for index, column in enumerate(dataset.columns):
        declared, landed = column.type, landed_types[column.name]
        what = f"column {column.name!r}"
        if declared not in ARROW_TYPES:
            return _refused(what, f"it is declared {declared}", "columns", index, "type")
        arrow = str(schema.field(column.name).type)
        if _SPARK_NAMES.get(arrow) != landed:
            return _refused(what, f"its files hold {arrow}", "columns", index, "type")
        if not (landed == declared or declared == "string" or (landed, declared) in _WIDENINGS):
            why = f"it lands as {landed}, and only Spark casts that to {declared} row by row"
            return _refused(what, why, "columns", index, "type")
    return None


def _values_fit(kind: str, values: list[Any]) -> bool:
    """Whether allowed values compare with the column as they do in Spark, uncoerced."""
    if kind == "string":
        return all(isinstance(v, str) for v in values)
    if kind == "boolean":
        return all(isinstance(v, bool) for v in values)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return kind in _NUMERIC and numbers


def _rule_refusal(rule: RuleSpec, index: int, types: Mapping[str, str]) -> StageFailedError | None:
    what = f"rule {rule.name!r}"
    if isinstance(rule, ExpressionRule):
        return _refused(what, "only Spark evaluates a free expression", "rules", index, "expr")
    if isinstance(rule, RangeRule) and types[rule.column] not in _NUMERIC:
        why = f"a range over a {types[rule.column]} column"
        return _refused(what, why, "rules", index, "column")
    if isinstance(rule, AllowedValuesRule) and not _values_fit(types[rule.column], rule.values):
        why = f"not every allowed value is of the column's type ({types[rule.column]})"
        return _refused(what, why, "rules", index, "values")
    if isinstance(rule, RegexRule):
        if types[rule.column] != "string":
            return _refused(what, "a pattern over a column not declared string", "rules", index)
        try:
            re.compile(rule.pattern)
            # One value: on an empty array pyarrow never compiles the pattern.
            pc.match_substring_regex(pa.array([""], pa.string()), rule.pattern)
        except (re.error, pa.ArrowInvalid) as exc:
            why = f"pattern {rule.pattern!r} does not compile as RE2: {exc}"
            return _refused(what, why, "rules", index, "pattern")
    if isinstance(rule, UniqueRule):
        floating = [c for c in rule.columns if types[c] in ("float", "double")]
        if floating:
            why = f"key column {floating[0]!r} is floating point (NaN keys: Spark's rules)"
            return _refused(what, why, "rules", index, "columns")
    return None


def arrow_schema(
    raw_path: LakePath | Path, data_format: str, store: StoreSettings | None
) -> pa.Schema | None:
    """The partition's schema as pyarrow reads it (footers only); None unless parquet."""
    if data_format != "parquet":
        return None
    filesystem, folder = arrow_location(location_of(raw_path), store)
    return pads.dataset(folder, format="parquet", filesystem=filesystem).schema


def arrow_refusal(
    dataset: DatasetConfig,
    data_format: str,
    landed_types: dict[str, str],
    schema: pa.Schema | None,
) -> StageFailedError | None:
    """Why the arrow engine cannot validate this partition, or None when it can.

    ``landed_types``: each column's Spark type as Spark reads the partition;
    ``schema``: the partition's Arrow schema (None when the format is not parquet).
    """
    if data_format != "parquet" or schema is None:
        return _refused("the partition", f"its format is {data_format}, not parquet", "format")
    unseen = [name for name in landed_types if name not in schema.names]
    if unseen:  # e.g. a column Spark's partition discovery made of a folder name
        why = f"Spark sees column {unseen[0]!r}, which its files do not hold"
        return _refused("the partition", why, "format")
    refusal = _column_refusal(dataset, landed_types, schema)
    if refusal is not None:
        return refusal
    types = {c.name: c.type for c in dataset.columns}
    for index, rule in enumerate(dataset.rules):
        refusal = _rule_refusal(rule, index, types)
        if refusal is not None:
            return refusal
    return None


def arrow_can_validate(
    dataset: DatasetConfig,
    raw_path: LakePath | Path,
    data_format: str,
    landed_types: dict[str, str],
    settings: ValidationSettings,
    store: StoreSettings | None,
) -> bool:
    """Whether the arrow engine validates the partition; ``arrow`` fails if it cannot."""
    if settings.engine == "spark":
        return False
    schema = arrow_schema(raw_path, data_format, store)
    refusal = arrow_refusal(dataset, data_format, landed_types, schema)
    if refusal is not None and settings.engine == "arrow":
        raise refusal
    return refusal is None


def _rule_check(rule: RuleSpec, repeated: pa.Table | None) -> ArrowCheck:
    if isinstance(rule, NotNullRule):
        return ArrowCheck(rule.name, rule.severity, "not_null", rule.column)
    if isinstance(rule, UniqueRule):
        keys = tuple(rule.columns)
        return ArrowCheck(rule.name, rule.severity, "unique", keys=keys, repeated=repeated)
    if isinstance(rule, RangeRule):
        return ArrowCheck(
            rule.name, rule.severity, "range", rule.column, lower=rule.lower, upper=rule.upper
        )
    if isinstance(rule, AllowedValuesRule):
        values = tuple(rule.values)
        return ArrowCheck(rule.name, rule.severity, "allowed", rule.column, values=values)
    assert isinstance(rule, RegexRule), "arrow_refusal lets no other rule through"
    return ArrowCheck(rule.name, rule.severity, "regex", rule.column, pattern=rule.pattern)


def _repeated_keys(
    table: pads.Dataset, rule: UniqueRule, types: Mapping[str, tuple[str, str]]
) -> pa.Table:
    """The keys found more than once (keys with a null part never count), typed.

    Sorting and comparing neighbours, not grouping: on 5M string ids grouping held
    about 1 GiB at its peak (its hash table), sorting 410 MiB, in about the same time.
    """
    keys = list(rule.columns)
    landed = table.to_table(columns=keys)
    typed = pa.table({k: cast_landed(landed.column(k).combine_chunks(), *types[k]) for k in keys})
    del landed
    ordered = typed.take(pc.sort_indices(typed, sort_keys=[(k, "ascending") for k in keys]))
    del typed
    rows = ordered.num_rows
    if rows < 2:
        return ordered.slice(0, 0)
    same = None
    for key in keys:
        column = ordered.column(key)
        equal = pc.equal(column.slice(1), column.slice(0, rows - 1))  # null when a part is
        same = equal if same is None else pc.and_(same, equal)
    repeated = ordered.slice(1).filter(same)  # a null in the mask drops the row
    distinct = repeated.group_by(keys).aggregate([]).select(keys)
    release_unused_memory()  # the sort's buffers, before the tasks start
    return distinct


def _render(value: Any, declared: str) -> str | None:
    """A min or max as Spark's ``cast(... as string)`` renders it."""
    if value is None:
        return None
    if declared in ("double", "float"):
        return java_number(value, single=declared == "float")
    return value.isoformat() if declared == "date" else str(value)


def _merged(plan: ArrowPlan, outcomes: list[TaskFigures]) -> dict[str, Any]:
    """The tasks' figures added up, under the keys of the Spark engine's observation."""
    figures: dict[str, Any] = {
        "landed": sum(o.landed for o in outcomes),
        "valid": sum(o.valid for o in outcomes),
        "warned": sum(o.warned for o in outcomes),
    }
    for i in range(len(plan.checks)):
        figures[f"c{i}"] = sum(o.failures[i] for o in outcomes)
    for i, (_, declared, _) in enumerate(plan.declared):
        column, union = ColumnFigures(), hll_union(SKETCH_LG_K)
        for outcome in outcomes:
            column.merge(outcome.columns[i])
            union.update(hll_sketch.deserialize(outcome.columns[i].sketch))
        figures[f"p{i}_count"] = column.count
        figures[f"p{i}_distinct"] = round(union.get_result().get_estimate())
        if declared != "boolean":
            # Spark ranks NaN above every number: the max when present, the min if alone.
            low = float("nan") if column.nan and column.low is None else column.low
            figures[f"p{i}_min"] = _render(low, declared)
            figures[f"p{i}_max"] = _render(float("nan") if column.nan else column.high, declared)
        if declared in _NUMERIC:
            figures[f"p{i}_mean"] = column.total / column.count if column.count else None
    return figures


def _fresh_folder(path: LakePath | Path, store: StoreSettings | None) -> str:
    """The folder as pyarrow names it, created empty (Spark's overwrite mode, too)."""
    location = location_of(path)
    filesystem, folder = arrow_location(location, store)
    filesystem.create_dir(folder, recursive=True)
    filesystem.delete_dir_contents(folder, missing_dir_ok=True)
    return location


def remove_folder(path: LakePath | Path, store: StoreSettings | None) -> None:
    """Delete a folder the engine wrote (the valid rows of a batch that broke a threshold)."""
    filesystem, folder = arrow_location(location_of(path), store)
    filesystem.delete_dir(folder)


def validate_with_arrow(
    spark: SparkSession,
    dataset: DatasetConfig,
    raw_path: LakePath | Path,
    outputs: tuple[LakePath | Path, LakePath | Path],
    landed_types: dict[str, str],
    extras: list[str],
    settings: ValidationSettings,
    store: StoreSettings | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Write the valid and quarantine rows with arrow tasks: the figures and severities.

    ``outputs``: the valid rows' folder and the quarantine's.
    """
    context = spark.sparkContext
    raw = location_of(raw_path)
    tasks, schema = plan_tasks(raw, context.defaultParallelism, settings.rows_per_task, store)
    filesystem, folder = arrow_location(raw, store)
    table = pads.dataset(folder, format="parquet", filesystem=filesystem, schema=schema)
    types = {c.name: (c.type, landed_types[c.name]) for c in dataset.columns}
    checks = implicit_checks(dataset, landed_types)
    for rule in dataset.rules:
        repeated = _repeated_keys(table, rule, types) if isinstance(rule, UniqueRule) else None
        checks.append(_rule_check(rule, repeated))
    codec = spark.conf.get("spark.sql.parquet.compression.codec", "snappy") or "snappy"
    plan = ArrowPlan(
        declared=tuple((c.name, c.type, landed_types[c.name]) for c in dataset.columns),
        extras=tuple(extras),
        keep_extras=dataset.extra_columns == "keep",
        checks=tuple(checks),
        landed_schema=schema,
        valid_dir=_fresh_folder(outputs[0], store),
        quarantine_dir=_fresh_folder(outputs[1], store),
        batch_rows=settings.batch_rows,
        compression="none" if codec in ("none", "uncompressed") else codec,
    )
    run = functools.partial(run_task, plan=plan, store=store)
    outcomes: list[TaskFigures] = context.parallelize(tasks, len(tasks)).map(run).collect()
    return _merged(plan, outcomes), {c.name: c.severity for c in checks}
