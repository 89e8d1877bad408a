"""Settings: the YAML file, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from landfall.config import load_settings
from landfall.demo import DEMO_CONFIG
from landfall.errors import ConfigError


def test_demo_config_loads_with_absolute_paths(tmp_path: Path) -> None:
    settings = load_settings(DEMO_CONFIG, environ={"LANDFALL_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.lake == tmp_path / "lake"
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.dataset("demo").model.name == "landfall-demo"
    assert settings.dataset("demo").model.alias == "champion"


def test_environment_overrides_sections_and_nested_keys(tmp_path: Path) -> None:
    settings = load_settings(
        DEMO_CONFIG,
        environ={
            "LANDFALL_KAFKA_BOOTSTRAP": "broker:9092",
            "LANDFALL_SPARK_MASTER": "spark://m:7077",
            "LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS": "6",
            "LANDFALL_HOME": str(tmp_path),
        },
    )
    assert settings.kafka.bootstrap == "broker:9092"
    assert settings.spark.master == "spark://m:7077"
    assert settings.kafka.topics.landed.partitions == 6
    # The rest of the file is untouched by the override.
    assert settings.kafka.topics.landed.name == "landfall.batch-ready"


def test_a_misspelt_key_is_an_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  bootstrapp: x\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrapp"):
        load_settings(config, environ={})


def test_a_bad_model_uri_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "datasets:\n  d:\n    columns: [{name: id}]\n    features: []\n"
        "    model: {uri: 'runs:/abc/model'}\n"
    )
    with pytest.raises(ConfigError, match="models:/name@alias"):
        load_settings(config, environ={})


def test_missing_file_and_unknown_dataset_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    settings = load_settings(DEMO_CONFIG, environ={})
    with pytest.raises(ConfigError, match="unknown dataset 'other'.*demo"):
        settings.dataset("other")


def test_the_scoring_engine_is_chosen_in_config_and_checked(tmp_path: Path) -> None:
    defaults = load_settings(DEMO_CONFIG, environ={}).scoring
    assert (defaults.engine, defaults.model_threads) == ("arrow", 1)
    settings = load_settings(
        DEMO_CONFIG,
        environ={"LANDFALL_SCORING__ENGINE": "spark_udf", "LANDFALL_SCORING__BATCH_ROWS": "5000"},
    )
    assert (settings.scoring.engine, settings.scoring.batch_rows) == ("spark_udf", 5000)
    with pytest.raises(ConfigError, match=r"scoring\.engine"):
        load_settings(DEMO_CONFIG, environ={"LANDFALL_SCORING__ENGINE": "gpu"})
