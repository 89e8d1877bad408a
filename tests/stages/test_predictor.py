"""The prediction stage with models from a real MLflow registry (SQLite store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from landfall.config import GateRule, ModelSpec, ScoringSettings, Settings
from landfall.errors import RetryableError, StageFailedError
from landfall.registry import (
    configure_mlflow,
    enforce_gate,
    registered_metrics,
    resolve_model_version,
)
from services.predictor.stage import score_partition
from tests.conftest import settings_for
from tests.model_support import FEATURES, GOOD, demo_settings_on, model_registry


@pytest.fixture(scope="module")
def models_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared registry of small real models (see tests/model_support.py)."""
    return model_registry(tmp_path_factory)


@pytest.fixture(params=["arrow", "spark_udf"])
def scoring(request: pytest.FixtureRequest) -> ScoringSettings:
    """Each scoring test runs on both engines: they must give the same predictions."""
    return ScoringSettings(engine=request.param)


def _settings(tmp_path: Path, models_home: Path, **model: Any) -> Settings:
    """Demo settings on the models registry, the demo dataset's model spec replaced."""
    return demo_settings_on(tmp_path, models_home, **model)


def _features(spark, path: Path, rows: int = 400, **types: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """A feature table of ``rows`` ids; values repeat, so a join on them would multiply rows."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "id": [f"id{i:05d}" for i in range(rows)],
            "f1": rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], rows),
            "f2": rng.choice([-1.5, -0.5, 0.0, 0.5, 1.5], rows),
        }
    )
    frame["f1_times_f2"] = frame.f1 * frame.f2
    frame["is_red"] = (np.arange(rows) % 3 == 0).astype(float)
    table = spark.createDataFrame(frame)
    for column, kind in types.items():
        table = table.withColumn(column, table[column].cast(kind))
    table.write.mode("overwrite").parquet(str(path))
    return frame


def _score(  # type: ignore[no-untyped-def]
    spark,
    settings: Settings,
    tmp_path: Path,
    scoring: ScoringSettings,
    *,
    features: str = "features",
    out: str = "out",
    challenger: bool = False,
) -> tuple[Any, Any, Any]:
    """Score tmp_path/features into tmp_path/out with the demo dataset's champion (and
    @challenger); return the result and the two resolved versions."""
    dataset = settings.dataset("demo")
    champion = resolve_model_version(settings, dataset.model)
    second = (
        resolve_model_version(settings, dataset.model, alias="challenger") if challenger else None
    )
    result = score_partition(
        spark,
        dataset,
        champion,
        tmp_path / features,
        tmp_path / out,
        challenger=second,
        scoring=scoring,
    )
    return result, champion, second


def _predictions(tmp_path: Path, frame: pd.DataFrame, out: str = "out") -> pd.DataFrame:
    """The written predictions, one row per feature row, in the feature table's order."""
    return pd.read_parquet(tmp_path / out).set_index("id").loc[frame.id]


def _raw(uri: str) -> Any:
    import mlflow.sklearn

    return mlflow.sklearn.load_model(uri)


# ----------------------------------------------------------------------- resolution


def test_alias_resolves_to_an_exact_version(settings: Settings) -> None:
    model = resolve_model_version(settings, settings.dataset("demo").model)
    assert (model.name, model.alias, model.pinned) == ("landfall-demo", "champion", False)
    assert model.version.isdigit()
    assert model.uri == f"models:/landfall-demo/{model.version}"


@pytest.mark.parametrize("uri", ["models:/landfall-demo@nosuchalias", "models:/no-such-model@x"])
def test_unknown_model_or_alias_fails_the_batch_for_good(settings: Settings, uri: str) -> None:
    with pytest.raises(StageFailedError, match="cannot be resolved") as caught:
        resolve_model_version(settings, ModelSpec(uri=uri))
    assert caught.value.retryable is False


def test_an_unreachable_registry_is_retryable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = settings_for(tmp_path, LANDFALL_MLFLOW__TRACKING_URI="http://127.0.0.1:1")
    with pytest.raises(RetryableError, match="registry"):
        resolve_model_version(settings, settings.dataset("demo").model)
    with pytest.raises(RetryableError):
        resolve_model_version(settings, settings.dataset("demo").model, version="1")


def test_a_pinned_version_is_a_version_number_of_the_configured_model(
    tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home)
    spec = settings.dataset("demo").model

    pinned = resolve_model_version(settings, spec, version="2")
    assert (pinned.version, pinned.alias, pinned.pinned) == ("2", None, True)
    assert pinned.uri == "models:/landfall-demo/2"

    for bad in ("models:/yes-no/1", "../2", "2; drop", "runs:/abc/model"):
        with pytest.raises(StageFailedError, match="must be a version number of landfall-demo"):
            resolve_model_version(settings, spec, version=bad)
    with pytest.raises(StageFailedError, match="version 99 cannot be resolved"):
        resolve_model_version(settings, spec, version="99")


# ------------------------------------------------------------------------- the gate


def test_registered_metrics_come_from_the_version(tmp_path: Path, models_home: Path) -> None:
    settings = _settings(tmp_path, models_home)
    assert registered_metrics(settings, "landfall-demo", "1") == GOOD
    assert registered_metrics(settings, "landfall-demo", "3") == {"accuracy": 0.5}
    assert registered_metrics(settings, "landfall-demo", "4") == {}


def test_the_gate_passes_fails_and_counts_a_missing_metric_as_failing(
    tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home)
    spec = settings.dataset("demo").model
    assert [g.metric for g in spec.gate] == ["accuracy", "latency_ms"]

    good = resolve_model_version(settings, spec)
    checks = enforce_gate(settings, spec, good, dataset="demo")
    assert [(c.rule.metric, c.value, c.passed) for c in checks] == [
        ("accuracy", 0.93, True),
        ("latency_ms", 2.0, True),
    ]

    weak = resolve_model_version(settings, spec, alias="weak")
    with pytest.raises(StageFailedError) as caught:
        enforce_gate(settings, spec, weak, dataset="demo")
    reason = caught.value.reason
    assert "landfall-demo version 3 fails the quality gate of dataset demo" in reason
    assert "accuracy 0.5 is below the minimum 0.8" in reason
    assert "latency_ms is not among the version's registered metrics" in reason
    assert caught.value.retryable is False
    assert caught.value.details["gate.accuracy"] == "0.5 (required >= 0.8)"

    unmeasured = resolve_model_version(settings, spec, alias="unmeasured")
    with pytest.raises(StageFailedError, match="accuracy is not among"):
        enforce_gate(settings, spec, unmeasured, dataset="demo")

    no_gate = spec.model_copy(update={"gate": []})
    assert enforce_gate(settings, no_gate, weak, dataset="demo") == []
    upper = spec.model_copy(update={"gate": [GateRule(metric="accuracy", min=0.1, max=0.4)]})
    with pytest.raises(StageFailedError, match="accuracy 0.5 is above the maximum 0.4"):
        enforce_gate(settings, upper, weak, dataset="demo")


# -------------------------------------------------------------------------- scoring


def test_a_classifier_gives_a_class_and_a_probability_per_class(
    spark, scoring: ScoringSettings, tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home)
    frame = _features(spark, tmp_path / "features")

    result, model, _ = _score(spark, settings, tmp_path, scoring)

    out = _predictions(tmp_path, frame)
    assert result.kind == "classifier"
    assert result.probability_columns == ["probability_0", "probability_1"]
    assert result.columns == [
        "id", "prediction", "probability_0", "probability_1",
        "model_name", "model_version", "model_uri",
    ]  # fmt: skip
    raw = _raw(model.uri)
    expected = raw.predict_proba(frame[FEATURES])
    np.testing.assert_allclose(out[["probability_0", "probability_1"]].to_numpy(), expected)
    np.testing.assert_allclose(out[["probability_0", "probability_1"]].sum(axis=1), 1.0)
    # The class is the most probable one, which is what the model's own predict says.
    assert (out.prediction.to_numpy() == raw.predict(frame[FEATURES])).all()
    assert set(out.prediction) == {0.0, 1.0}
    assert out.prediction.dtype == np.float64  # the signature's output type
    assert set(out.model_uri) == {model.uri} and set(out.model_version) == {model.version}


def test_string_class_labels_name_the_probability_columns(
    spark, scoring: ScoringSettings, tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home, uri="models:/yes-no@champion", gate=[])
    frame = _features(spark, tmp_path / "features", rows=120)

    result, _, _ = _score(spark, settings, tmp_path, scoring)

    out = _predictions(tmp_path, frame)
    assert result.probability_columns == ["probability_no", "probability_yes"]
    assert set(out.prediction) == {"no", "yes"}
    assert (out.prediction == np.where(out.probability_yes > 0.5, "yes", "no")).all()


def test_a_regressor_gives_a_value(
    spark, scoring: ScoringSettings, tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home, uri="models:/tiny-regressor@champion", gate=[])
    frame = _features(spark, tmp_path / "features", rows=150)

    result, model, _ = _score(spark, settings, tmp_path, scoring)

    out = _predictions(tmp_path, frame)
    assert (result.kind, result.probability_columns) == ("regressor", [])
    assert [c for c in out.columns if c.startswith("probability")] == []
    np.testing.assert_allclose(out.prediction, _raw(model.uri).predict(frame[FEATURES]))
    assert out.prediction.nunique() > 10


def test_one_prediction_per_feature_row_keyed_by_id(
    spark, scoring: ScoringSettings, settings: Settings, tmp_path: Path
) -> None:
    configure_mlflow(settings)
    frame = _features(spark, tmp_path / "features", rows=3000)

    result, model, _ = _score(spark, settings, tmp_path, scoring, out="predictions")

    predictions = spark.read.parquet(str(tmp_path / "predictions"))
    assert result.rows == 3000 == predictions.count()
    ids = [r["id"] for r in predictions.select("id").collect()]
    assert len(ids) == len(set(ids)) and set(ids) == set(frame.id)
    collected = predictions.collect()
    assert {r["model_version"] for r in collected} == {model.version}
    assert {r["model_name"] for r in collected} == {"landfall-demo"}
    assert {r["model_uri"] for r in collected} == {model.uri}
    # The model really ran: these inputs give both classes.
    assert {r["prediction"] for r in collected} == {0.0, 1.0}


def test_champion_and_challenger_score_the_same_rows_and_are_compared(
    spark, scoring: ScoringSettings, tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home, challenger="challenger")
    frame = _features(spark, tmp_path / "features")

    result, _, challenger = _score(spark, settings, tmp_path, scoring, challenger=True)

    out = _predictions(tmp_path, frame)
    assert len(out) == result.rows == len(frame)
    assert set(out.model_version) == {"1"} and set(out.challenger_model_version) == {"2"}
    assert set(out.challenger_model_uri) == {"models:/landfall-demo/2"}
    np.testing.assert_allclose(
        out.challenger_probability_1, _raw(challenger.uri).predict_proba(frame[FEATURES])[:, 1]
    )
    agreement = float((out.prediction == out.challenger_prediction).mean())
    assert 0.5 < agreement < 1.0, "the fixture's two models should disagree on some rows"
    assert result.comparison is not None
    assert result.comparison.agreement == pytest.approx(agreement)
    assert (result.comparison.rows_compared, result.comparison.mean_abs_diff) == (len(frame), None)


def test_regressor_challenger_reports_the_mean_absolute_difference(
    spark, scoring: ScoringSettings, tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(
        tmp_path, models_home, uri="models:/tiny-regressor@champion", challenger="challenger"
    )
    _features(spark, tmp_path / "features", rows=200)

    result, _, _ = _score(spark, settings, tmp_path, scoring, challenger=True)

    out = pd.read_parquet(tmp_path / "out")
    expected = float((out.prediction - out.challenger_prediction).abs().mean())
    assert result.comparison is not None and result.comparison.agreement is None
    assert result.comparison.mean_abs_diff == pytest.approx(expected)
    assert expected > 0


# ------------------------------------------------------------ signature vs features


def test_a_feature_table_missing_a_model_input_fails_clearly(
    spark, scoring: ScoringSettings, settings: Settings, tmp_path: Path
) -> None:
    configure_mlflow(settings)
    spark.createDataFrame([("a", 1.0)], "id string, f1 double").write.parquet(str(tmp_path / "f"))
    with pytest.raises(
        StageFailedError, match="column f2 is missing; column f1_times_f2 is missing"
    ):
        _score(spark, settings, tmp_path, scoring, features="f", out="p")
    assert not (tmp_path / "p").exists()


def test_a_wrong_type_fails_clearly_and_a_safe_widening_is_accepted(
    spark, scoring: ScoringSettings, tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home)

    _features(spark, tmp_path / "bad", rows=20, is_red="string")
    with pytest.raises(
        StageFailedError, match="column is_red is string but the model expects double"
    ):
        _score(spark, settings, tmp_path, scoring, features="bad", out="p1")

    frame = _features(spark, tmp_path / "ints", rows=50, is_red="int", f2="float")
    result, model, _ = _score(spark, settings, tmp_path, scoring, features="ints", out="p2")
    out = _predictions(tmp_path, frame, out="p2")
    assert result.rows == 50
    assert (out.prediction.to_numpy() == _raw(model.uri).predict(frame[FEATURES])).all()


def test_a_model_that_fails_on_the_data_fails_the_batch_with_its_message(
    spark, scoring: ScoringSettings, tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home)
    spark.createDataFrame(
        [("a", None, 1.0, 1.0, 0.0)], "id string, f1 double, f2 double, f1_times_f2 double, "
        "is_red double"
    ).write.parquet(str(tmp_path / "nan"))  # fmt: skip

    with pytest.raises(StageFailedError, match="the model failed while scoring.*NaN"):
        _score(spark, settings, tmp_path, scoring, features="nan", out="p")


# ------------------------------------------------------------------ the two engines


def test_both_engines_write_the_same_predictions_and_schema(
    spark, tmp_path: Path, models_home: Path
) -> None:
    settings = _settings(tmp_path, models_home, challenger="challenger")
    _features(spark, tmp_path / "features", rows=500)

    results, frames = {}, {}
    for engine in ("arrow", "spark_udf"):
        results[engine], _, _ = _score(
            spark, settings, tmp_path, ScoringSettings(engine=engine), out=engine, challenger=True
        )
        frames[engine] = spark.read.parquet(str(tmp_path / engine)).toPandas().set_index("id")

    arrow, udf = results["arrow"], results["spark_udf"]
    assert (arrow.schema, arrow.columns, arrow.rows) == (udf.schema, udf.columns, udf.rows)
    assert arrow.comparison == udf.comparison
    pd.testing.assert_frame_equal(frames["arrow"], frames["spark_udf"].loc[frames["arrow"].index])


def test_many_small_tasks_lose_and_repeat_no_row(spark, settings: Settings, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    configure_mlflow(settings)
    dataset = settings.dataset("demo")
    model = resolve_model_version(settings, dataset.model)
    frame = _features(spark, tmp_path / "spark-written", rows=3000)
    features = tmp_path / "features"
    features.mkdir()
    for part, chunk in enumerate((frame.iloc[:1700], frame.iloc[1700:])):
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        pq.write_table(table, features / f"part-{part:05d}.parquet", row_group_size=250)

    scoring = ScoringSettings(engine="arrow", rows_per_task=400, batch_rows=100)
    result = score_partition(
        spark, dataset, model, features, tmp_path / "out", expected_rows=3000, scoring=scoring
    )

    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [f"part-{i:05d}.parquet" for i in range(len(files))]  # no partial file
    assert len(files) == 8  # 3000 rows at most 400 a task: 8 tasks, 4 waves of 2 cores
    out = pd.read_parquet(tmp_path / "out")
    assert result.rows == len(out) == 3000
    assert sorted(out.id) == sorted(frame.id)
    expected = _raw(model.uri).predict_proba(frame.set_index("id").loc[out.id][FEATURES])
    np.testing.assert_allclose(out[["probability_0", "probability_1"]].to_numpy(), expected)


def test_an_empty_feature_table_gives_an_empty_prediction_table(
    spark, scoring: ScoringSettings, settings: Settings, tmp_path: Path
) -> None:
    configure_mlflow(settings)
    _features(spark, tmp_path / "full", rows=10)
    spark.read.parquet(str(tmp_path / "full")).limit(0).write.parquet(str(tmp_path / "features"))

    result, _, _ = _score(spark, settings, tmp_path, scoring)

    out = spark.read.parquet(str(tmp_path / "out"))
    assert result.rows == 0 == out.count()
    assert out.columns == result.columns and "probability_1" in out.columns
