"""A dataset's configuration: layouts, references, feature names, ranges and drift.

Everything here is refused or resolved at config load, before any service starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from landfall.config import Settings, load_settings
from landfall.datasets import column_name
from landfall.errors import ConfigError
from landfall.lake import Lake

DATASET: dict[str, Any] = {
    "columns": [{"name": "id"}, {"name": "code"}, {"name": "x", "type": "double"}],
    "features": [{"name": "x2", "expr": "x * 2"}],
    "model": {"uri": "models:/m@champion"},
}


def _load(tmp_path: Path, lake_root: str | None = None, **changes: Any) -> Settings:
    tree: dict[str, Any] = {"home": str(tmp_path), "datasets": {"d": {**DATASET, **changes}}}
    if lake_root is not None:
        tree["lake_root"] = lake_root
    config = tmp_path / "landfall.yaml"
    config.write_text(yaml.safe_dump(tree))
    return load_settings(config, environ={})


# -- raw_path ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("landing/{dataset}/day", r"needs \{partition\} exactly once"),
        ("landing/{partition}/{partition}", r"needs \{partition\} exactly once"),
        ("landing/{date}/{partition}", r"unknown placeholder \{date\} \(known: \{dataset\}"),
        ("{partition}", r"needs a fixed folder before the one holding \{partition\}"),
        ("/srv/landing/{partition}", "must be relative to the lake root"),
        ("landing/../{partition}", r"empty, '\.' or '\.\.' folder"),
        ("landing/{partition!r}", "no format spec or conversion"),
        ("landing/{partition", "not a valid template"),
        ("{dataset}/features/{partition}", "landfall's own {dataset}/features folder"),
    ],
)
def test_a_bad_raw_path_is_refused_at_load_naming_the_key(
    tmp_path: Path, template: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=r"datasets\.d\.raw_path: .*" + problem):
        _load(tmp_path, raw_path=template)


def test_raw_path_places_each_partition_and_defaults_to_the_zone_layout(tmp_path: Path) -> None:
    hive = Lake.from_settings(_load(tmp_path, raw_path="landing/{dataset}/date={partition}/"))
    assert hive.partition_dir("d", "raw", "2024-01-01").rel == "landing/d/date=2024-01-01"
    assert hive.raw_zone("d") == "landing/d"
    plain = Lake.from_settings(_load(tmp_path))
    assert plain.partition_dir("d", "raw", "2024-01-01T05").rel == "d/raw/2024-01-01T05"
    assert plain.raw_zone("d") == "d/raw"


def test_a_full_uri_raw_path_must_lie_in_the_lake(tmp_path: Path) -> None:
    lake_root = tmp_path / "lake"
    inside = _load(tmp_path, raw_path=f"file://{lake_root}/landing/{{partition}}")
    assert Lake.from_settings(inside).partition_dir("d", "raw", "2024-01-01").rel == (
        "landing/2024-01-01"
    )
    with pytest.raises(ConfigError, match=r"datasets\.d\.raw_path: .* is outside the lake"):
        _load(tmp_path, raw_path=f"file://{tmp_path}/elsewhere/{{partition}}")
    s3 = _load(tmp_path, lake_root="s3a://bucket/lake", raw_path="s3://bucket/lake/in/{partition}")
    assert s3.datasets["d"].raw_path == "s3://bucket/lake/in/{partition}"
    with pytest.raises(ConfigError, match="outside the lake"):
        _load(tmp_path, lake_root="s3a://bucket/lake", raw_path="s3a://other/in/{partition}")
    with pytest.raises(ConfigError, match="needs a fixed folder below the lake root"):
        _load(tmp_path, lake_root="s3a://bucket/lake", raw_path="s3a://bucket/lake/{partition}")


# -- references -------------------------------------------------------------------------


def _reference(**fields: Any) -> dict[str, Any]:
    reference = {"name": "r", "keys": ["code"], "columns": ["v"], **fields}
    return {"feature_set": {"references": [reference]}}


def test_a_reference_names_a_dataset_or_a_path(tmp_path: Path) -> None:
    loaded = _load(tmp_path, **_reference(path="ref/rates/date={partition}", format="csv"))
    assert loaded.datasets["d"].feature_set.references[0].path == "ref/rates/date={partition}"
    with pytest.raises(ConfigError, match="needs either dataset or path"):
        _load(tmp_path, **_reference())
    with pytest.raises(ConfigError, match="needs either dataset or path"):
        _load(tmp_path, **_reference(dataset="s", path="ref/s"))
    with pytest.raises(ConfigError, match="zone goes with dataset"):
        _load(tmp_path, **_reference(path="ref/s", zone="raw"))
    with pytest.raises(ConfigError, match=r"reference 'r': path .*unknown placeholder \{dataset\}"):
        _load(tmp_path, **_reference(path="ref/{dataset}/{partition}"))
    with pytest.raises(ConfigError, match=r"'\.\.' folder"):
        _load(tmp_path, **_reference(path="../outside"))


# -- feature names ----------------------------------------------------------------------


def test_one_hot_columns_keep_the_value_s_case_unless_told(tmp_path: Path) -> None:
    feature = {"name": "code", "kind": "one_hot", "column": "code", "unseen": "other"}
    kept = _load(tmp_path, features=[{**feature, "vocabulary": ["9E", "a b", "x-ÿ"]}])
    assert kept.datasets["d"].features[0].output_names() == [
        "code_9E", "code_a_b", "code_x__", "code_other",
    ]  # fmt: skip
    lowered = _load(tmp_path, features=[{**feature, "vocabulary": ["9E"], "name_case": "lower"}])
    assert lowered.datasets["d"].features[0].output_names() == ["code_9e", "code_other"]
    assert column_name("Ab.c", "lower") == "ab_c"


@pytest.mark.parametrize(
    ("vocabulary", "name_case", "why"),
    [
        (["a-b", "a_b"], "keep", "characters other than A-Z a-z 0-9 _ become _"),
        (["A", "a"], "lower", "name_case is lower"),
        (["9E", "9e"], "keep", "Spark column names ignore case"),
        (["other"], "keep", "unseen: other makes a column of its own"),
    ],
)
def test_one_hot_values_that_make_one_column_are_refused(
    tmp_path: Path, vocabulary: list[str], name_case: str, why: str
) -> None:
    feature = {"name": "c", "kind": "one_hot", "column": "code", "vocabulary": vocabulary,
               "name_case": name_case, "unseen": "other"}  # fmt: skip
    with pytest.raises(ConfigError, match=rf"feature 'c': values .* both make column 'c_.*({why})"):
        _load(tmp_path, features=[feature])


def test_two_features_making_one_column_are_refused(tmp_path: Path) -> None:
    one_hot = {"name": "c", "kind": "one_hot", "column": "code", "vocabulary": ["x"]}
    with pytest.raises(ConfigError, match="feature 'c_x' makes column 'c_x', which feature 'c'"):
        _load(tmp_path, features=[one_hot, {"name": "c_x", "expr": "x"}])
    with pytest.raises(ConfigError, match="makes column 'ID', which the id column already is"):
        _load(tmp_path, features=[{"name": "ID", "expr": "x"}])


# -- range rules ------------------------------------------------------------------------


def test_range_bounds_are_inclusive_or_exclusive_never_both(tmp_path: Path) -> None:
    rule = {"name": "positive", "kind": "range", "column": "x"}
    loaded = _load(tmp_path, rules=[{**rule, "min_exclusive": 0, "max": 10}])
    checked = loaded.datasets["d"].rules[0]
    assert (checked.lower, checked.upper) == ((0.0, True), (10.0, False))  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="give min or min_exclusive, not both"):
        _load(tmp_path, rules=[{**rule, "min": 0, "min_exclusive": 0}])
    with pytest.raises(ConfigError, match="give max or max_exclusive, not both"):
        _load(tmp_path, rules=[{**rule, "max": 0, "max_exclusive": 0}])
    with pytest.raises(ConfigError, match="no value lies within its bounds"):
        _load(tmp_path, rules=[{**rule, "min_exclusive": 1, "max": 1}])
    with pytest.raises(ConfigError, match="needs min, max, min_exclusive or max_exclusive"):
        _load(tmp_path, rules=[rule])


# -- drift ------------------------------------------------------------------------------


def test_drift_thresholds_fall_back_column_feature_dataset_global(tmp_path: Path) -> None:
    features = [
        {"name": "x2", "expr": "x * 2"},
        {"name": "at", "kind": "date_parts", "column": "x", "parts": ["hour", "dayofweek"]},
        {"name": "code", "kind": "one_hot", "column": "code", "vocabulary": ["a", "b"]},
    ]
    drift = {
        "features": {
            "at": {"threshold": 0.6},  # every column of the feature...
            "at_hour": {"threshold": 0.9},  # ...but this one
            "code": {"enabled": False},
        }
    }
    loaded = _load(tmp_path, features=features, drift=drift).datasets["d"]
    assert loaded.drift_thresholds(0.2) == {
        "x2": 0.2,
        "at_hour": 0.9,
        "at_dayofweek": 0.6,
        "code_a": None,
        "code_b": None,
    }
    own_default = _load(tmp_path, features=features, drift={**drift, "threshold": 0.3})
    assert own_default.datasets["d"].drift_thresholds(0.2)["x2"] == 0.3


def test_drift_settings_for_what_no_feature_makes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="drift.features names what no feature makes: x3"):
        _load(tmp_path, drift={"features": {"x3": {"enabled": False}}})
    with pytest.raises(ConfigError, match=r"drift\.features\.x2\.threshold"):
        _load(tmp_path, drift={"features": {"x2": {"threshold": 0}}})
