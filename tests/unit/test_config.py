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


def test_a_service_s_spark_conf_is_merged_over_the_shared_one(tmp_path: Path) -> None:
    from landfall.config import SPARK_SERVICE_NAMES
    from landfall.serve import SERVICE_NAMES
    from landfall.spark import session_conf

    assert SPARK_SERVICE_NAMES == SERVICE_NAMES
    config = tmp_path / "c.yaml"
    config.write_text(
        "spark:\n  master: spark://m:7077\n"
        "  conf: {spark.executor.memory: 1g, spark.executor.cores: 1}\n"
        "  services:\n    predictor:\n      conf: {spark.executor.cores: 2, spark.cores.max: 4}\n"
    )
    spark = load_settings(
        config, environ={"LANDFALL_SPARK__SERVICES__REPORTER__CONF__SPARK.EXECUTOR.MEMORY": "512m"}
    ).spark
    # YAML's numbers are the strings Spark reads.
    assert spark.conf_for("predictor") == {
        "spark.executor.memory": "1g", "spark.executor.cores": "2", "spark.cores.max": "4",
    }  # fmt: skip
    assert spark.conf_for("reporter")["spark.executor.memory"] == "512m"
    assert spark.conf_for("validator") == {
        "spark.executor.memory": "1g", "spark.executor.cores": "1",
    }  # fmt: skip
    # On a standalone master each application is capped at one executor's cores unless
    # configured, so the four services share a cluster instead of the first taking it.
    assert session_conf(spark, "landfall-validator")["spark.cores.max"] == "1"
    assert session_conf(spark, "landfall-predictor")["spark.cores.max"] == "4"
    assert session_conf(spark, "landfall-predictor")["spark.executor.cores"] == "2"
    local = spark.model_copy(update={"master": "local[2]"})
    assert "spark.cores.max" not in session_conf(local, "landfall-validator")

    config.write_text("spark:\n  services:\n    predicter: {conf: {spark.cores.max: 2}}\n")
    with pytest.raises(ConfigError, match=r"spark\.services: .*unknown service predicter"):
        load_settings(config, environ={})


def test_memory_and_cores_are_plain_keys_shared_or_per_service(tmp_path: Path) -> None:
    from landfall.spark import session_conf

    config = tmp_path / "c.yaml"
    config.write_text(
        "spark:\n  master: local[2]\n  driver_memory: 768m\n"
        "  services:\n"
        "    predictor: {driver_memory: 2g, cores: 1}\n"
        "    reporter: {master: 'spark://m:7077', cores: 3, executor_memory: 1g}\n"
    )
    spark = load_settings(
        config, environ={"LANDFALL_SPARK__SERVICES__FEATURIZER__DRIVER_MEMORY": "1g"}
    ).spark
    assert spark.master_for("validator") == "local[2]"
    assert session_conf(spark, "landfall-validator")["spark.driver.memory"] == "768m"
    assert spark.conf_for("featurizer")["spark.driver.memory"] == "1g"
    # On a local master cores is the N of local[N]; on a cluster, the application's cap.
    assert spark.master_for("predictor") == "local[1]"
    assert spark.conf_for("predictor") == {"spark.driver.memory": "2g"}
    assert spark.master_for("reporter") == "spark://m:7077"
    assert session_conf(spark, "landfall-reporter")["spark.cores.max"] == "3"
    assert spark.conf_for("reporter")["spark.executor.memory"] == "1g"
    assert spark.conf_for("reporter")["spark.driver.memory"] == "768m"

    # A service's own conf is more specific than the shared plain key, and wins.
    config.write_text(
        "spark:\n  master: spark://m:7077\n  cores: 2\n"
        "  services:\n    predictor: {conf: {spark.cores.max: 6}}\n"
    )
    spark = load_settings(config, environ={}).spark
    assert spark.conf_for("predictor")["spark.cores.max"] == "6"
    assert spark.conf_for("validator")["spark.cores.max"] == "2"

    config.write_text("spark:\n  driver_memory: 1g\n  conf: {spark.driver.memory: 2g}\n")
    with pytest.raises(ConfigError, match=r"driver_memory and conf\['spark.driver.memory'\]"):
        load_settings(config, environ={})
    config.write_text("spark:\n  services:\n    predictor: {driver_memory: lots}\n")
    with pytest.raises(ConfigError, match=r"spark\.services\.predictor\.driver_memory.*line 3"):
        load_settings(config, environ={})


def test_object_store_settings_come_from_the_environment_verbatim_and_stay_secret(
    tmp_path: Path,
) -> None:
    from landfall.redact import MASK, redact

    secret = "0123e4/no: yaml"  # parsed as YAML this would be no string at all
    settings = load_settings(
        environ={
            "LANDFALL_HOME": str(tmp_path),
            "LANDFALL_LAKE_ROOT": "s3a://lake-bucket/prod",
            "LANDFALL_OBJECT_STORE__ENDPOINT": "http://127.0.0.1:9000",
            "LANDFALL_OBJECT_STORE__ACCESS_KEY_ID": "0001234567",
            "LANDFALL_OBJECT_STORE__SECRET_ACCESS_KEY": secret,
            "LANDFALL_OBJECT_STORE__PATH_STYLE_ACCESS": "false",
        }
    )

    store = settings.object_store
    assert store.endpoint == "http://127.0.0.1:9000" and store.region == "us-east-1"
    assert store.path_style_access is False
    assert store.access_key_id is not None and store.secret_access_key is not None
    assert store.access_key_id.get_secret_value() == "0001234567"
    assert store.secret_access_key.get_secret_value() == secret
    dumped = settings.model_dump(mode="json")["object_store"]
    assert dumped["access_key_id"] == MASK and dumped["secret_access_key"] == MASK
    assert secret not in repr(settings) and secret not in str(store)
    assert redact(f"failed with {secret}") == f"failed with {MASK}"


def test_object_store_defaults_reach_aws_with_its_own_credential_chain() -> None:
    store = load_settings(environ={}).object_store
    assert store.endpoint is None and store.access_key_id is None
    assert store.path_style_access is True and store.region == "us-east-1"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("endpoint: 127.0.0.1:9000", r"object_store\.endpoint must look like http://host:port"),
        ("endpoint: ftp://store", r"object_store\.endpoint must look like"),
        ("endpoint: http://store:9000/lake", r"object_store\.endpoint is the server's address"),
        ("endpoint: 'http://me:hunter22@store'", r"carries user:password@"),
        ("access_key_id: AKIAEXAMPLEKEY", "access_key_id and object_store.secret_access_key go"),
        ("secret_access_key: s3cr3t-s3cr3t", "go together"),
        (
            "session_token: tok-tok-tok",
            r"session_token is set but object_store\.access_key_id",
        ),
        ("endpont: http://x", r"object_store\.endpont"),
    ],
)
def test_bad_object_store_settings_name_the_setting(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"object_store:\n  {yaml_text}\n")

    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(config, environ={})

    assert "hunter22" not in str(caught.value)


def test_a_bad_value_in_the_file_is_named_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "runner:\n"
        "  max_attempts: 3\n"
        "datasets:\n"
        "  demo:\n"
        "    format: csv\n"
        "    id_column: id\n"
        '    raw_path: "landing/{dataset}/latest"\n'
        "    columns: [{name: id, type: string}]\n"
        "    features: [{name: one, expr: '1'}]\n"
        '    model: {uri: "models:/m@champion"}\n'
    )
    with pytest.raises(ConfigError, match=r"datasets\.demo\.raw_path: .*partition.* \(line 7\)"):
        load_settings(config, environ={})
    config.write_text(config.read_text().replace("max_attempts: 3", "max_attempts: many"))
    with pytest.raises(ConfigError, match=r"runner\.max_attempts: .* \(line 2\)"):
        load_settings(config, environ={})
    # Set by a variable, the variable is named instead of the file's line.
    with pytest.raises(
        ConfigError, match=r"runner\.max_attempts \(LANDFALL_RUNNER__MAX_ATTEMPTS\)"
    ):
        load_settings(config, environ={"LANDFALL_RUNNER__MAX_ATTEMPTS": "lots"})
