"""Validation: the dataset's declared schema, type and not-null checks.

Every row is annotated in one pass with the names of the checks it broke; rows that
broke none are valid (cast to the declared types), the rest go to quarantine with
all their original values and their reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from landfall.config import DatasetConfig
from landfall.errors import StageFailedError
from landfall.stage import schema_fingerprint

__all__ = ["REASONS_COLUMN", "ValidationResult", "read_raw_partition", "validate_partition"]

REASONS_COLUMN = "_quarantine_reasons"


@dataclass(frozen=True)
class ValidationResult:
    """Row counts of one validated partition, and failures per check."""

    rows_landed: int
    rows_valid: int
    rows_quarantined: int
    failures_by_check: dict[str, int]
    valid_schema: str  # fingerprint of the valid rows' schema


def read_raw_partition(spark: SparkSession, path: Path, data_format: str) -> DataFrame:
    """Read a landed partition as it is; CSV columns stay strings so bad values survive."""
    if not path.exists():
        raise StageFailedError(
            f"partition not found: {path} does not exist (has it landed yet?)", retryable=True
        )
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))]
    if not files:
        raise StageFailedError(f"partition {path} holds no data files", retryable=True)
    reader = spark.read
    if data_format == "csv":
        # No type inference: a "n/a" in a numeric column must reach the type check,
        # not silently turn the whole column into strings or nulls.
        return reader.option("header", True).option("inferSchema", False).csv(str(path))
    if data_format == "json":
        return reader.json(str(path))
    return reader.parquet(str(path))


def _check_columns(raw: DataFrame, dataset: DatasetConfig, path: Path) -> None:
    missing = [c.name for c in dataset.columns if c.name not in raw.columns]
    if missing:
        raise StageFailedError(
            f"schema drift in {path}: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(raw.columns) or 'none'}"
        )


def _failed_checks(dataset: DatasetConfig) -> list[tuple[str, Column]]:
    """(check name, condition that is true when a row breaks it) for every declared column."""
    checks: list[tuple[str, Column]] = []
    for column in dataset.columns:
        raw = F.col(f"`{column.name}`")
        typed = raw.try_cast(column.type)
        if not column.nullable or column.name == dataset.id_column:
            checks.append((f"not_null:{column.name}", raw.isNull()))
        if column.type != "string":
            checks.append((f"type:{column.name}:{column.type}", raw.isNotNull() & typed.isNull()))
    return checks


def validate_partition(
    spark: SparkSession,
    dataset: DatasetConfig,
    raw_path: Path,
    valid_path: Path,
    quarantine_path: Path,
    data_format: str | None = None,
) -> ValidationResult:
    """Split a raw partition into valid rows and quarantined rows with their reasons."""
    raw = read_raw_partition(spark, raw_path, data_format or dataset.format)
    _check_columns(raw, dataset, raw_path)
    checks = _failed_checks(dataset)
    reasons = (
        F.filter(
            F.array(*[F.when(broken, F.lit(name)) for name, broken in checks]),
            lambda r: r.isNotNull(),
        )
        if checks
        else F.array().cast("array<string>")
    )
    annotated = raw.withColumn(REASONS_COLUMN, reasons).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        is_valid = F.size(REASONS_COLUMN) == 0
        # One aggregation gives every figure: rows, valid rows and failures per check.
        figures = annotated.agg(
            F.count(F.lit(1)).alias("landed"),
            F.count(F.when(is_valid, 1)).alias("valid"),
            *[
                F.count(F.when(F.array_contains(REASONS_COLUMN, name), 1)).alias(f"c{i}")
                for i, (name, _) in enumerate(checks)
            ],
        ).first()
        assert figures is not None
        typed_columns = [
            F.col(f"`{c.name}`").try_cast(c.type).alias(c.name) for c in dataset.columns
        ]
        valid_rows = annotated.filter(is_valid).select(*typed_columns)
        valid_rows.write.mode("overwrite").parquet(str(valid_path))
        annotated.filter(~is_valid).write.mode("overwrite").parquet(str(quarantine_path))
    finally:
        annotated.unpersist()
    landed, valid = int(figures["landed"]), int(figures["valid"])
    return ValidationResult(
        rows_landed=landed,
        rows_valid=valid,
        rows_quarantined=landed - valid,
        failures_by_check={name: int(figures[f"c{i}"]) for i, (name, _) in enumerate(checks)},
        valid_schema=schema_fingerprint(valid_rows),
    )
