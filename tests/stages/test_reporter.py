"""The reporting stage and the results database, without a broker."""

from __future__ import annotations

import json
from pathlib import Path

from landfall.config import Settings
from landfall.contracts import EventType, new_event
from landfall.results_db import ResultsDb
from landfall.stage import StageContext
from services.reporter.service import ReporterService


def _predicted_event(settings: Settings, spark, run_id: str) -> dict:
    lake_dir = settings.lake / "demo" / "predictions" / "2026-11-01"
    spark.createDataFrame(
        [("a", 1.0, "m", "3"), ("b", 0.0, "m", "3"), ("c", 1.0, "m", "3")],
        "id string, prediction double, model_name string, model_version string",
    ).write.mode("overwrite").parquet(str(lake_dir))
    return new_event(
        EventType.BATCH_PREDICTED,
        dataset="demo",
        partition="2026-11-01",
        batch_id="b-1",
        run_id=run_id,
        producer="test/0",
        causation_id="c",
        output_path="demo/predictions/2026-11-01",
        manifest_path="demo/predictions/2026-11-01/_manifest.json",
        rows=3,
        model_name="m",
        model_version="3",
        model_uri="models:/m/3",
        duration_ms=10,
    )


def test_a_report_and_one_batch_row_per_batch_with_a_run_per_replay(
    spark, settings: Settings
) -> None:
    service = ReporterService(StageContext(settings, "reporter", spark=spark))
    try:
        first = service.handle(
            EventType.BATCH_PREDICTED, _predicted_event(settings, spark, "run-1")
        )
        service.handle(EventType.BATCH_PREDICTED, _predicted_event(settings, spark, "run-2"))
    finally:
        service.results.close()

    (reported,) = first
    assert reported.event_type is EventType.BATCH_REPORTED
    assert reported.record["status"] == "SUCCEEDED"
    assert reported.record["rows_scored"] == 3
    report = json.loads((settings.lake / reported.record["report_path"]).read_text())
    assert report["predictions"]["rows"] == 3
    assert report["predictions"]["counts_by_value"] == {"1.0": 2, "0.0": 1}
    assert report["model"] == {"name": "m", "version": "3", "uri": "models:/m/3"}

    db = ResultsDb(settings.results_db_url)
    assert db.batch("b-1")["last_run_id"] == "run-2"
    assert [r["run_id"] for r in db.runs_of("b-1")] == ["run-1", "run-2"]
    db.close()


def test_a_failed_batch_is_reported_and_recorded(spark, settings: Settings, tmp_path: Path) -> None:
    service = ReporterService(StageContext(settings, "reporter", spark=spark))
    failed = new_event(
        EventType.BATCH_FAILED,
        dataset="demo",
        partition="2026-11-02",
        batch_id="b-2",
        run_id="run-9",
        producer="validator/0",
        causation_id="c",
        stage="validation",
        reason="partition not found",
        retryable=True,
        failed_event_type=EventType.DATA_LANDED.value,
    )
    try:
        (reported,) = service.handle(EventType.BATCH_FAILED, failed)
    finally:
        service.results.close()
    assert reported.record["status"] == "FAILED"
    assert reported.record["failed_stage"] == "validation"
    assert reported.record["failure_reason"] == "partition not found"
    db = ResultsDb(settings.results_db_url)
    (run,) = db.runs_of("b-2")
    assert (run["status"], run["failed_stage"]) == ("FAILED", "validation")
    db.close()
