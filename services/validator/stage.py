"""Validation: the dataset's declared schema and its data-quality rules, in one pass.

Every row is annotated with the names of the checks it broke: the implicit ones
(a declared column's type, not-null for non-nullable columns and the id) and the
configured rules (not-null, range, allowed values, regex, uniqueness of a key, a free
Spark SQL expression), each with a severity. A row that broke an ``error`` check goes
to quarantine with all its original values and every check it broke; ``warn`` checks
are only counted. Every figure (failures per check, valid rows, a profile of each
column) is observed while the quarantine is written, so the figures cost no pass of
their own. If the batch breaks a threshold, nothing valid is
written and the batch fails.

Two engines do this (``validation.engine``): this module's Spark DataFrame jobs, and
arrow_engine.py's Spark tasks that check the rows with pyarrow (parquet input and the
rules and casts it implements; ``auto`` picks it whenever it can).

Rules other than not-null pass on a missing value: a null is the not-null rule's
business, so one gap is not counted twice. A free expression passes when it is null.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, NumericType

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
from landfall.object_store import StoreSettings
from landfall.stage import schema_fingerprint, spark_job_group, write_parquet
from services.validator.arrow_engine import (
    arrow_can_validate,
    implicit_checks,
    remove_folder,
    validate_with_arrow,
)

__all__ = [
    "REASONS_COLUMN",
    "Check",
    "ValidationResult",
    "read_raw_partition",
    "validate_partition",
]

REASONS_COLUMN = "_quarantine_reasons"
# Working columns: the landed value of each declared column, and per-row check results.
_RAW = "__landed__"
_INVALID = "__invalid__"
_WARNED = "__warned__"
# Up to this many repeated keys are shipped to every task rather than shuffled.
_BROADCAST_KEYS = 1_000_000


@dataclass(frozen=True)
class Check:
    """One check: its name, severity and the condition true when a row breaks it."""

    name: str
    severity: str
    broken: Column


@dataclass(frozen=True)
class ValidationResult:
    """The figures of one validated partition."""

    rows_landed: int
    rows_valid: int
    rows_quarantined: int
    rows_warned: int
    failures_by_rule: dict[str, int]
    severities: dict[str, str]
    null_fraction: dict[str, float]
    profile: dict[str, dict[str, Any]]
    extra_columns: list[str]
    valid_schema: str
    spark_jobs: int
    breaches: list[str] = field(default_factory=list)  # empty: the batch passed
    breach_details: dict[str, str] = field(default_factory=dict)
    engine: str = "spark"  # which engine validated: "spark" or "arrow"

    def rows(self) -> dict[str, int]:
        """The row counts a manifest records."""
        return {
            "landed": self.rows_landed,
            "valid": self.rows_valid,
            "quarantined": self.rows_quarantined,
            "warned": self.rows_warned,
        }

    def quality(self, extra_columns_policy: str) -> dict[str, Any]:
        """The data-quality figures a manifest records beside the rows."""
        return {
            "failures_by_rule": self.failures_by_rule,
            "severities": self.severities,
            "null_fraction": self.null_fraction,
            "profile": self.profile,
            "extra_columns": self.extra_columns,
            "extra_columns_policy": extra_columns_policy,
            "threshold_breaches": self.breaches,
            "spark_jobs": self.spark_jobs,
        }


def read_raw_partition(
    spark: SparkSession, path: LakePath | Path, data_format: str, *, name: str | None = None
) -> DataFrame:
    """Read a landed partition as it is; CSV columns stay strings so bad values survive.

    ``name`` is how errors name the partition (its lake-relative path): they travel
    into events, reports and the API, where a server's own paths have no business.
    """
    name = name or str(path)
    if not path.exists():
        raise StageFailedError(
            f"partition not found: {name} does not exist (has it landed yet?)", retryable=True
        )
    found: list[LakePath] | list[Path]
    if isinstance(path, LakePath):
        found = path.files()
    else:
        found = [p for p in path.rglob("*") if p.is_file()]
    files = [p.name for p in found if not p.name.startswith(("_", "."))]
    if not files:
        raise StageFailedError(f"partition {name} holds no data files", retryable=True)
    reader = spark.read
    if data_format == "csv":
        # No type inference: a "n/a" in a numeric column must reach the type check,
        # not silently turn the whole column into strings or nulls.
        return reader.option("header", True).option("inferSchema", False).csv(str(path))
    if data_format == "json":
        return reader.json(str(path))
    return reader.parquet(str(path))


def _typed_columns(raw: DataFrame, dataset: DatasetConfig, path: str) -> dict[str, Column]:
    """Each declared column cast to its declared type; an impossible cast fails the batch."""
    missing = [c.name for c in dataset.columns if c.name not in raw.columns]
    if missing:
        first = next(i for i, c in enumerate(dataset.columns) if c.name == missing[0])
        raise StageFailedError(
            f"schema drift in {path}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(raw.columns) or 'none'}",
            setting=("columns", first, "name"),
        )
    landed_types = _landed_types(raw)
    typed = {}
    for index, column in enumerate(dataset.columns):
        cast = F.col(f"`{column.name}`").try_cast(column.type)
        try:
            raw.select(cast)  # analysis only: no Spark job
        except AnalysisException as exc:
            raise StageFailedError(
                f"schema drift in {path}: column {column.name!r} is "
                f"{landed_types[column.name]}, which cannot be read as {column.type}",
                setting=("columns", index, "type"),
            ) from exc
        typed[column.name] = cast
    return typed


def _landed_types(raw: DataFrame) -> dict[str, str]:
    return {f.name: f.dataType.simpleString() for f in raw.schema.fields}


def _type_and_null_checks(raw: DataFrame, dataset: DatasetConfig) -> list[Check]:
    landed_types = _landed_types(raw)
    checks = []
    for implicit in implicit_checks(dataset, landed_types):
        name = implicit.column
        landed, typed = F.col(f"`{_RAW}{name}`"), F.col(f"`{name}`")
        if implicit.kind == "not_null":
            checks.append(Check(implicit.name, implicit.severity, landed.isNull()))
            continue
        source = landed_types[name]
        lost = typed.isNull()
        if source != "string":
            # A cast between native types can lose information (1.5 as int is 1):
            # a value that does not survive the round trip is not of the declared type.
            lost = lost | (typed.cast(source) != landed)
        checks.append(Check(implicit.name, implicit.severity, landed.isNotNull() & lost))
    return checks


def _rule_check(rule: RuleSpec, index: int, frame: DataFrame) -> tuple[DataFrame, Check]:
    """The check for one configured rule, ``rules[index]`` (uniqueness adds a join to the frame)."""
    if isinstance(rule, NotNullRule):
        return frame, Check(rule.name, rule.severity, F.col(f"`{_RAW}{rule.column}`").isNull())
    if isinstance(rule, UniqueRule):
        # The repeated keys are found once, by a hash aggregate over the key columns
        # alone, and kept (usually a handful) to be joined back in every pass over the
        # data: cheaper than a window, which would sort whole rows by key each time.
        # Null keys never match in the join, so a missing key is not a duplicate.
        counted = f"__unique__{rule.name}"
        repeated = (
            frame.groupBy(*rule.columns)
            .agg(F.count(F.lit(1)).alias(counted))
            .filter(F.col(counted) > 1)
            .localCheckpoint(eager=True)
        )
        if repeated.count() <= _BROADCAST_KEYS:
            repeated = F.broadcast(repeated)
        frame = frame.join(repeated, on=rule.columns, how="left")
        return frame, Check(rule.name, rule.severity, F.col(counted).isNotNull())
    if isinstance(rule, ExpressionRule):
        try:
            condition = F.expr(rule.expr)
            kind = frame.select(condition).schema.fields[0].dataType
        except (ParseException, AnalysisException) as exc:
            detail = str(exc).strip().splitlines()[0]
            raise StageFailedError(
                f"rule {rule.name!r}: bad expression {rule.expr!r}: {detail}",
                setting=("rules", index, "expr"),
            ) from exc
        if not isinstance(kind, BooleanType):
            raise StageFailedError(
                f"rule {rule.name!r}: expression {rule.expr!r} is {kind.simpleString()}, "
                "not a boolean",
                setting=("rules", index, "expr"),
            )
        return frame, Check(rule.name, rule.severity, ~F.coalesce(condition, F.lit(True)))
    value = F.col(f"`{rule.column}`")
    if isinstance(rule, RangeRule):
        outside = F.lit(False)
        if rule.lower is not None:
            low, exclusive = rule.lower
            outside = outside | ((value <= low) if exclusive else (value < low))
        if rule.upper is not None:
            high, exclusive = rule.upper
            outside = outside | ((value >= high) if exclusive else (value > high))
        return frame, Check(rule.name, rule.severity, value.isNotNull() & outside)
    if isinstance(rule, AllowedValuesRule):
        return frame, Check(rule.name, rule.severity, value.isNotNull() & ~value.isin(rule.values))
    assert isinstance(rule, RegexRule)
    try:
        re.compile(rule.pattern)
    except re.error as exc:
        raise StageFailedError(
            f"rule {rule.name!r}: bad pattern {rule.pattern!r}: {exc}",
            setting=("rules", index, "pattern"),
        ) from exc
    matches = value.cast("string").rlike(rule.pattern)
    return frame, Check(rule.name, rule.severity, value.isNotNull() & ~matches)


def _any_broken(checks: list[Check]) -> Column:
    broken = F.lit(False)
    for check in checks:
        broken = broken | check.broken
    return broken


def _names_of_broken(checks: list[Check]) -> Column:
    if not checks:
        return F.array().cast("array<string>")
    flagged = F.array(*[F.when(c.broken, F.lit(c.name)) for c in checks])
    return F.filter(flagged, lambda name: name.isNotNull())


def _profile_aggregates(frame: DataFrame, dataset: DatasetConfig) -> list[Column]:
    types = {f.name: f.dataType for f in frame.schema.fields}
    aggregates = []
    for i, column in enumerate(dataset.columns):
        value = F.col(f"`{column.name}`")
        aggregates += [
            F.count(value).alias(f"p{i}_count"),
            F.approx_count_distinct(value).alias(f"p{i}_distinct"),
        ]
        if column.type != "boolean":
            aggregates += [
                F.min(value).cast("string").alias(f"p{i}_min"),
                F.max(value).cast("string").alias(f"p{i}_max"),
            ]
        if isinstance(types[column.name], NumericType):
            aggregates.append(F.mean(value).alias(f"p{i}_mean"))
    return aggregates


def _profile(
    figures: dict[str, Any], dataset: DatasetConfig, landed: int
) -> dict[str, dict[str, Any]]:
    names = figures
    profile = {}
    for i, column in enumerate(dataset.columns):
        count = int(names[f"p{i}_count"])
        entry: dict[str, Any] = {
            "type": column.type,
            "count": count,
            "nulls": landed - count,
            "approx_distinct": int(names[f"p{i}_distinct"]),
        }
        for stat in ("min", "max", "mean"):
            if f"p{i}_{stat}" in names:
                entry[stat] = names[f"p{i}_{stat}"]
        profile[column.name] = entry
    return profile


def _breaches(
    dataset: DatasetConfig, landed: int, quarantined: int, failures: dict[str, int],
    severities: dict[str, str],
) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    thresholds = dataset.thresholds
    breaches, details = [], {}
    if landed and quarantined / landed > thresholds.max_invalid_fraction:
        breaches.append(
            f"{quarantined} of {landed} rows invalid ({quarantined / landed:.1%}), over the "
            f"limit of {thresholds.max_invalid_fraction:.1%}"
        )
        details["invalid_fraction"] = f"{quarantined / landed:.6f}"
        for name, count in failures.items():
            if count and severities[name] == "error":
                details[f"rule:{name}"] = str(count)
    for name, limit in thresholds.per_rule.items():
        count = failures.get(name, 0)
        if landed and count / landed > limit:
            breaches.append(
                f"rule {name!r} failed on {count} of {landed} rows ({count / landed:.1%}), "
                f"over its limit of {limit:.1%}"
            )
            details[f"rule:{name}"] = str(count)
    return breaches, details


def _checked(
    raw: DataFrame, dataset: DatasetConfig, raw_name: str, extras: list[str]
) -> tuple[DataFrame, list[Check]]:
    """The landed rows typed and checked: every check, and whether each row broke one.

    The frame carries a column per check, and two flags: broke an error check (the row
    is quarantined), broke only a warning (kept, counted as warned).
    """
    typed = _typed_columns(raw, dataset, raw_name)
    declared = [c.name for c in dataset.columns]
    # Rules see typed values under the declared names; the landed values ride
    # along so quarantine can keep them exactly as they arrived.
    frame = raw.select(
        *[typed[name].alias(name) for name in declared],
        *[F.col(f"`{name}`") for name in extras],
        *[F.col(f"`{name}`").alias(f"{_RAW}{name}") for name in declared],
    )
    checks = _type_and_null_checks(raw, dataset)
    for index, rule in enumerate(dataset.rules):
        frame, check = _rule_check(rule, index, frame)
        checks.append(check)
    errors = [c for c in checks if c.severity == "error"]
    warnings = [c for c in checks if c.severity == "warn"]
    # Plain boolean columns keep the per-row work in generated code; the list of a
    # row's broken checks (an array) is built only for the few quarantined rows.
    annotated = frame.select(
        "*", _any_broken(errors).alias(_INVALID), _any_broken(warnings).alias(_WARNED)
    )
    return annotated, checks


def _write_quarantine(
    annotated: DataFrame,
    checks: list[Check],
    dataset: DatasetConfig,
    declared: list[str],
    extras: list[str],
    quarantine_path: LakePath | Path,
) -> dict[str, Any]:
    """Write the rows that break a check, as landed, with the names of what they broke.

    Every figure (rows, failures per check, the profile) is gathered while the
    quarantine is written, in the same pass: observed metrics, not another job.
    """
    errors = [c for c in checks if c.severity == "error"]
    warnings = [c for c in checks if c.severity == "warn"]
    is_valid = ~F.col(_INVALID)
    observation = Observation("landfall-validation")
    observed = annotated.observe(
        observation,
        F.count(F.lit(1)).alias("landed"),
        F.count(F.when(is_valid, 1)).alias("valid"),
        F.count(F.when(is_valid & F.col(_WARNED), 1)).alias("warned"),
        *[F.count(F.when(c.broken, 1)).alias(f"c{i}") for i, c in enumerate(checks)],
        *_profile_aggregates(annotated, dataset),
    )
    observed.filter(F.col(_INVALID)).select(
        *[F.col(f"`{_RAW}{name}`").alias(name) for name in declared],
        *[F.col(f"`{name}`") for name in extras],
        _names_of_broken([*errors, *warnings]).alias(REASONS_COLUMN),
    ).write.mode("overwrite").parquet(str(quarantine_path))
    return dict(observation.get)


def _validate_with_spark(
    raw: DataFrame,
    dataset: DatasetConfig,
    raw_name: str,
    extras: list[str],
    quarantine_path: LakePath | Path,
) -> tuple[dict[str, Any], dict[str, str], DataFrame]:
    """The Spark engine: the quarantine written; figures, severities and the valid rows."""
    declared = [c.name for c in dataset.columns]
    annotated, checks = _checked(raw, dataset, raw_name, extras)
    figures = _write_quarantine(annotated, checks, dataset, declared, extras, quarantine_path)
    kept = extras if dataset.extra_columns == "keep" else []
    valid_rows = annotated.filter(~F.col(_INVALID)).select(*declared, *kept)
    return figures, {c.name: c.severity for c in checks}, valid_rows


def _settle_valid_rows(
    spark: SparkSession,
    valid_rows: DataFrame | None,
    valid_path: LakePath | Path,
    breached: bool,
    store: StoreSettings | None,
) -> str:
    """Valid rows kept unless a threshold broke; their schema's fingerprint either way."""
    if valid_rows is None:  # the arrow engine wrote them: their footers say the schema
        valid_schema = schema_fingerprint(spark.read.parquet(str(valid_path)))
        if breached:
            remove_folder(valid_path, store)
        return valid_schema
    if not breached:
        # A second pass over the landed data, cheaper than caching every row
        # (measured: caching cost more than it saved; see bench/README.md).
        write_parquet(valid_rows, valid_path)
    return schema_fingerprint(valid_rows)


def validate_partition(
    spark: SparkSession,
    dataset: DatasetConfig,
    raw_path: LakePath | Path,
    valid_path: LakePath | Path,
    quarantine_path: LakePath | Path,
    data_format: str | None = None,
    *,
    raw_name: str | None = None,
    settings: ValidationSettings | None = None,
    store: StoreSettings | None = None,
) -> ValidationResult:
    """Check a raw partition; write quarantined rows, and valid rows unless a threshold broke.

    ``raw_name`` names the raw partition in errors (its lake-relative path).
    ``settings.engine`` picks the engine (arrow_engine.py says when arrow can);
    ``store``: the object store's (or HDFS's) settings when the lake is in one.
    """
    raw_name = raw_name or str(raw_path)
    settings = settings or ValidationSettings()
    data_format = data_format or dataset.format
    with spark_job_group(spark, "validate") as jobs:
        raw = read_raw_partition(spark, raw_path, data_format, name=raw_name)
        extras = [c for c in raw.columns if c not in {d.name for d in dataset.columns}]
        _typed_columns(raw, dataset, raw_name)  # schema drift fails either engine alike
        landed_types = _landed_types(raw)
        if arrow_can_validate(dataset, raw_path, data_format, landed_types, settings, store):
            figures, severities = validate_with_arrow(
                spark, dataset, raw_path, (valid_path, quarantine_path),
                landed_types, extras, settings, store,
            )  # fmt: skip
            valid_rows = None
        else:
            figures, severities, valid_rows = _validate_with_spark(
                raw, dataset, raw_name, extras, quarantine_path
            )
        landed, valid = int(figures["landed"]), int(figures["valid"])
        failures = {name: int(figures[f"c{i}"]) for i, name in enumerate(severities)}
        breaches, details = _breaches(dataset, landed, landed - valid, failures, severities)
        valid_schema = _settle_valid_rows(spark, valid_rows, valid_path, bool(breaches), store)
        profile = _profile(figures, dataset, landed)
        return ValidationResult(
            rows_landed=landed,
            rows_valid=valid,
            rows_quarantined=landed - valid,
            rows_warned=int(figures["warned"]),
            failures_by_rule=failures,
            severities=severities,
            null_fraction={n: (e["nulls"] / landed if landed else 0.0) for n, e in profile.items()},
            profile=profile,
            extra_columns=extras,
            valid_schema=valid_schema,
            spark_jobs=jobs(),
            breaches=breaches,
            breach_details=details,
            engine="spark" if valid_rows is not None else "arrow",
        )
