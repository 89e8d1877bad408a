"""The validation stage on a local Spark session, without a broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from landfall.config import DatasetConfig
from landfall.errors import StageFailedError
from services.validator.stage import REASONS_COLUMN, validate_partition

BASE: dict[str, Any] = {
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        {"name": "amount", "type": "double", "nullable": False},
        {"name": "count", "type": "int"},
        {"name": "label", "type": "string"},
    ],
    "features": [{"name": "amount", "expr": "amount"}],
    "model": {"uri": "models:/m@champion"},
}


def dataset(**changes: Any) -> DatasetConfig:
    return TypeAdapter(DatasetConfig).validate_python({**BASE, **changes})


def _csv(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "part-0.csv").write_text(text)
    return path


def _run(spark, config: DatasetConfig, raw: Path, tmp_path: Path, **kwargs: Any):
    return validate_partition(
        spark, config, raw, tmp_path / "valid", tmp_path / "quarantine", **kwargs
    )


def _quarantine(spark, tmp_path: Path) -> dict[Any, tuple]:
    rows = spark.read.parquet(str(tmp_path / "quarantine")).collect()
    return {r["id"]: tuple(r[REASONS_COLUMN]) for r in rows}


def test_type_and_null_checks_split_valid_from_quarantined(spark, tmp_path: Path) -> None:
    raw = _csv(
        tmp_path / "raw",
        "id,amount,count,label\n"
        "a,1.5,3,x\n"
        "b,oops,4,y\n"  # amount is not a double
        "c,,5,z\n"  # amount missing in a non-nullable column
        ",2.0,,w\n"  # no id; count may be null
        "e,3.0,seven,\n",  # count is not an int
    )
    result = _run(spark, dataset(), raw, tmp_path)

    assert (result.rows_landed, result.rows_valid, result.rows_quarantined) == (5, 1, 4)
    assert result.failures_by_rule == {
        "not_null:id": 1,
        "not_null:amount": 1,
        "type:amount:double": 1,
        "type:count:int": 1,
    }
    valid = spark.read.parquet(str(tmp_path / "valid"))
    assert [f.dataType.simpleString() for f in valid.schema.fields] == [
        "string",
        "double",
        "int",
        "string",
    ]
    assert [tuple(r) for r in valid.collect()] == [("a", 1.5, 3, "x")]
    quarantined = {
        r["id"]: (r["amount"], r["count"], list(r[REASONS_COLUMN]))
        for r in spark.read.parquet(str(tmp_path / "quarantine")).collect()
    }
    # Quarantine keeps the values as they landed, not the failed casts.
    assert quarantined == {
        "b": ("oops", "4", ["type:amount:double"]),
        "c": (None, "5", ["not_null:amount"]),
        None: ("2.0", None, ["not_null:id"]),
        "e": ("3.0", "seven", ["type:count:int"]),
    }


RULES_CSV = (
    "id,amount,count,label\n"
    "a,5,1,red\n"  # valid
    "b,150,2,red\n"  # amount over max (error)
    "c,-1,3,red\n"  # amount under min (error)
    "d,10,4,purple\n"  # label not allowed (warn: kept)
    "e,10,5,Red!\n"  # label fails regex (error) and is not allowed (warn)
    "e,20,6,red\n"  # duplicate id (error) twice: both e rows
    "f,30,70,red\n"  # amount*count over 1000 (error, free expression)
    "g,40,,red\n"  # count null: the expression is null, which passes
)
RULES = [
    {"name": "amount_range", "kind": "range", "column": "amount", "min": 0, "max": 100},
    {"name": "label_known", "kind": "allowed_values", "column": "label",
     "values": ["red", "green"], "severity": "warn"},
    {"name": "label_word", "kind": "regex", "column": "label", "pattern": "^[a-z]+$"},
    {"name": "id_unique", "kind": "unique", "columns": ["id"]},
    {"name": "small_total", "kind": "expression", "expr": "amount * count <= 1000"},
    {"name": "label_present", "kind": "not_null", "column": "label"},
]  # fmt: skip


def test_every_rule_kind_counts_its_failures_in_one_pass(spark, tmp_path: Path) -> None:
    raw = _csv(tmp_path / "raw", RULES_CSV)
    result = _run(spark, dataset(rules=RULES), raw, tmp_path)

    assert result.failures_by_rule == {
        "not_null:id": 0,
        "not_null:amount": 0,
        "type:amount:double": 0,
        "type:count:int": 0,
        "amount_range": 2,
        "label_known": 2,
        "label_word": 1,
        "id_unique": 2,
        "small_total": 1,
        "label_present": 0,
    }
    assert result.severities["label_known"] == "warn"
    # Warn-only rows stay valid and are counted.
    assert (result.rows_valid, result.rows_quarantined, result.rows_warned) == (3, 5, 1)
    valid_ids = {r["id"] for r in spark.read.parquet(str(tmp_path / "valid")).collect()}
    assert valid_ids == {"a", "d", "g"}
    quarantined = spark.read.parquet(str(tmp_path / "quarantine")).collect()
    reasons = {(r["id"], r["amount"]): set(r[REASONS_COLUMN]) for r in quarantined}
    assert reasons == {
        ("b", "150"): {"amount_range"},
        ("c", "-1"): {"amount_range"},
        ("e", "10"): {"label_word", "id_unique", "label_known"},
        ("e", "20"): {"id_unique"},
        ("f", "30"): {"small_total"},
    }
    # Not one Spark job per rule: the five row rules cost what no rule costs, and all
    # six what the uniqueness rule alone costs (it finds repeated keys up front).
    bare = _run(spark, dataset(), raw, tmp_path / "bare").spark_jobs
    row_rules = [r for r in RULES if r["kind"] != "unique"]
    unique = [r for r in RULES if r["kind"] == "unique"]
    assert _run(spark, dataset(rules=row_rules), raw, tmp_path / "rows").spark_jobs == bare
    assert _run(spark, dataset(rules=unique), raw, tmp_path / "unique").spark_jobs == (
        result.spark_jobs
    )


def test_profile_and_null_fractions(spark, tmp_path: Path) -> None:
    raw = _csv(tmp_path / "raw", "id,amount,count,label\na,1,,x\nb,3,2,x\nc,5,,y\nd,x,1,\n")
    result = _run(spark, dataset(), raw, tmp_path)
    amount = result.profile["amount"]
    assert (amount["count"], amount["nulls"], amount["min"], amount["max"]) == (3, 1, "1.0", "5.0")
    assert amount["mean"] == pytest.approx(3.0)
    assert result.profile["label"]["approx_distinct"] == 2
    assert result.null_fraction == {"id": 0.0, "amount": 0.25, "count": 0.5, "label": 0.25}


def test_over_the_invalid_fraction_the_batch_fails_and_nothing_valid_is_written(
    spark, tmp_path: Path
) -> None:
    raw = _csv(tmp_path / "raw", RULES_CSV)
    config = dataset(rules=RULES, thresholds={"max_invalid_fraction": 0.5})
    result = _run(spark, config, raw, tmp_path)
    assert result.breaches == ["5 of 8 rows invalid (62.5%), over the limit of 50.0%"]
    assert result.breach_details["rule:amount_range"] == "2"
    assert result.breach_details["rule:id_unique"] == "2"
    assert "rule:label_known" not in result.breach_details  # warnings do not make rows invalid
    assert not (tmp_path / "valid").exists()
    assert len(_quarantine(spark, tmp_path)) == 4  # ids b, c, e (twice), f


def test_a_per_rule_limit_fails_the_batch_even_for_a_warning(spark, tmp_path: Path) -> None:
    raw = _csv(tmp_path / "raw", RULES_CSV)
    config = dataset(rules=RULES, thresholds={"per_rule": {"label_known": 0.2}})
    result = _run(spark, config, raw, tmp_path)
    assert result.breaches == [
        "rule 'label_known' failed on 2 of 8 rows (25.0%), over its limit of 20.0%"
    ]
    assert result.breach_details == {"rule:label_known": "2"}
    relaxed = dataset(rules=RULES, thresholds={"per_rule": {"label_known": 0.25}})
    assert _run(spark, relaxed, raw, tmp_path / "again").breaches == []


def test_a_missing_column_fails_with_the_column_named(spark, tmp_path: Path) -> None:
    raw = _csv(tmp_path / "raw", "id,count,label\na,1,x\n")
    with pytest.raises(StageFailedError, match="missing column.*amount"):
        _run(spark, dataset(), raw, tmp_path)


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_extra_columns_are_reported_then_kept_or_dropped(
    spark, tmp_path: Path, policy: str
) -> None:
    raw = _csv(tmp_path / "raw", "id,amount,count,label,surprise\na,1,1,x,new\n")
    result = _run(spark, dataset(extra_columns=policy), raw, tmp_path)
    assert result.extra_columns == ["surprise"]
    columns = spark.read.parquet(str(tmp_path / "valid")).columns
    assert ("surprise" in columns) is (policy == "keep")


def test_a_column_of_an_impossible_type_fails_the_batch_clearly(spark, tmp_path: Path) -> None:
    frame = spark.createDataFrame(
        [("a", [1.0], 1, "x")], "id string, amount array<double>, count int, label string"
    )
    frame.write.parquet(str(tmp_path / "raw"))
    with pytest.raises(StageFailedError, match="'amount' is array<double>.*double"):
        _run(spark, dataset(), tmp_path / "raw", tmp_path, data_format="parquet")


def test_a_lossy_native_type_is_a_row_failure(spark, tmp_path: Path) -> None:
    frame = spark.createDataFrame(
        [("a", 1.0, 2.0, "x"), ("b", 2.0, 2.5, "y")],
        "id string, amount double, count double, label string",
    )
    frame.write.parquet(str(tmp_path / "raw"))
    result = _run(spark, dataset(), tmp_path / "raw", tmp_path, data_format="parquet")
    assert result.failures_by_rule["type:count:int"] == 1  # 2.5 is not an int; 2.0 is
    assert result.rows_valid == 1


def test_a_bad_rule_expression_names_the_rule(spark, tmp_path: Path) -> None:
    raw = _csv(tmp_path / "raw", "id,amount,count,label\na,1,1,x\n")
    rules = [{"name": "nonsense", "kind": "expression", "expr": "amount +"}]
    with pytest.raises(StageFailedError, match="rule 'nonsense'"):
        _run(spark, dataset(rules=rules), raw, tmp_path)
    rules = [{"name": "not_boolean", "kind": "expression", "expr": "amount + 1"}]
    with pytest.raises(StageFailedError, match="not a boolean"):
        _run(spark, dataset(rules=rules), raw, tmp_path)


def test_rules_on_undeclared_columns_are_refused_at_config_time() -> None:
    with pytest.raises(ValueError, match="undeclared column 'nope'"):
        dataset(rules=[{"name": "r", "kind": "not_null", "column": "nope"}])
    with pytest.raises(ValueError, match="unknown rule"):
        dataset(thresholds={"per_rule": {"ghost": 0.1}})


def test_missing_partition_is_a_retryable_failure(spark, tmp_path: Path) -> None:
    with pytest.raises(StageFailedError, match="partition not found") as caught:
        _run(spark, dataset(), tmp_path / "nowhere", tmp_path)
    assert caught.value.retryable


def test_empty_partition_directory_fails(spark, tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(StageFailedError, match="no data files"):
        _run(spark, dataset(), tmp_path / "raw", tmp_path)


def test_exclusive_range_bounds_leave_the_bound_itself_out(spark, tmp_path: Path) -> None:
    raw = _csv(
        tmp_path / "raw",
        "id,amount,count,label\na,1,0,x\nb,1,1,x\nc,1,9,x\nd,1,10,x\ne,1,,x\n",
    )
    rules = [
        {"name": "inclusive", "kind": "range", "column": "count", "min": 0, "max": 10},
        {"name": "exclusive", "kind": "range", "column": "count", "min_exclusive": 0,
         "max_exclusive": 10},
        {"name": "above_zero", "kind": "range", "column": "count", "min_exclusive": 0},
        {"name": "below_ten", "kind": "range", "column": "count", "max_exclusive": 10,
         "severity": "warn"},
    ]  # fmt: skip
    result = _run(spark, dataset(rules=rules), raw, tmp_path)
    failures = {name: result.failures_by_rule[name] for name in [r["name"] for r in rules]}
    assert failures == {"inclusive": 0, "exclusive": 2, "above_zero": 1, "below_ten": 1}
    assert _quarantine(spark, tmp_path) == {
        "a": ("exclusive", "above_zero"),
        "d": ("exclusive", "below_ten"),
    }
