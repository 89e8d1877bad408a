"""The validation stage on a local Spark session, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from landfall.config import ColumnSpec, DatasetConfig, FeatureSpec, ModelSpec
from landfall.errors import StageFailedError
from services.validator.stage import REASONS_COLUMN, validate_partition

DATASET = DatasetConfig(
    columns=[
        ColumnSpec(name="id", type="string", nullable=False),
        ColumnSpec(name="amount", type="double", nullable=False),
        ColumnSpec(name="count", type="int", nullable=True),
        ColumnSpec(name="label", type="string", nullable=True),
    ],
    features=[FeatureSpec(name="amount", expr="amount")],
    model=ModelSpec(uri="models:/m@champion"),
)


def _write_csv(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "part-0.csv").write_text(text)
    return path


def test_valid_and_quarantined_rows_split_with_reasons(spark, tmp_path: Path) -> None:
    raw = _write_csv(
        tmp_path / "raw",
        "id,amount,count,label\n"
        "a,1.5,3,x\n"
        "b,oops,4,y\n"  # amount is not a double
        "c,,5,z\n"  # amount missing in a non-nullable column
        ",2.0,,w\n"  # no id; count may be null
        "e,3.0,seven,\n",  # count is not an int
    )
    result = validate_partition(spark, DATASET, raw, tmp_path / "valid", tmp_path / "quarantine")

    assert (result.rows_landed, result.rows_valid, result.rows_quarantined) == (5, 1, 4)
    assert result.failures_by_check == {
        "not_null:id": 1,
        "not_null:amount": 1,
        "type:amount:double": 1,
        "type:count:int": 1,
    }
    valid = spark.read.parquet(str(tmp_path / "valid"))
    assert [f.dataType.simpleString() for f in valid.schema.fields] == [
        "string",
        "double",
        "int",
        "string",
    ]
    assert [tuple(r) for r in valid.collect()] == [("a", 1.5, 3, "x")]
    quarantined = {
        r["id"]: (r["amount"], r["count"], list(r[REASONS_COLUMN]))
        for r in spark.read.parquet(str(tmp_path / "quarantine")).collect()
    }
    # Quarantine keeps the original values, not the failed casts.
    assert quarantined == {
        "b": ("oops", "4", ["type:amount:double"]),
        "c": (None, "5", ["not_null:amount"]),
        None: ("2.0", None, ["not_null:id"]),
        "e": ("3.0", "seven", ["type:count:int"]),
    }


def test_missing_column_fails_with_the_column_named(spark, tmp_path: Path) -> None:
    raw = _write_csv(tmp_path / "raw", "id,count,label\na,1,x\n")
    with pytest.raises(StageFailedError, match="missing column.*amount"):
        validate_partition(spark, DATASET, raw, tmp_path / "v", tmp_path / "q")


def test_missing_partition_is_a_retryable_failure(spark, tmp_path: Path) -> None:
    with pytest.raises(StageFailedError, match="partition not found") as caught:
        validate_partition(spark, DATASET, tmp_path / "nowhere", tmp_path / "v", tmp_path / "q")
    assert caught.value.retryable


def test_empty_partition_directory_fails(spark, tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(StageFailedError, match="no data files"):
        validate_partition(spark, DATASET, tmp_path / "raw", tmp_path / "v", tmp_path / "q")


def test_parquet_input_with_native_types(spark, tmp_path: Path) -> None:
    frame = spark.createDataFrame(
        [("a", 1.0, 1, "x"), ("b", None, 2, "y")],
        "id string, amount double, count int, label string",
    )
    frame.write.parquet(str(tmp_path / "raw"))
    result = validate_partition(
        spark, DATASET, tmp_path / "raw", tmp_path / "v", tmp_path / "q", data_format="parquet"
    )
    assert (result.rows_valid, result.rows_quarantined) == (1, 1)
