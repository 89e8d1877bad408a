"""Both featurization engines compute the same feature table, value for value.

The arrow engine takes a feature only when it computes it exactly as Spark does; these
tests run both engines over data chosen to differ (NaN, nulls, signed zeros, infinities,
integers beyond 2^53, floats, integer categories, unseen values) and require the same
files, and check that everything else is left to Spark (or refused, when asked for
arrow by name).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from landfall.arrow_io import part_file
from landfall.config import DatasetConfig, FeaturizationSettings
from landfall.errors import StageFailedError
from services.featurizer.stage import featurize_partition

NAN, INF = float("nan"), float("inf")
ROWS = {
    "id": ["a", "b", "c", "d", "e", "f", "g", "h"],
    "x": [1.5, -0.0, NAN, None, INF, -1.0, 0.0, 1e308],
    "n": [3, None, -7, 0, 2, 1, -2147483648, 2147483647],
    "f": [0.1, 2.5, None, -3.25, 1e38, NAN, -0.0, 7.0],
    "big": [2**53 + 1, -(2**62), None, 0, 1, 9007199254740993, -1, 2**63 - 1],
    "color": ["red", "blue", None, "teal", "Red", "red", "", "blue"],
    "code": [1, 2, 3, None, 1, 2, 0, -1],
}
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("x", pa.float64()),
        ("n", pa.int32()),
        ("f", pa.float32()),
        ("big", pa.int64()),
        ("color", pa.string()),
        ("code", pa.int64()),
    ]
)
COLUMNS = [
    {"name": "id"},
    {"name": "x", "type": "double"},
    {"name": "n", "type": "int"},
    {"name": "f", "type": "float"},
    {"name": "big", "type": "bigint"},
    {"name": "color"},
    {"name": "code", "type": "bigint"},
]
ARROW_FEATURES: list[dict[str, Any]] = [
    {"name": "x", "expr": "x"},
    {"name": "x_times_n", "expr": "x * n"},
    {"name": "x_plus_f", "expr": "x + f"},
    {"name": "minus_x", "expr": "-x"},
    {"name": "abs_f", "expr": "abs(f)"},
    {"name": "x_less", "expr": "x - 1.1"},
    {"name": "big_scaled", "expr": "big * 1.0D"},
    {"name": "mixed", "expr": "n * 2.5D + x * x - abs(-f)"},
    {"name": "constant", "expr": "2 * 3.5"},
    {"name": "x_band", "kind": "bucketize", "column": "x", "splits": [-1.0, 0.0, 1.0]},
    {"name": "n_band", "kind": "bucketize", "column": "n", "splits": [0.5]},
    {"name": "c", "kind": "one_hot", "column": "color", "vocabulary": ["red", "blue", ""]},
    {"name": "o", "kind": "one_hot", "column": "color", "vocabulary": ["red"], "unseen": "other"},
    {"name": "k", "kind": "one_hot", "column": "code", "vocabulary": ["1", "2"]},
    {"name": "rank", "kind": "ordinal", "column": "color", "vocabulary": ["blue", "red"],
     "unseen_value": 9.0},
    {"name": "code_rank", "kind": "ordinal", "column": "code", "vocabulary": ["2", "1"]},
]  # fmt: skip


def _dataset(features: list[dict[str, Any]]) -> DatasetConfig:
    return TypeAdapter(DatasetConfig).validate_python(
        {"columns": COLUMNS, "features": features, "model": {"uri": "models:/m@champion"}}
    )


@pytest.fixture
def validated(tmp_path: Path) -> Path:
    """The validated rows in two files, so that both engines split them into tasks."""
    folder = tmp_path / "validated"
    folder.mkdir()
    table = pa.table(ROWS, schema=SCHEMA)
    pq.write_table(table.slice(0, 5), folder / "part-00000.parquet", row_group_size=2)
    pq.write_table(table.slice(5), folder / "part-00001.parquet")
    return folder


def _run(spark, features: list[dict[str, Any]], validated: Path, out: Path, engine: str):  # type: ignore[no-untyped-def]
    settings = FeaturizationSettings(engine=engine, batch_rows=3)
    return featurize_partition(spark, _dataset(features), validated, out, settings=settings)


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        if math.isnan(left) or math.isnan(right):
            return math.isnan(left) and math.isnan(right)
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    return bool(left == right)


def test_both_engines_write_the_same_feature_table(spark, validated: Path, tmp_path: Path) -> None:
    by_spark = _run(spark, ARROW_FEATURES, validated, tmp_path / "spark", "spark")
    by_arrow = _run(spark, ARROW_FEATURES, validated, tmp_path / "arrow", "arrow")
    assert (by_spark.engine, by_arrow.engine) == ("spark", "arrow")
    assert by_arrow.rows == by_spark.rows == len(ROWS["id"])
    assert by_arrow.features == by_spark.features
    assert by_arrow.schema == by_spark.schema
    expected = pq.read_table(tmp_path / "spark").sort_by("id")
    actual = pq.read_table(tmp_path / "arrow").sort_by("id")
    assert actual.schema.names == expected.schema.names
    assert [f.type for f in actual.schema] == [f.type for f in expected.schema]
    differences = [
        (name, row["id"], row[name], other[name])
        for row, other in zip(expected.to_pylist(), actual.to_pylist(), strict=True)
        for name in expected.schema.names
        if not _same(row[name], other[name])
    ]
    assert differences == []
    # The arrow engine's own files: no dictionary attempted on the doubles.
    written = pq.ParquetFile(next((tmp_path / "arrow").glob("part-*.parquet")))
    encodings = written.metadata.row_group(0).column(1).encodings
    assert "PLAIN_DICTIONARY" not in encodings and "RLE_DICTIONARY" not in encodings


@pytest.mark.parametrize(
    ("feature", "why"),
    [
        ({"name": "ratio", "expr": "x / 2.0"}, "only Spark computes Divide"),
        ({"name": "root", "expr": "sqrt(x)"}, "only Spark computes Sqrt"),
        ({"name": "twice", "expr": "code * 2"}, "only Spark computes Multiply of type bigint"),
        ({"name": "sum", "expr": "f + f"}, "only Spark computes Add of type float"),
        ({"name": "text", "expr": "length(color)"}, "only Spark computes"),
        ({"name": "band", "kind": "bucketize", "column": "color", "splits": [1.0]},
         "its column is string"),
    ],
)  # fmt: skip
def test_what_arrow_cannot_compute_is_left_to_spark(
    spark, validated: Path, tmp_path: Path, feature: dict[str, Any], why: str
) -> None:
    features = [{"name": "x", "expr": "x"}, feature]
    if feature.get("kind") != "bucketize":  # Spark itself fails a bucketized string
        assert _run(spark, features, validated, tmp_path / "auto", "auto").engine == "spark"
    with pytest.raises(StageFailedError, match=why) as failure:
        _run(spark, features, validated, tmp_path / "arrow", "arrow")
    assert feature["name"] in str(failure.value)
    assert failure.value.setting == ("features", 1)


def test_the_arrow_engine_is_the_default_where_it_can(
    spark, validated: Path, tmp_path: Path
) -> None:
    assert _run(spark, ARROW_FEATURES, validated, tmp_path / "f", "auto").engine == "arrow"


@pytest.mark.parametrize("kind", ["one_hot", "ordinal"])
def test_an_unseen_value_fails_the_batch_alike(
    spark, validated: Path, tmp_path: Path, kind: str
) -> None:
    feature = {"name": "f", "kind": kind, "column": "color", "vocabulary": ["red", "blue", ""],
               "unseen": "error"}  # fmt: skip
    # Two values are unseen ("teal", "Red"): the message names the one its task met first.
    expected = {
        f"feature 'f': value {value} of column 'color' is not in its vocabulary"
        for value in ("teal", "Red")
    }
    for engine in ("spark", "arrow"):
        with pytest.raises(StageFailedError) as failure:
            _run(spark, [feature], validated, tmp_path / engine, engine)
        assert str(failure.value) in expected
    # The failed tasks left no hidden part file behind.
    assert [p.name for p in (tmp_path / "arrow").iterdir()] == []


def test_a_failed_part_file_leaves_nothing_behind(tmp_path: Path) -> None:
    schema = pa.schema([("v", pa.float64())])
    with part_file(str(tmp_path), 0, schema, "snappy") as writer:
        writer.write_batch(pa.record_batch([pa.array([1.0])], schema=schema))
    with pytest.raises(RuntimeError), part_file(str(tmp_path), 1, schema, "snappy") as writer:
        writer.write_batch(pa.record_batch([pa.array([2.0])], schema=schema))
        raise RuntimeError("the task failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000.parquet"]
