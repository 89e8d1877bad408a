"""Settings from ``LANDFALL_*`` variables: both spellings, values as given, errors by name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from landfall.config import REVEAL_SECRETS, Settings, load_settings
from landfall.config_sources import is_other_variable, settings_path
from landfall.demo import DEMO_CONFIG
from landfall.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t" * 20


def _load(tmp_path: Path, environ: dict[str, str] | None = None, **more: str) -> Settings:
    return load_settings(
        DEMO_CONFIG, environ={"LANDFALL_HOME": str(tmp_path), **(environ or {}), **more}
    )


def test_both_spellings_reach_nested_keys_and_sections_with_underscores(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        {
            "LANDFALL_SPARK__CONF__SPARK.DRIVER.HOST": "driver.example",
            "LANDFALL_SPARK__SERVICES__PREDICTOR__CONF__SPARK.EXECUTOR.MEMORY": "4g",
        },
        LANDFALL_RESULTS_DB_URL="postgresql+psycopg://db/results",
        LANDFALL_OBJECT_STORE_REGION="eu-west-3",
        LANDFALL_LAKE_ROOT="s3a://bucket/lake",
        LANDFALL_KAFKA_MAX_POLL_INTERVAL_MS="60000",
    )
    assert settings.spark.conf["spark.driver.host"] == "driver.example"
    assert settings.spark.conf_for("predictor")["spark.executor.memory"] == "4g"
    assert settings.spark.conf_for("validator").get("spark.executor.memory") is None
    # Sections named with "_" (results_db, object_store) are not lost to "results".
    assert settings.results_db_url == "postgresql+psycopg://db/results"
    assert settings.object_store.region == "eu-west-3"
    assert settings.lake_uri == "s3a://bucket/lake"  # a URI, not a local folder
    assert settings.kafka.max_poll_interval_ms == 60000


def test_the_environment_wins_over_the_file_which_wins_over_the_defaults(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  group_prefix: from-file\n  session_timeout_ms: 7000\n")
    settings = load_settings(config, environ={"LANDFALL_KAFKA__SESSION_TIMEOUT_MS": "9000"})
    assert settings.kafka.session_timeout_ms == 9000  # environment over file
    assert settings.kafka.group_prefix == "from-file"  # file over default
    assert settings.kafka.max_poll_interval_ms == 300_000  # the default
    # The file named by LANDFALL_CONFIG when no path is given.
    named = load_settings(environ={"LANDFALL_CONFIG": str(config)})
    assert named.kafka.group_prefix == "from-file"


@pytest.mark.parametrize("password", ["0123", "yes", "{not json", "a: b", "1e3"])
def test_a_secret_is_taken_verbatim_and_never_shown(tmp_path: Path, password: str) -> None:
    settings = _load(
        tmp_path,
        LANDFALL_KAFKA__SECURITY__PROTOCOL="SASL_PLAINTEXT",
        LANDFALL_KAFKA__SECURITY__SASL_MECHANISM="PLAIN",
        LANDFALL_KAFKA__SECURITY__USERNAME="0042",
        LANDFALL_KAFKA__SECURITY__PASSWORD=password,
    )
    security = settings.kafka.security
    assert security.username == "0042"
    assert security.password is not None
    assert security.password.get_secret_value() == password
    shown = [repr(settings), str(settings), repr(security), str(settings.model_dump())]
    shown.append(json.dumps(settings.model_dump(mode="json")))
    assert not any(f"'{password}'" in text or f'"{password}"' in text for text in shown)
    revealed = settings.model_dump(mode="json", context=REVEAL_SECRETS)
    assert revealed["kafka"]["security"]["password"] == password


def test_a_value_starting_with_a_brace_is_the_string_it_is(tmp_path: Path) -> None:
    settings = _load(tmp_path, LANDFALL_DATASETS__DEMO__RAW_PATH="{dataset}/in/{partition}")
    assert settings.dataset("demo").raw_path == "{dataset}/in/{partition}"


def test_a_whole_section_or_list_is_json(tmp_path: Path) -> None:
    tokens = json.dumps([{"token": TOKEN, "role": "operator", "name": "ci"}])
    settings = _load(tmp_path, LANDFALL_API__TOKENS=tokens)
    assert [(t.role, t.name) for t in settings.api.tokens] == [("operator", "ci")]
    assert settings.api.tokens[0].token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)
    with pytest.raises(ConfigError, match=r"LANDFALL_KAFKA__TOPICS sets kafka\.topics.*JSON"):
        _load(tmp_path, LANDFALL_KAFKA__TOPICS="{landed: x}")


def test_an_empty_variable_unsets_what_the_file_sets(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("telemetry:\n  trace_dir: traces\n")
    assert load_settings(config, environ={}).telemetry.trace_dir is not None
    unset = load_settings(config, environ={"LANDFALL_TELEMETRY__TRACE_DIR": ""})
    assert unset.telemetry.trace_dir is None


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("LANDFALL_KAFKA_BOOTSTRAPP", "LANDFALL_KAFKA_BOOTSTRAP"),
        ("LANDFALL_KAFKA__TOPICS__LANDED__PARTITION", "LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS"),
        ("LANDFALL_DATASETS__DEMO__RAW_PTH", "LANDFALL_DATASETS__DEMO__RAW_PATH"),
        ("LANDFALL_RESULTS_DB_URK", "LANDFALL_RESULTS_DB_URL"),
        ("LANDFALL_LOG_LEVLE", "LANDFALL_LOG_LEVEL"),
        ("LANDFALL_RESULTS_URL", "LANDFALL_RESULTS_DB_URL"),  # a section misnamed
        ("LANDFALL_KAFKA__BOOTSTRAP__HOST", "LANDFALL_KAFKA__BOOTSTRAP"),  # below a plain value
        ("LANDFALL_SPARK____MASTER", "LANDFALL_SPARK__MASTER"),  # an empty key
        ("LANDFALL_WHATEVER", None),
    ],
)
def test_an_unknown_variable_is_an_error_naming_it(
    tmp_path: Path, name: str, hint: str | None
) -> None:
    with pytest.raises(
        ConfigError, match=f"unknown environment variable {re.escape(name)}:"
    ) as err:
        _load(tmp_path, {name: "x"})
    if hint is None:
        assert "did you mean" not in str(err.value)
    else:
        assert f"did you mean {hint}?" in str(err.value)


def test_one_setting_set_by_two_variables_is_an_error(tmp_path: Path) -> None:
    both = {"LANDFALL_RESULTS_DB_URL": "sqlite:///a.db", "LANDFALL_RESULTS_DB__URL": "sqlite:///b"}
    with pytest.raises(ConfigError, match=r"LANDFALL_RESULTS_DB_URL .*both set results_db\.url"):
        _load(tmp_path, both)


def test_variables_landfall_reads_elsewhere_are_no_error(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        LANDFALL_LOG_LEVEL="DEBUG",
        LANDFALL_LOG_FORMAT="json",
        LANDFALL_KAFKA_LIBS="/opt/kafka/libs",  # not kafka.libs
        LANDFALL_TEST_S3_ENDPOINT="http://127.0.0.1:9000",
    )
    assert settings.kafka.bootstrap is None


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS": "many"}, "kafka.topics.landed.partitions"),
        ({"LANDFALL_RUNNER_MAX_ATTEMPTS": "0"}, "runner.max_attempts"),
        ({"LANDFALL_OBJECT_STORE__PATH_STYLE_ACCESS": "maybe"}, "object_store.path_style_access"),
        ({"LANDFALL_KAFKA__SECURITY__PROTOCOL": "SASL_SSL"}, "kafka.security"),
    ],
)
def test_a_value_its_setting_refuses_names_the_variable_and_the_setting(
    tmp_path: Path, environ: dict[str, str], field: str
) -> None:
    (name,) = environ
    with pytest.raises(ConfigError, match=rf"{re.escape(field)} \({name}\): "):
        _load(tmp_path, environ)


def test_a_refused_secret_is_not_echoed(tmp_path: Path) -> None:
    tokens = json.dumps([{"token": "short-s3cret", "role": "read"}])
    with pytest.raises(ConfigError, match=r"api\.tokens\.0\.token \(LANDFALL_API__TOKENS\)") as err:
        _load(tmp_path, LANDFALL_API__TOKENS=tokens)
    assert "short-s3cret" not in str(err.value)


_NAME = re.compile(r"LANDFALL_[A-Z0-9_.]*")
# Where LANDFALL_ variables are set or documented; this file plants unknown ones.
_SCANNED = ["landfall", "services", "tests", "bench", "compose", "docs", "Makefile", "README.md"]


def _mentioned_variables() -> dict[str, Path]:
    mentioned: dict[str, Path] = {}
    for top in _SCANNED:
        root = REPO / top
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            if file.suffix not in ("", ".py", ".md", ".yml", ".yaml") or file == Path(__file__):
                continue
            for name in _NAME.findall(file.read_text(encoding="utf-8", errors="replace")):
                mentioned.setdefault(name.rstrip("."), file)
    return mentioned


def test_every_variable_the_project_mentions_is_a_setting_or_allowed() -> None:
    mentioned = _mentioned_variables()
    assert "LANDFALL_KAFKA_BOOTSTRAP" in mentioned and "LANDFALL_TEST_HDFS" in mentioned
    unknown = []
    for name, where in sorted(mentioned.items()):
        if name.endswith("_") or is_other_variable(name):
            continue
        try:
            settings_path(Settings, name)
        except ConfigError:
            unknown.append(f"{name} ({where.relative_to(REPO)})")
    assert not unknown, "add them to OTHER_VARIABLES or fix the name: " + ", ".join(unknown)


def test_a_stack_settings_file_loads_back_unchanged(tmp_path: Path) -> None:
    # What `landfall up` hands its services: a REVEAL_SECRETS dump, loaded as the file.
    settings = _load(tmp_path, LANDFALL_RESULTS_DB__URL="postgresql://u:0123@db/r")
    dumped = tmp_path / "stack-config.yaml"
    dumped.write_text(yaml.safe_dump(settings.model_dump(mode="json", context=REVEAL_SECRETS)))
    again = load_settings(dumped, environ={})
    assert again.results_db_url == "postgresql://u:0123@db/r"
    assert again.model_dump(mode="json") == settings.model_dump(mode="json")
