"""The featurization stage on a local Spark session, without a broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from landfall.config import DatasetConfig, FeatureSpec
from landfall.errors import StageFailedError
from landfall.lake import Lake
from services.featurizer.stage import feature_table_types, featurize_partition


def _dataset(features: list[dict[str, Any]], **extra: Any) -> DatasetConfig:
    return TypeAdapter(DatasetConfig).validate_python(
        {
            "columns": [
                {"name": "id"},
                {"name": "x", "type": "double"},
                {"name": "color"},
                {"name": "at", "type": "timestamp"},
                {"name": "store"},
            ],
            "features": features,
            "model": {"uri": "models:/m@champion"},
            **extra,
        }
    )


@pytest.fixture
def validated(spark, tmp_path: Path) -> Path:
    path = tmp_path / "validated"
    spark.createDataFrame(
        [
            ("a", 1.0, "red", "2026-11-01 07:30:00", "s1"),
            ("b", 2.5, "blue", "2026-03-15 23:00:00", "s2"),
            ("c", 7.0, "teal", "2026-12-31 00:00:00", "s1"),
            ("d", None, None, None, "s9"),
        ],
        "id string, x double, color string, at string, store string",
    ).selectExpr("id", "x", "color", "CAST(at AS timestamp) AS at", "store").write.parquet(
        str(path)
    )
    return path


def _features(spark, dataset: DatasetConfig, validated: Path, out: Path, **kw: Any) -> dict:
    result = featurize_partition(spark, dataset, validated, out, **kw)
    rows = spark.read.parquet(str(out)).collect()
    assert result.rows == len(rows)
    return {r["id"]: r.asDict() for r in rows}, result


def test_expressions_are_computed_and_keyed_by_id(spark, validated: Path, tmp_path: Path) -> None:
    dataset = _dataset(
        [
            {"name": "x2", "expr": "x * 2"},
            {"name": "is_red", "expr": "CASE WHEN color = 'red' THEN 1 ELSE 0 END"},
        ]
    )
    rows, result = _features(spark, dataset, validated, tmp_path / "f")
    assert result.features == ["x2", "is_red"]
    assert {k: (v["x2"], v["is_red"]) for k, v in rows.items()} == {
        "a": (2.0, 1.0),
        "b": (5.0, 0.0),
        "c": (14.0, 0.0),
        "d": (None, 0.0),
    }


def test_floating_point_columns_are_written_without_a_dictionary(spark, tmp_path: Path) -> None:
    # Computed values rarely repeat: parquet's dictionary attempt on them is wasted work
    # (landfall/stage.py write_parquet). Other columns keep it where it pays: here both
    # columns repeat two values, so only the setting tells them apart.
    import pyarrow.parquet as pq

    from landfall.stage import write_parquet

    frame = spark.createDataFrame(
        [(float(i % 2), "red" if i % 2 else "blue") for i in range(2000)], "x double, c string"
    ).coalesce(1)
    write_parquet(frame, tmp_path / "out")
    (file,) = (tmp_path / "out").glob("*.parquet")
    group = pq.ParquetFile(file).metadata.row_group(0)
    encodings = {
        group.column(i).path_in_schema: set(group.column(i).encodings)
        for i in range(group.num_columns)
    }
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert not encodings["x"] & dictionary, encodings
    assert encodings["c"] & dictionary, encodings


def test_bucketize(spark, validated: Path, tmp_path: Path) -> None:
    dataset = _dataset([{"name": "xb", "kind": "bucketize", "column": "x", "splits": [2, 5]}])
    rows, _ = _features(spark, dataset, validated, tmp_path / "f")
    assert {k: v["xb"] for k, v in rows.items()} == {"a": 0.0, "b": 1.0, "c": 2.0, "d": None}


@pytest.mark.parametrize(
    ("unseen", "expected"),
    [
        ("ignore", {"a": (1.0, 0.0), "b": (0.0, 1.0), "c": (0.0, 0.0), "d": (0.0, 0.0)}),
        ("other", {"a": (1.0, 0.0, 0.0), "b": (0.0, 1.0, 0.0), "c": (0.0, 0.0, 1.0),
                   "d": (0.0, 0.0, 0.0)}),
    ],
)  # fmt: skip
def test_one_hot(spark, validated: Path, tmp_path: Path, unseen: str, expected: dict) -> None:
    feature = {"name": "c", "kind": "one_hot", "column": "color", "vocabulary": ["red", "blue"]}
    dataset = _dataset([{**feature, "unseen": unseen}])
    rows, result = _features(spark, dataset, validated, tmp_path / "f")
    assert result.features == ["c_red", "c_blue", "c_other"][: len(expected["a"])]
    assert {k: tuple(v[f] for f in result.features) for k, v in rows.items()} == expected


def test_ordinal(spark, validated: Path, tmp_path: Path) -> None:
    feature = {"name": "o", "kind": "ordinal", "column": "color", "vocabulary": ["red", "blue"]}
    rows, _ = _features(
        spark, _dataset([{**feature, "unseen_value": -1}]), validated, tmp_path / "f"
    )
    assert {k: v["o"] for k, v in rows.items()} == {"a": 0.0, "b": 1.0, "c": -1.0, "d": -1.0}


@pytest.mark.parametrize("kind", ["one_hot", "ordinal"])
def test_an_unseen_value_can_fail_the_batch(
    spark, validated: Path, tmp_path: Path, kind: str
) -> None:
    feature = {"name": "f", "kind": kind, "column": "color", "vocabulary": ["red", "blue"]}
    with pytest.raises(StageFailedError, match="value teal of column 'color' is not in its vocab"):
        featurize_partition(
            spark, _dataset([{**feature, "unseen": "error"}]), validated, tmp_path / "f"
        )


def test_date_parts(spark, validated: Path, tmp_path: Path) -> None:
    feature = {
        "name": "at",
        "kind": "date_parts",
        "column": "at",
        "parts": ["month", "hour", "dayofweek"],
    }
    rows, result = _features(spark, _dataset([feature]), validated, tmp_path / "f")
    assert result.features == ["at_month", "at_hour", "at_dayofweek"]
    assert (rows["a"]["at_month"], rows["a"]["at_hour"], rows["a"]["at_dayofweek"]) == (
        11.0,
        7.0,
        1.0,
    )
    assert rows["d"]["at_month"] is None


def test_the_feature_table_s_columns_and_types_are_known_from_the_config_alone(
    spark, validated: Path, tmp_path: Path
) -> None:
    # What the predictor checks its models against at start, before any data exists.
    dataset = _dataset(
        [
            {"name": "x2", "expr": "x * 2"},
            {"name": "n", "expr": "CAST(x AS int)"},  # an int expression: still a double
            {"name": "xb", "kind": "bucketize", "column": "x", "splits": [2, 5]},
            {"name": "c", "kind": "one_hot", "column": "color", "vocabulary": ["Red", "blue"],
             "unseen": "other"},
            {"name": "o", "kind": "ordinal", "column": "color", "vocabulary": ["red"]},
            {"name": "at", "kind": "date_parts", "column": "at", "parts": ["month", "hour"]},
        ],
        id_column="at",
    )  # fmt: skip
    featurize_partition(spark, dataset, validated, tmp_path / "f")
    written = spark.read.parquet(str(tmp_path / "f")).schema
    expected = {f.name: f.dataType.simpleString() for f in written.fields}
    assert feature_table_types(dataset) == expected
    assert list(feature_table_types(dataset)) == [f.name for f in written.fields]  # in order
    assert expected["at"] == "timestamp" and "c_Red" in expected


def _write_reference(spark, lake: Lake, partition: str, rows: list[tuple]) -> None:
    spark.createDataFrame(rows, "store string, region_size double").write.parquet(
        str(lake.partition_dir("stores", "validated", partition))
    )


REFERENCE = {
    "name": "stores",
    "dataset": "stores",
    "keys": ["store"],
    "columns": ["region_size"],
    "prefix": "store_",
}


def test_a_reference_table_is_joined_as_of_the_partition_date(
    spark, validated: Path, tmp_path: Path
) -> None:
    lake = Lake(tmp_path / "lake")
    _write_reference(spark, lake, "2026-10-01", [("s1", 10.0), ("s2", 20.0)])
    _write_reference(spark, lake, "2026-11-01", [("s1", 11.0), ("s2", 21.0)])
    _write_reference(spark, lake, "2026-12-01", [("s1", 99.0), ("s2", 99.0)])  # the future
    dataset = _dataset(
        [{"name": "size", "expr": "store_region_size"}],
        feature_set={"name": "retail", "version": "3", "references": [REFERENCE]},
    )
    rows, result = _features(
        spark, dataset, validated, tmp_path / "f", lake=lake, partition="2026-11-15"
    )
    assert {k: v["size"] for k, v in rows.items()} == {"a": 11.0, "b": 21.0, "c": 11.0, "d": None}
    assert result.references == {"stores": "stores/validated/2026-11-01"}


def test_a_missing_reference_fails_clearly(spark, validated: Path, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    _write_reference(spark, lake, "2026-12-01", [("s1", 1.0)])  # only after the batch
    dataset = _dataset(
        [{"name": "size", "expr": "store_region_size"}], feature_set={"references": [REFERENCE]}
    )
    with pytest.raises(StageFailedError, match="no partition of stores/validated at or before"):
        featurize_partition(
            spark, dataset, validated, tmp_path / "f", lake=lake, partition="2026-11-15"
        )


def test_a_reference_with_duplicate_keys_is_refused(spark, validated: Path, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    _write_reference(spark, lake, "2026-11-01", [("s1", 1.0), ("s1", 2.0)])
    dataset = _dataset(
        [{"name": "size", "expr": "store_region_size"}], feature_set={"references": [REFERENCE]}
    )
    with pytest.raises(StageFailedError, match="duplicate keys"):
        featurize_partition(
            spark, dataset, validated, tmp_path / "f", lake=lake, partition="2026-11-15"
        )


def test_an_unparsable_expression_names_the_feature(spark, validated: Path, tmp_path: Path) -> None:
    with pytest.raises(StageFailedError, match="feature 'broken'"):
        featurize_partition(
            spark, _dataset([{"name": "broken", "expr": "x *"}]), validated, tmp_path / "f"
        )


def test_an_expression_on_an_unknown_column_fails_clearly(
    spark, validated: Path, tmp_path: Path
) -> None:
    with pytest.raises(StageFailedError, match="feature 'y'.*does not fit"):
        featurize_partition(
            spark, _dataset([{"name": "y", "expr": "nope + 1"}]), validated, tmp_path / "f"
        )


def test_unknown_feature_kinds_and_bad_splits_are_config_errors() -> None:
    with pytest.raises(ValueError, match="does not match any of the expected tags"):
        _dataset([{"name": "f", "kind": "magic"}])
    with pytest.raises(ValueError, match="strictly ascending"):
        _dataset([{"name": "f", "kind": "bucketize", "column": "x", "splits": [3, 1]}])


def test_one_hot_column_names_keep_the_value_s_case(spark, tmp_path: Path) -> None:
    valid = tmp_path / "codes"
    spark.createDataFrame(
        [("a", "9E"), ("b", "9e"), ("c", "a b"), ("d", "zz")], "id string, store string"
    ).write.parquet(str(valid))
    feature = {"name": "code", "kind": "one_hot", "column": "store"}
    dataset = TypeAdapter(DatasetConfig).validate_python(
        {
            "columns": [{"name": "id"}, {"name": "store"}],
            "features": [{**feature, "vocabulary": ["9E", "a b", "Q-1"]}],
            "model": {"uri": "models:/m@champion"},
        }
    )
    rows, result = _features(spark, dataset, valid, tmp_path / "kept")
    # A model trained on code_9E finds code_9E; matching the value stays exact.
    assert result.features == ["code_9E", "code_a_b", "code_Q_1"]
    assert {k: tuple(v[f] for f in result.features) for k, v in rows.items()} == {
        "a": (1.0, 0.0, 0.0),
        "b": (0.0, 0.0, 0.0),
        "c": (0.0, 1.0, 0.0),
        "d": (0.0, 0.0, 0.0),
    }
    lowered = dataset.model_copy(
        update={
            "features": [
                TypeAdapter(FeatureSpec).validate_python(
                    {**feature, "vocabulary": ["9E", "a b"], "name_case": "lower"}
                )
            ]
        }
    )
    rows, result = _features(spark, lowered, valid, tmp_path / "lowered")
    assert result.features == ["code_9e", "code_a_b"]
    assert rows["a"]["code_9e"] == 1.0 and rows["b"]["code_9e"] == 0.0


def _stores(spark, folder: Path, rows: list[tuple], fmt: str = "parquet") -> None:
    frame = spark.createDataFrame(rows, "store string, region_size double")
    if fmt == "csv":
        frame.coalesce(1).write.option("header", True).csv(str(folder))
    else:
        frame.write.parquet(str(folder))


def test_a_static_reference_is_read_from_any_path_in_the_lake(
    spark, validated: Path, tmp_path: Path
) -> None:
    lake = Lake(tmp_path / "lake")
    _stores(spark, tmp_path / "lake" / "ref" / "stores", [("s1", 5.0), ("s2", 6.0)], "csv")
    reference = {**REFERENCE, "dataset": None, "path": "ref/stores", "format": "csv"}
    dataset = _dataset(
        [{"name": "size", "expr": "store_region_size"}], feature_set={"references": [reference]}
    )
    rows, result = _features(
        spark, dataset, validated, tmp_path / "f", lake=lake, partition="2026-11-15"
    )
    assert {k: v["size"] for k, v in rows.items()} == {"a": 5.0, "b": 6.0, "c": 5.0, "d": None}
    assert result.references == {"stores": "ref/stores"}
    missing = {**reference, "path": "ref/nowhere"}
    with pytest.raises(StageFailedError, match="'stores': ref/nowhere does not exist") as caught:
        featurize_partition(
            spark,
            _dataset([{"name": "size", "expr": "store_region_size"}],
                     feature_set={"references": [missing]}),
            validated, tmp_path / "g", lake=lake, partition="2026-11-15",
        )  # fmt: skip
    assert caught.value.retryable


def test_a_reference_path_template_is_read_as_of_the_partition(
    spark, validated: Path, tmp_path: Path
) -> None:
    root = tmp_path / "lake" / "ref" / "rates"
    _stores(spark, root / "date=2026-10-01", [("s1", 10.0), ("s2", 20.0)])
    _stores(spark, root / "date=2026-11-01", [("s1", 11.0), ("s2", 21.0)])
    _stores(spark, root / "date=2026-12-01", [("s1", 99.0), ("s2", 99.0)])  # the future
    (root / "date=latest").mkdir()  # not a partition: never chosen
    reference = {**REFERENCE, "dataset": None, "path": "ref/rates/date={partition}"}
    dataset = _dataset(
        [{"name": "size", "expr": "store_region_size"}], feature_set={"references": [reference]}
    )
    lake = Lake(tmp_path / "lake")
    rows, result = _features(
        spark, dataset, validated, tmp_path / "f", lake=lake, partition="2026-11-15"
    )
    assert {k: v["size"] for k, v in rows.items()} == {"a": 11.0, "b": 21.0, "c": 11.0, "d": None}
    assert result.references == {"stores": "ref/rates/date=2026-11-01"}
    with pytest.raises(StageFailedError, match="no partition of ref/rates/date=.partition. at or"):
        featurize_partition(
            spark, dataset, validated, tmp_path / "g", lake=lake, partition="2026-09-30"
        )
