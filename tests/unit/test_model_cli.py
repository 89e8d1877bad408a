"""``landfall model register|promote|list`` against a real SQLite MLflow registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from landfall.cli import app
from landfall.config import Settings
from landfall.registry import mlflow_client, resolve_model_version
from tests.conftest import settings_for
from tests.model_support import classifier_dir, register

GOOD = {"accuracy": 0.91, "latency_ms": 4.0}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a model directory saved and version 1 (good metrics) at @champion."""
    home = tmp_path_factory.mktemp("cli-registry")
    settings = settings_for(home)
    classifier_dir(home / "classifier")
    register(settings, home / "classifier", "landfall-demo", alias="champion", metrics=GOOD)
    return home


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    """A private copy of the template registry (artifacts stay shared, read-only)."""
    shutil.copy(template / "mlflow.db", tmp_path / "mlflow.db")
    return tmp_path


def _settings(home: Path) -> Settings:
    return settings_for(home)


def _landfall(home: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env={"LANDFALL_HOME": str(home)})


def _champion(home: Path) -> str:
    settings = _settings(home)
    return resolve_model_version(settings, settings.dataset("demo").model).version


def test_register_a_local_model_directory_with_metrics_then_list_it(
    home: Path, template: Path
) -> None:
    result = _landfall(
        home,
        "model",
        "register",
        str(template / "classifier"),
        "--name",
        "landfall-demo",
        "--metric",
        "accuracy=0.85",
        "-m",
        "latency_ms=12.5",
    )
    assert result.exit_code == 0, result.output
    assert "registered landfall-demo version 2" in result.output
    assert "accuracy=0.85" in result.output

    listed = _landfall(home, "model", "list", "landfall-demo", "--json")
    assert listed.exit_code == 0, listed.output
    versions = {v["version"]: v for v in json.loads(listed.output)}
    assert set(versions) == {"1", "2"}
    assert versions["2"]["metrics"] == {"accuracy": 0.85, "latency_ms": 12.5}
    assert versions["2"]["aliases"] == []
    assert versions["1"]["aliases"] == ["champion"]
    assert versions["2"]["registered_at"] >= versions["1"]["registered_at"]

    table = _landfall(home, "model", "list", "landfall-demo")
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split() == ["version", "aliases", "registered", "(UTC)", "metrics"]
    assert lines[1].split()[:2] == ["2", "-"] and "latency_ms=12.5" in lines[1]
    assert lines[2].split()[:2] == ["1", "champion"]


def test_register_a_runs_uri_records_the_metrics_on_the_version(home: Path) -> None:
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from landfall.registry import configure_mlflow
    from tests.model_support import FEATURES, training_frame

    settings = _settings(home)
    configure_mlflow(settings)
    # MLflow remembers the last active experiment across tracking URIs; name one here.
    mlflow.set_experiment("register-from-a-run")
    frame = training_frame()
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            LogisticRegression().fit(frame[FEATURES], frame["label"]),
            name="model",
            pip_requirements=["scikit-learn"],
        )

    result = _landfall(
        home, "model", "register", f"runs:/{run.info.run_id}/model", "-n", "from-a-run",
        "-m", "accuracy=0.97",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    listed = json.loads(_landfall(home, "model", "list", "from-a-run", "--json").output)
    assert listed[0]["metrics"] == {"accuracy": 0.97}
    assert listed[0]["run_id"] == run.info.run_id


def test_promote_a_version_that_passes_the_gate(home: Path, template: Path) -> None:
    version = register(_settings(home), template / "classifier", "landfall-demo", metrics=GOOD)

    result = _landfall(home, "model", "promote", "landfall-demo", version, "--alias", "champion")

    assert result.exit_code == 0, result.output
    assert "gate of dataset demo: passes" in result.output
    assert _champion(home) == version


@pytest.mark.parametrize(
    ("metrics", "says"),
    [
        ({"accuracy": 0.55, "latency_ms": 4.0}, "accuracy 0.55 is below the minimum 0.8"),
        ({"accuracy": 0.95, "latency_ms": 250.0}, "latency_ms 250 is above the maximum 100"),
        ({"accuracy": 0.95}, "latency_ms is not among the version's registered metrics"),
    ],
)
def test_promote_refuses_a_version_failing_the_gate(
    home: Path, template: Path, metrics: dict[str, float], says: str
) -> None:
    before = _champion(home)
    weak = register(_settings(home), template / "classifier", "landfall-demo", metrics=metrics)

    result = _landfall(home, "model", "promote", "landfall-demo", weak, "--alias", "champion")

    assert result.exit_code == 2
    assert says in result.output
    assert "dataset demo" in result.output and "--force" in result.output
    assert _champion(home) == before


def test_promote_with_force_moves_the_alias_anyway(home: Path, template: Path) -> None:
    weak = register(
        _settings(home), template / "classifier", "landfall-demo", metrics={"accuracy": 0.5}
    )

    result = _landfall(
        home, "model", "promote", "landfall-demo", weak, "--alias", "champion", "--force"
    )

    assert result.exit_code == 0, result.output
    assert "FAILS (forced)" in result.output and "accuracy 0.5 is below" in result.output
    assert _champion(home) == weak


def test_promote_to_an_alias_no_dataset_uses_checks_no_gate(home: Path, template: Path) -> None:
    weak = register(
        _settings(home), template / "classifier", "landfall-demo", metrics={"accuracy": 0.5}
    )

    result = _landfall(home, "model", "promote", "landfall-demo", weak, "--alias", "staging")

    assert result.exit_code == 0, result.output
    assert "no gate checked" in result.output
    alias = mlflow_client(_settings(home)).get_model_version_by_alias("landfall-demo", "staging")
    assert str(alias.version) == weak


def test_promote_checks_the_named_dataset_s_gate(home: Path, template: Path) -> None:
    weak = register(
        _settings(home), template / "classifier", "landfall-demo", metrics={"accuracy": 0.5}
    )

    result = _landfall(
        home, "model", "promote", "landfall-demo", weak, "--alias", "staging", "--dataset", "demo"
    )

    assert result.exit_code == 2
    assert "accuracy 0.5 is below the minimum 0.8" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["promote", "landfall-demo", "9", "--alias", "champion"], "version 9"),
        (["promote", "no-such-model", "1", "--alias", "champion"], "no-such-model"),
        (["promote", "landfall-demo", "latest", "--alias", "champion"], "is a number"),
        (["list", "no-such-model"], "registered model no-such-model cannot be found"),
        (["register", "/no/such/dir", "--name", "x"], "not an MLflow model directory"),
        (["register", "s3://bucket/model", "--name", "x"], "cannot register"),
    ],
)
def test_unknown_models_versions_and_sources_get_a_clear_error(
    home: Path, args: list[str], says: str
) -> None:
    result = _landfall(home, "model", *args)

    assert result.exit_code == 2
    assert says in result.output
    assert "Traceback" not in result.output


def test_a_metric_that_is_not_name_equals_number_is_a_usage_error(home: Path) -> None:
    result = _landfall(home, "model", "register", str(home), "--name", "x", "--metric", "acc")

    assert result.exit_code == 2
    assert "name=number" in result.output


def test_publish_refuses_a_model_version_that_is_not_a_number(home: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["publish", "demo", "2026-11-01", "--model-version", "models:/other/3"],
        env={"LANDFALL_HOME": str(home), "LANDFALL_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
    )

    assert result.exit_code == 2
    assert "version number" in result.output
