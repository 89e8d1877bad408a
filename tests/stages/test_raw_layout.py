"""Landed data where upstream put it: a dataset's ``raw_path`` template.

One function (``Lake.partition_root`` for the raw zone) resolves it; these tests drive
the real validator on local Spark, backfill's and reconcile's plans and the check the
job API makes, all on one Hive-style layout, and show that each finds the same folder
and nothing outside the layout's raw zone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.demo import write_sample_partition
from landfall.errors import PathOutsideLakeError
from landfall.ingress import complete_landed_event
from landfall.lake import Lake
from landfall.operations import plan_backfill
from landfall.reconcile import plan_reconcile
from landfall.stage import StageContext
from services.validator.service import ValidatorService
from tests.conftest import settings_for

PARTITION = "2026-11-05"
HIVE = "landing/{dataset}/date={partition}"


def _settings(home: Path, raw_path: str = HIVE) -> Settings:
    return settings_for(home, LANDFALL_DATASETS__DEMO__RAW_PATH=raw_path)


def _landed(**fields: Any) -> dict[str, Any]:
    return complete_landed_event({"dataset": "demo", "partition": PARTITION, **fields})


def test_a_hive_style_partition_is_validated_where_it_landed(spark, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    validator = ValidatorService(StageContext(settings, "validator", spark=spark))
    lake = validator.context.lake
    landed = write_sample_partition(lake, PARTITION, rows=300)
    assert Path(str(landed.path)).parent == Path(lake.uri) / "landing/demo" / f"date={PARTITION}"

    [out] = validator.handle(EventType.DATA_LANDED, _landed())

    record = out.record
    assert record["rows_landed"] == landed.rows == 300
    assert 0 < record["rows_valid"] < 300  # the sample's bad rows are quarantined
    assert record["output_path"].startswith(f"demo/validated/{PARTITION}/")
    # The partition's own folder name is not read as a column of the data.
    valid = spark.read.parquet(str(lake.path(record["output_path"])))
    assert valid.columns == ["id", "feature1", "feature2", "feature3"]


def test_backfill_and_reconcile_find_partitions_where_the_layout_puts_them(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    lake = Lake.from_settings(settings)
    write_sample_partition(lake, "2026-11-02", rows=20)
    write_sample_partition(lake, "2026-11-03", rows=20)
    # Landed the old way: not where this dataset's data lands, so not found.
    write_sample_partition(Lake(lake.uri), "2026-11-04", rows=20)
    # One partition already scored: a committed predictions output.
    output = lake.stage_output("demo", "predictions", "2026-11-03", "run-1")
    output.staging.mkdir(parents=True)
    (output.staging / "part-0.parquet").write_bytes(b"")
    lake.commit_partition(output, {"run_id": "run-1"})

    plan = plan_backfill(settings, "demo", "2026-11-01", "2026-11-04")
    assert plan.publish == ["2026-11-02", "2026-11-03"]
    assert plan.not_landed == ["2026-11-01", "2026-11-04"]
    missing = plan_backfill(settings, "demo", "2026-11-01", "2026-11-04", missing_only=True)
    assert (missing.publish, missing.already_scored) == (["2026-11-02"], ["2026-11-03"])

    # Neither is in the results database: one never started, one scored unreported.
    repairs = plan_reconcile(settings, "demo", "2026-11-01", "2026-11-04")
    assert [r.partition for r in repairs] == ["2026-11-02", "2026-11-03"]


def test_an_event_path_must_lie_in_the_layout_s_raw_zone(tmp_path: Path) -> None:
    lake = Lake.from_settings(_settings(tmp_path))
    write_sample_partition(lake, PARTITION, rows=20)
    # The check the validator makes, and the job API before it accepts a path.
    found = lake.input_dir(None, dataset="demo", zone="raw", partition=PARTITION)
    assert found.rel == f"landing/demo/date={PARTITION}"
    elsewhere = lake.input_dir(
        "landing/demo/relanded/x", dataset="demo", zone="raw", partition=PARTITION
    )
    assert elsewhere.rel == "landing/demo/relanded/x"
    for path in (f"demo/raw/{PARTITION}", "landing/other/x", "landing/demo"):
        with pytest.raises(PathOutsideLakeError, match="must be a folder inside landing/demo/"):
            lake.input_dir(path, dataset="demo", zone="raw", partition=PARTITION)


def test_a_plain_layout_beside_landfall_s_zones_never_reads_them(tmp_path: Path) -> None:
    lake = Lake.from_settings(_settings(tmp_path, raw_path="lake-in/{dataset}/{partition}"))
    assert lake.partition_dir("demo", "raw", PARTITION).rel == f"lake-in/demo/{PARTITION}"
    beside = Lake.from_settings(_settings(tmp_path, raw_path="demo/{partition}"))
    assert beside.partition_dir("demo", "raw", PARTITION).rel == f"demo/{PARTITION}"
    with pytest.raises(PathOutsideLakeError, match="landfall's own demo/validated/ folder"):
        beside.input_dir(
            f"demo/validated/{PARTITION}", dataset="demo", zone="raw", partition=PARTITION
        )
    with pytest.raises(PathOutsideLakeError, match="bookkeeping"):
        beside.input_dir("demo/_staging/x", dataset="demo", zone="raw", partition=PARTITION)
