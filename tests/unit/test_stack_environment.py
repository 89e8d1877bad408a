"""What a service started by `landfall up` sees: the stack's settings, and its environment."""

from __future__ import annotations

import json
from pathlib import Path

from landfall.config import load_settings
from landfall.demo import DEMO_CONFIG
from landfall.spark import session_conf
from landfall.stack_environment import child_environment, write_child_settings


def test_settings_overrides_reach_the_services_through_the_file_and_the_rest_as_is(
    tmp_path: Path,
) -> None:
    environ = {
        "PATH": "/usr/bin",
        "LANDFALL_HOME": str(tmp_path / "home"),
        "LANDFALL_KAFKA_BOOTSTRAP": "kafka.example:9092",
        # Per-service Spark settings: the predictor gets more memory and cores.
        "LANDFALL_SPARK__SERVICES": json.dumps(
            {"predictor": {"conf": {"spark.driver.memory": "2g", "spark.executor.cores": "3"}}}
        ),
        "LANDFALL_LOG_LEVEL": "DEBUG",
        "LANDFALL_LOG_FORMAT": "json",
        "LANDFALL_S3A_JARS": "/opt/jars/s3a.jar",
        "LANDFALL_CONFIG": "/somewhere/else.yaml",
    }
    stack_settings = load_settings(DEMO_CONFIG, environ=environ)
    config_file = tmp_path / "stack-config.yaml"
    write_child_settings(stack_settings, config_file)

    child = child_environment(environ, config_file)

    # Not a setting: passed on as they are.
    assert {k: child[k] for k in ("PATH", "LANDFALL_LOG_LEVEL", "LANDFALL_LOG_FORMAT")} == {
        "PATH": "/usr/bin",
        "LANDFALL_LOG_LEVEL": "DEBUG",
        "LANDFALL_LOG_FORMAT": "json",
    }
    assert child["LANDFALL_S3A_JARS"] == "/opt/jars/s3a.jar"
    # Settings: only through the file, so the stack's own choices in it stand.
    assert child["LANDFALL_CONFIG"] == str(config_file)
    assert "LANDFALL_KAFKA_BOOTSTRAP" not in child and "LANDFALL_SPARK__SERVICES" not in child
    served = load_settings(environ=child)
    assert served.kafka.bootstrap == "kafka.example:9092"
    assert served.home == stack_settings.home
    predictor = session_conf(served.spark, "landfall-predictor")
    assert (predictor["spark.driver.memory"], predictor["spark.executor.cores"]) == ("2g", "3")
    # The demo's shared driver memory for the other services.
    assert session_conf(served.spark, "landfall-validator")["spark.driver.memory"] == "768m"
