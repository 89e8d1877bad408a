"""The featurization stage on a local Spark session, without a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from landfall.config import ColumnSpec, DatasetConfig, FeatureSpec, ModelSpec
from landfall.errors import StageFailedError
from services.featurizer.stage import featurize_partition


def _dataset(*features: FeatureSpec) -> DatasetConfig:
    return DatasetConfig(
        columns=[ColumnSpec(name="id"), ColumnSpec(name="x", type="double")],
        features=list(features),
        model=ModelSpec(uri="models:/m@champion"),
    )


@pytest.fixture
def validated(spark, tmp_path: Path) -> Path:
    path = tmp_path / "validated"
    spark.createDataFrame(
        [("a", 1.0, "red"), ("b", 2.5, "blue")], "id string, x double, color string"
    ).write.parquet(str(path))
    return path


def test_features_are_computed_from_expressions_and_keyed_by_id(
    spark, validated: Path, tmp_path: Path
) -> None:
    dataset = _dataset(
        FeatureSpec(name="x2", expr="x * 2"),
        FeatureSpec(name="is_red", expr="CASE WHEN color = 'red' THEN 1 ELSE 0 END"),
    )
    result = featurize_partition(spark, dataset, validated, tmp_path / "features")
    assert result.rows == 2 and result.features == ["x2", "is_red"]
    rows = {
        r["id"]: (r["x2"], r["is_red"])
        for r in spark.read.parquet(str(tmp_path / "features")).collect()
    }
    assert rows == {"a": (2.0, 1.0), "b": (5.0, 0.0)}


def test_an_unparsable_expression_names_the_feature(spark, validated: Path, tmp_path: Path) -> None:
    with pytest.raises(StageFailedError, match="feature 'broken'"):
        featurize_partition(
            spark, _dataset(FeatureSpec(name="broken", expr="x *")), validated, tmp_path / "f"
        )


def test_an_expression_on_an_unknown_column_fails_clearly(
    spark, validated: Path, tmp_path: Path
) -> None:
    with pytest.raises(StageFailedError, match="feature 'y'.*does not fit"):
        featurize_partition(
            spark, _dataset(FeatureSpec(name="y", expr="nope + 1")), validated, tmp_path / "f"
        )
