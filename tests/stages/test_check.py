"""`landfall check`: a dataset's batch tried on a sample, before the first event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from landfall.check import check_dataset
from landfall.config import Settings
from landfall.demo import (
    DEMO_MODEL,
    demo_feature_frame,
    register_demo_model,
    write_sample_partition,
)
from landfall.errors import ConfigError
from landfall.lake import Lake
from landfall.training import register_sklearn_model
from tests.model_support import demo_settings_on

PARTITION = "2026-11-01"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with its own registry: the demo model as @champion, a cased one as @cased."""
    home = tmp_path_factory.mktemp("check")
    settings = _settings(home)
    write_sample_partition(Lake(settings.lake), PARTITION, rows=300)
    register_demo_model(settings)
    _register_cased_model(settings)
    return home


def _settings(home: Path, **model: Any) -> Settings:
    return demo_settings_on(home, home, **model)


def _register_cased_model(settings: Settings) -> None:
    """A model trained outside landfall whose input names differ from the features' case."""
    from sklearn.linear_model import LogisticRegression

    features = demo_feature_frame(500, 4).rename(columns={"f1": "F1", "is_red": "Is_Red"})
    labels = (features.F1 > 0).astype(int)
    model = LogisticRegression().fit(features, labels)
    register_sklearn_model(
        settings, model, features, DEMO_MODEL, alias="cased", experiment="landfall-demo"
    )


def test_a_ready_dataset_passes_every_step_on_a_bounded_sample(spark, home: Path) -> None:  # type: ignore[no-untyped-def]
    report = check_dataset(_settings(home), "demo", partition=PARTITION, rows=120, spark=spark)

    assert report.ok, report.findings
    assert [f.step for f in report.findings] == [
        "landed data", "validation", "featurization", "model", "signature", "scoring",
    ]  # fmt: skip
    assert report.rows["sampled"] == 120  # bounded: the partition has 300 rows
    assert report.rows["valid"] + report.rows["quarantined"] == 120
    assert report.features == ["f1", "f2", "f1_times_f2", "is_red"]
    assert 0 < len(report.scored) <= 5
    assert all("prediction" in row for row in report.scored), report.scored
    # Nothing of the check is left in the lake: only the landed partition is there.
    assert sorted(p.name for p in (Lake(_settings(home).lake).root / "demo").iterdir()) == ["raw"]


def test_a_model_whose_inputs_differ_in_case_is_found_with_did_you_mean(spark, home: Path) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(home, uri=f"models:/{DEMO_MODEL}@cased")
    report = check_dataset(settings, "demo", partition=PARTITION, rows=50, spark=spark)

    assert not report.ok
    problems = {f.step: f.detail for f in report.findings if not f.ok}
    signature = problems["signature"]
    assert "F1 is not a feature column (did you mean f1?" in signature, signature
    assert "Is_Red is not a feature column (did you mean is_red?" in signature, signature
    assert "scoring" not in {f.step for f in report.findings}  # never scored with it


def test_missing_model_alias_and_missing_partition_are_named(spark, home: Path) -> None:  # type: ignore[no-untyped-def]
    settings = _settings(home, uri=f"models:/{DEMO_MODEL}@nobody")
    report = check_dataset(settings, "demo", partition=PARTITION, rows=50, spark=spark)
    (model,) = [f for f in report.findings if f.step == "model"]
    assert not model.ok and f"models:/{DEMO_MODEL}@nobody" in model.detail, model.detail

    missing = check_dataset(_settings(home), "demo", partition="2026-01-01", spark=spark)
    assert [(f.step, f.ok) for f in missing.findings] == [("landed data", False)]
    assert "demo/raw/2026-01-01" in missing.findings[0].detail

    with pytest.raises(ConfigError, match="nosuch"):
        check_dataset(_settings(home), "nosuch", partition=PARTITION, spark=spark)


def _edited_demo_config(folder: Path, old: str, new: str) -> tuple[Path, int]:
    """The demo's settings file with one line changed, and that line's number."""
    from landfall.demo import DEMO_CONFIG

    text = Path(DEMO_CONFIG).read_text()
    assert old in text, old
    config = folder / f"edited-{abs(hash(new))}.yaml"
    config.write_text(text.replace(old, new, 1))
    return config, text[: text.index(old)].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "step", "setting"),
    [
        (  # a rule's expression that does not parse
            "      - {name: feature1_plausible, kind: range, column: feature1, min: -8, max: 8}",
            "      - {name: sane, kind: expression, expr: 'feature1 >>> 0'}",
            "validation", "datasets.demo.rules.2.expr",
        ),
        (  # a feature's expression naming a column the data does not have
            "      - {name: f2, expr: feature2}",
            "      - {name: f2, expr: feature22 * 2}",
            "featurization", "datasets.demo.features.1.expr",
        ),
        (  # a model that does not exist
            "      uri: models:/landfall-demo@champion",
            "      uri: models:/no-such-model@champion",
            "model", "datasets.demo.model.uri",
        ),
    ],
)  # fmt: skip
def test_a_finding_names_the_setting_at_fault_and_its_line(  # type: ignore[no-untyped-def]
    spark, home: Path, tmp_path: Path, old: str, new: str, step: str, setting: str
) -> None:
    from landfall.config import load_settings

    config, line = _edited_demo_config(tmp_path, old, new)
    settings = load_settings(
        config,
        environ={
            "LANDFALL_HOME": str(home),
            "LANDFALL_MLFLOW__TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        },
    )
    report = check_dataset(settings, "demo", partition=PARTITION, rows=50, spark=spark)
    (finding,) = [f for f in report.findings if f.step == step]
    assert not finding.ok
    assert finding.detail.startswith(f"{setting} (line {line}): "), finding.detail
    assert not report.ok


def test_the_command_prints_a_table_and_exits_non_zero_on_a_problem(home: Path) -> None:
    # The demo's config, this home and its registry, as a user's shell would set them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDFALL_")}
    env.update(
        LANDFALL_HOME=str(home),
        LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "landfall", "check", "demo", *args],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    ready = run("--partition", PARTITION, "--rows", "80")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "ready" in ready.stdout and "PROBLEM" not in ready.stdout, ready.stdout
    missing = run("--partition", "2026-01-01", "--json")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    answer = json.loads(missing.stdout)
    assert answer["ok"] is False and answer["findings"][0]["step"] == "landed data"
