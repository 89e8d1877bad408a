"""The prediction stage with a model from a real MLflow registry (SQLite store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from landfall.config import ModelSpec, Settings
from landfall.errors import StageFailedError
from landfall.registry import configure_mlflow, resolve_model_version
from services.predictor.stage import score_partition


def test_alias_resolves_to_an_exact_version(settings: Settings) -> None:
    model = resolve_model_version(settings, settings.dataset("demo").model)
    assert (model.name, model.alias) == ("landfall-demo", "champion")
    assert model.version.isdigit()
    assert model.uri == f"models:/landfall-demo/{model.version}"


@pytest.mark.parametrize("uri", ["models:/landfall-demo@nosuchalias", "models:/no-such-model@x"])
def test_unknown_model_or_alias_fails_the_batch(settings: Settings, uri: str) -> None:
    with pytest.raises(StageFailedError, match="cannot be resolved"):
        resolve_model_version(settings, ModelSpec(uri=uri))


def test_one_prediction_per_feature_row_keyed_by_id(
    spark, settings: Settings, tmp_path: Path
) -> None:
    configure_mlflow(settings)
    dataset = settings.dataset("demo")
    model = resolve_model_version(settings, dataset.model)
    rows = [(f"id{i}", float(i % 5) - 2, float(i % 3) - 1, 0.0, float(i % 2)) for i in range(300)]
    # Duplicate feature values across ids: a join on values instead of a key would multiply rows.
    features = spark.createDataFrame(
        rows, "id string, f1 double, f2 double, f1_times_f2 double, is_red double"
    )
    features.write.parquet(str(tmp_path / "features"))

    result = score_partition(spark, dataset, model, tmp_path / "features", tmp_path / "predictions")

    predictions = spark.read.parquet(str(tmp_path / "predictions"))
    assert result.rows == 300 == predictions.count()
    assert predictions.select("id").distinct().count() == 300
    collected = predictions.collect()
    assert {r["model_version"] for r in collected} == {model.version}
    assert {r["model_name"] for r in collected} == {"landfall-demo"}
    assert {r["prediction"] for r in collected} <= {0.0, 1.0}
    # The model really ran: these inputs give both classes.
    assert len({r["prediction"] for r in collected}) == 2


def test_a_feature_table_missing_a_model_input_fails_clearly(
    spark, settings: Settings, tmp_path: Path
) -> None:
    configure_mlflow(settings)
    dataset = settings.dataset("demo")
    model = resolve_model_version(settings, dataset.model)
    spark.createDataFrame([("a", 1.0)], "id string, f1 double").write.parquet(str(tmp_path / "f"))
    with pytest.raises(StageFailedError, match="f2"):
        score_partition(spark, dataset, model, tmp_path / "f", tmp_path / "p")
