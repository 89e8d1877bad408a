"""The arrow validation engine against the Spark one, on the same hostile partitions.

Both engines validate the same landed parquet files; everything they write and report
must agree (the distinct counts are sketches: within 5% of each other).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from landfall.config import DatasetConfig, ValidationSettings
from landfall.demo import DEMO_CONFIG, DEMO_DATASET
from landfall.errors import StageFailedError
from landfall.lake import Lake
from landfall.object_store import lake_store_settings
from services.validator.stage import REASONS_COLUMN, ValidationResult, validate_partition
from tests.conftest import settings_for
from tests.object_store import S3Store

NAN = float("nan")
# (id, amount, count, label, score, flag, day, code, ratio, surprise)
ROWS: list[tuple[Any, ...]] = [
    ("a", 5.0, 1, "red", 0.5, True, 19000, 1, 1e7, "s1"),  # valid
    ("b", 150.0, 2, "red", 0.1, False, 19001, 2, 0.0001, "s2"),  # amount over max
    ("c", -1.0, 3, "green", 0.2, None, 19002, 3, 12.5, None),  # amount under min
    ("d", 10.0, 4, "purple", 0.3, True, 19003, 4, 0.001, "s4"),  # label not allowed (warn)
    ("e", 10.0, 5, "Red!", 0.4, True, None, 5, 1e-5, "s5"),  # regex miss, not allowed
    ("e", 20.0, 6, "red", 0.5, False, 19005, None, 123456789.0, "s6"),  # id repeated
    ("e", 30.0, 7, "red", 0.6, True, 19006, 7, -2.5, "s7"),  # third copy
    (None, 1.0, 8, "red", 0.7, True, 19007, 8, 0.0, "s8"),  # no id
    ("f", None, 9, "red", 0.8, False, 19008, 9, None, "s9"),  # amount missing (required)
    ("g", 100.0, 0, "red", 0.9, True, 19009, 10, 3.0, "s10"),  # count at exclusive min
    ("h", 0.0, 10, "red", 1.0, True, 19010, 11, 1e-3, "s11"),  # count at exclusive max
    ("i", 50.0, None, None, NAN, True, 19011, 12, 7.0, "s12"),  # NaN score (warn), no label
    ("j", 60.0, 2, "green", 1.5, None, 19012, 13, 8.0, "s13"),  # score over its cap (warn)
    ("b", 70.0, 3, "red", None, True, 19013, 14, NAN, "s14"),  # repeats b, in another task
    ("l", 80.0, 4, "Blue", 0.3, False, 19014, 15, 9.0, "s15"),  # regex miss (error)
    ("m", 90.0, 5, "green", 0.1, True, 19015, 16, 10.0, "s16"),  # valid
]
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("amount", pa.float64()),
        ("count", pa.int32()),  # declared bigint: a widening cast
        ("label", pa.string()),
        ("score", pa.float64()),
        ("flag", pa.bool_()),
        ("day", pa.date32()),
        ("code", pa.int64()),  # declared string: Spark's cast to string
        ("ratio", pa.float64()),  # declared string: rendered as Java renders doubles
        ("surprise", pa.string()),  # an extra column
    ]
)
CONFIG: dict[str, Any] = {
    "format": "parquet",
    "columns": [
        {"name": "id", "type": "string", "nullable": False},
        {"name": "amount", "type": "double", "nullable": False},
        {"name": "count", "type": "bigint"},
        {"name": "label", "type": "string"},
        {"name": "score", "type": "double"},
        {"name": "flag", "type": "boolean"},
        {"name": "day", "type": "date"},
        {"name": "code", "type": "string"},
        {"name": "ratio", "type": "string"},
    ],
    "rules": [
        {"name": "amount_range", "kind": "range", "column": "amount", "min": 0, "max": 100},
        {"name": "count_inside", "kind": "range", "column": "count", "min_exclusive": 0,
         "max_exclusive": 10},
        {"name": "score_cap", "kind": "range", "column": "score", "max": 1.0,
         "severity": "warn"},
        {"name": "label_known", "kind": "allowed_values", "column": "label",
         "values": ["red", "green"], "severity": "warn"},
        {"name": "label_word", "kind": "regex", "column": "label", "pattern": "^[a-z]+$"},
        {"name": "id_unique", "kind": "unique", "columns": ["id"]},
        {"name": "label_present", "kind": "not_null", "column": "label", "severity": "warn"},
        {"name": "code_digits", "kind": "regex", "column": "code", "pattern": "^[0-9]$",
         "severity": "warn"},
        {"name": "count_small", "kind": "allowed_values", "column": "count",
         "values": [1, 2, 3, 4.0, 5.5], "severity": "warn"},
        {"name": "pair_unique", "kind": "unique", "columns": ["label", "flag"],
         "severity": "warn"},
    ],
    "features": [{"name": "amount", "expr": "amount"}],
    "model": {"uri": "models:/m@champion"},
}  # fmt: skip


def dataset(**changes: Any) -> DatasetConfig:
    return TypeAdapter(DatasetConfig).validate_python({**CONFIG, **changes})


def land(directory: Path) -> Path:
    """Two files of small row groups: the arrow engine runs several tasks."""
    directory.mkdir(parents=True)
    columns = list(zip(*ROWS, strict=True))
    table = pa.table(
        [pa.array(values, field.type) for values, field in zip(columns, SCHEMA, strict=True)],
        schema=SCHEMA,
    )
    pq.write_table(table.slice(0, 9), directory / "part-0.parquet", row_group_size=3)
    pq.write_table(table.slice(9), directory / "part-1.parquet", row_group_size=4)
    return directory


Engine = Literal["auto", "arrow", "spark"]


def run(spark, config: DatasetConfig, raw: Path, out: Path, engine: Engine) -> ValidationResult:
    return validate_partition(
        spark, config, raw, out / "valid", out / "quarantine",
        settings=ValidationSettings(engine=engine, batch_rows=2),
    )  # fmt: skip


def _key(row: tuple[Any, ...]) -> str:
    return repr(tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row))


def written(spark, folder: Path) -> tuple[str, list[str]]:
    frame = spark.read.parquet(str(folder))
    return frame.schema.simpleString(), sorted(_key(tuple(r)) for r in frame.collect())


def assert_same_profile(spark_run: ValidationResult, arrow_run: ValidationResult) -> None:
    assert spark_run.profile.keys() == arrow_run.profile.keys()
    for name, expected in spark_run.profile.items():
        got = arrow_run.profile[name]
        assert got.keys() == expected.keys(), name
        for stat in ("type", "count", "nulls", "min", "max"):
            assert got.get(stat) == expected.get(stat), (name, stat)
        if expected.get("mean") is not None:
            assert got["mean"] == pytest.approx(expected["mean"], nan_ok=True), name
        assert got["approx_distinct"] == pytest.approx(expected["approx_distinct"], rel=0.05)


@pytest.mark.parametrize("policy", ["keep", "drop"])
def test_both_engines_write_and_report_the_same(spark, tmp_path: Path, policy: str) -> None:
    raw, config = land(tmp_path / "raw"), dataset(extra_columns=policy)
    by_spark = run(spark, config, raw, tmp_path / "spark", "spark")
    by_arrow = run(spark, config, raw, tmp_path / "arrow", "arrow")

    assert (by_spark.engine, by_arrow.engine) == ("spark", "arrow")
    assert by_arrow.rows() == by_spark.rows()
    assert by_spark.rows()["quarantined"] == 11  # the cases above do break
    assert by_arrow.failures_by_rule == by_spark.failures_by_rule
    assert list(by_arrow.failures_by_rule) == list(by_spark.failures_by_rule)  # check order
    assert by_arrow.severities == by_spark.severities
    assert by_arrow.null_fraction == by_spark.null_fraction
    assert by_arrow.extra_columns == by_spark.extra_columns == ["surprise"]
    assert by_arrow.valid_schema == by_spark.valid_schema
    assert_same_profile(by_spark, by_arrow)
    assert (by_spark.profile["amount"]["max"], by_spark.profile["score"]["max"]) == ("150.0", "NaN")
    for folder in ("valid", "quarantine"):
        assert written(spark, tmp_path / "arrow" / folder) == written(
            spark, tmp_path / "spark" / folder
        ), folder
    reasons = {
        r["id"]: list(r[REASONS_COLUMN])
        for r in spark.read.parquet(str(tmp_path / "arrow" / "quarantine")).collect()
        if r["id"] in ("e", "l")
    }
    assert reasons["l"] == ["label_word", "label_known", "code_digits"]  # errors first
    ratios = {r["id"]: r["ratio"] for r in spark.read.parquet(str(tmp_path / "arrow" / "valid"))
              .collect()}  # fmt: skip
    assert ratios["a"] == "1.0E7"  # a double cast to string as Java renders it


def test_an_empty_partition_gives_the_same_empty_outputs(spark, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(SCHEMA.empty_table(), raw / "part-0.parquet")
    by_spark = run(spark, dataset(), raw, tmp_path / "spark", "spark")
    by_arrow = run(spark, dataset(), raw, tmp_path / "arrow", "arrow")

    assert by_arrow.rows() == by_spark.rows() == dict.fromkeys(by_spark.rows(), 0)
    assert by_arrow.profile == by_spark.profile
    assert by_arrow.valid_schema == by_spark.valid_schema
    for folder in ("valid", "quarantine"):
        assert written(spark, tmp_path / "arrow" / folder) == written(
            spark, tmp_path / "spark" / folder
        ), folder


def test_a_broken_threshold_writes_no_valid_rows_in_either_engine(spark, tmp_path: Path) -> None:
    raw = land(tmp_path / "raw")
    config = dataset(thresholds={"max_invalid_fraction": 0.25, "per_rule": {"score_cap": 0.1}})
    by_spark = run(spark, config, raw, tmp_path / "spark", "spark")
    by_arrow = run(spark, config, raw, tmp_path / "arrow", "arrow")

    assert len(by_spark.breaches) == 2
    assert (by_arrow.breaches, by_arrow.breach_details) == (
        by_spark.breaches,
        by_spark.breach_details,
    )
    assert by_arrow.valid_schema == by_spark.valid_schema
    assert not (tmp_path / "spark" / "valid").exists()
    assert not (tmp_path / "arrow" / "valid").exists()
    assert written(spark, tmp_path / "arrow" / "quarantine") == written(
        spark, tmp_path / "spark" / "quarantine"
    )


def _demo(**changes: Any) -> DatasetConfig:
    from landfall.config import load_settings

    return load_settings(DEMO_CONFIG).dataset(DEMO_DATASET).model_copy(update=changes)


def test_auto_picks_arrow_for_the_demo_dataset_landed_as_parquet(spark, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    table = pa.table(
        {
            "id": ["r1", "r2", "r2", "x3"],
            "feature1": [0.5, 9.0, 1.0, 2.0],
            "feature2": [1.0, 2.0, None, 4.0],
            "feature3": ["red", "blue", "pink", None],
        }
    )
    pq.write_table(table, raw / "part-0.parquet")
    result = run(spark, _demo(format="parquet"), raw, tmp_path, "auto")
    assert result.engine == "arrow"
    assert result.rows() == {"landed": 4, "valid": 1, "quarantined": 3, "warned": 0}


def test_auto_picks_spark_for_csv_or_a_free_expression(spark, tmp_path: Path) -> None:
    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "part-0.csv").write_text("id,feature1,feature2,feature3\nr1,0.5,1.0,red\n")
    assert run(spark, _demo(), csv, tmp_path / "a", "auto").engine == "spark"

    expression = {"name": "small", "kind": "expression", "expr": "amount < 1000"}
    config = dataset(rules=[*CONFIG["rules"], expression])
    assert run(spark, config, land(tmp_path / "raw"), tmp_path / "b", "auto").engine == "spark"


def test_the_arrow_engine_names_what_it_cannot_validate(spark, tmp_path: Path) -> None:
    raw = land(tmp_path / "raw")
    expression = {"name": "small", "kind": "expression", "expr": "amount < 1000"}
    config = dataset(rules=[*CONFIG["rules"], expression])
    with pytest.raises(StageFailedError, match="rule 'small': only Spark evaluates") as caught:
        run(spark, config, raw, tmp_path, "arrow")
    assert caught.value.setting == ("rules", len(CONFIG["rules"]), "expr")

    narrowing = [{**c, "type": "int"} if c["name"] == "code" else c for c in CONFIG["columns"]]
    with pytest.raises(StageFailedError, match="column 'code': it lands as bigint") as caught:
        run(spark, dataset(columns=narrowing), raw, tmp_path, "arrow")
    assert caught.value.setting == ("columns", 7, "type")

    lookahead = [{"name": "ahead", "kind": "regex", "column": "label", "pattern": "^(?=r)"}]
    with pytest.raises(StageFailedError, match="'ahead'.*does not compile as RE2"):
        run(spark, dataset(rules=lookahead), raw, tmp_path, "arrow")


def test_the_arrow_engine_validates_a_partition_on_the_object_store(
    spark, s3_endpoint: S3Store, s3_bucket: str, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path, LANDFALL_LAKE_ROOT=f"s3a://{s3_bucket}/lake", **s3_endpoint.environ()
    )
    lake = Lake.from_settings(settings)
    store = lake_store_settings(settings.lake_uri, settings.object_store, settings.hdfs)
    local = land(tmp_path / "raw")
    raw = lake.path("things/raw/p1")
    for part in sorted(local.iterdir()):
        (raw / part.name).write_bytes(part.read_bytes())
    config = dataset(thresholds={"max_invalid_fraction": 0.25})
    by_arrow = validate_partition(
        spark, config, raw, lake.path("things/valid"), lake.path("things/quarantine"),
        settings=ValidationSettings(engine="arrow"), store=store,
    )  # fmt: skip
    by_spark = run(spark, config, local, tmp_path / "spark", "spark")

    assert (by_arrow.rows(), by_arrow.breaches) == (by_spark.rows(), by_spark.breaches)
    assert not lake.path("things/valid").exists()  # over the threshold: no valid rows
    quarantined = spark.read.parquet(str(lake.path("things/quarantine")))
    assert quarantined.count() == by_spark.rows_quarantined
