"""The reporting stage and the results database, on local Spark, without a broker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.results import RunHistory
from landfall.runner import Outgoing
from landfall.stage import StageContext
from services.reporter.service import BatchReporter
from tests.reporting_support import failed_event, write_run

PARTITION = "2026-11-04"
PREVIOUS = ["2026-11-01", "2026-11-02", "2026-11-03"]


def _run_events(run) -> list[tuple[EventType, dict]]:  # type: ignore[no-untyped-def]
    """A run's stage events in pipeline order."""
    return [
        (EventType.BATCH_VALIDATED, run.validated),
        (EventType.BATCH_FEATURIZED, run.featurized),
        (EventType.BATCH_PREDICTED, run.predicted),
    ]


def _follow(
    reporter: BatchReporter,
    events: list[tuple[EventType, dict]],
    progress: dict | None = None,
) -> tuple[dict | None, list[Outgoing]]:
    """Feed one run's events to ``reporter`` as the faust app does, with ``progress``
    standing in for the run's entry in its table; return it and what was published."""
    published = []
    for event_type, record in events:
        if reporter.already_reported(record, progress):
            continue
        progress, reported = reporter.follow(event_type, record, progress)
        published.extend([reported] if reported else [])
    return progress, published


def _report_of(settings: Settings, event: dict) -> dict:
    return json.loads((settings.lake / event["report_path"]).read_text())


def test_a_scored_run_gets_a_report_with_plots_quality_and_drift(spark, settings: Settings) -> None:
    # Long: one scenario against one running stack, told in order.
    for seed, partition in enumerate(PREVIOUS):
        write_run(settings.lake, partition, seed=seed)
    # f1 moves by two standard deviations: it must be flagged; f2 does not move.
    run = write_run(settings.lake, PARTITION, shift=2.0, seed=9)
    reporter = BatchReporter(StageContext(settings, "reporter", spark=spark))
    try:
        progress = None
        for event_type, record in [
            (EventType.DATA_LANDED, run.landed),
            (EventType.BATCH_VALIDATED, run.validated),
            (EventType.BATCH_FEATURIZED, run.featurized),
            (EventType.BATCH_PREDICTED, run.predicted),
        ]:
            progress = reporter.observe(event_type, record, progress)
        assert progress is not None
        reported, state = reporter.report(EventType.BATCH_PREDICTED, run.predicted, progress)
    finally:
        reporter.results.dispose()

    event = reported.record
    assert reported.event_type is EventType.BATCH_REPORTED
    assert (event["status"], event["rows_scored"], event["rows_landed"]) == ("SUCCEEDED", 380, 400)
    assert event["drifted_features"] == ["f1"]
    assert state["reported_for"] == run.predicted["event_id"]

    report = _report_of(settings, event)
    assert report["failures_by_rule"] == {"type:feature1": 10, "not_null:feature2": 10}
    assert 0 < report["null_fractions"]["feature3"] < 1
    assert report["model"]["version"] == "3"
    assert [s["stage"] for s in report["timeline"]] == [
        "validation",
        "featurization",
        "prediction",
        "reporting",
    ]
    assert report["stage_durations_ms"]["validation"] == 1500
    distribution = report["prediction_distribution"]
    assert distribution["kind"] == "categorical"
    assert distribution["reference_partitions"] == PREVIOUS
    assert distribution["categories"] == ["0", "1"]
    assert sum(distribution["current"]) == pytest.approx(1.0)
    drift = report["drift"]
    assert drift["reference_partitions"] == PREVIOUS
    assert drift["features"]["f1"]["psi"] > 1.0
    assert drift["features"]["f2"]["psi"] < 0.1
    assert drift["flagged"] == ["f1"]

    html = (settings.lake / event["report_html_path"]).read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    for chart in ("chart-timeline", "chart-grouped", "chart-bar"):
        assert chart in html
    assert len(re.findall(r"<svg ", html)) >= 5
    assert "Drifted" in html and "f1" in html

    db = RunHistory.open(settings.results_db_url)
    try:
        stored = db.run(run.run_id)
        assert stored is not None
        assert stored["status"] == "SUCCEEDED"
        assert stored["drifted_features"] == ["f1"]
        assert stored["quality"]["rule_failures"]["type:feature1"] == 10
        assert stored["prediction_summary"]["rows"] == 380
        assert {s["stage"] for s in stored["stages"]} == {
            "validation",
            "featurization",
            "prediction",
            "reporting",
        }
        assert [d["feature"] for d in stored["drift"] if d["flagged"]] == ["f1"]
    finally:
        db.close()


def test_a_replay_adds_a_run_and_a_redelivery_adds_nothing(spark, settings: Settings) -> None:
    first = write_run(settings.lake, PARTITION, seed=1)
    reporter = BatchReporter(StageContext(settings, "reporter", spark=spark))
    try:
        progress, published = _follow(reporter, _run_events(first)[:2])
        assert published == []
        progress, (reported,) = _follow(
            reporter, [(EventType.BATCH_PREDICTED, first.predicted)], progress
        )
        # The same events again (a redelivery): already reported, nothing new.
        assert _follow(reporter, _run_events(first), progress)[1] == []
    finally:
        reporter.close()
    # Once the run's progress is forgotten (past reporting.progress_retention_hours) the
    # reporter reports again, and still adds nothing: the report written stands.
    restarted = BatchReporter(StageContext(settings, "reporter", spark=spark))
    try:
        _, (again,) = _follow(restarted, [(EventType.BATCH_PREDICTED, first.predicted)])
        replay = write_run(settings.lake, PARTITION, seed=2)
        _, replayed = _follow(restarted, _run_events(replay))
    finally:
        restarted.close()
    assert again.record["report_path"] == reported.record["report_path"]
    assert [out.record["run_id"] for out in replayed] == [replay.run_id]

    db = RunHistory.open(settings.results_db_url)
    try:
        page = db.list_batches()
        assert page.total == 1
        (batch,) = page.items
        assert (batch["batch_id"], batch["run_count"]) == (first.batch_id, 2)
        assert (batch["last_run_id"], batch["last_status"]) == (replay.run_id, "SUCCEEDED")
        runs = db.runs_of(first.batch_id)
        assert [r["run_id"] for r in runs] == [first.run_id, replay.run_id]
        stored = db.run(first.run_id)
        assert stored is not None
        # Stage timings recorded before the progress was forgotten are kept.
        assert len(stored["stages"]) == 4
        metrics = db.metrics()
        assert metrics["batches"] == {"total": 1, "by_status": {"SUCCEEDED": 1}}
        assert metrics["runs"]["total"] == 2
    finally:
        db.close()


def test_a_failed_run_is_reported_and_recorded(spark, settings: Settings, tmp_path: Path) -> None:
    failed = failed_event("2026-11-02")
    reporter = BatchReporter(StageContext(settings, "reporter", spark=spark))
    try:
        _, (reported,) = _follow(reporter, [(EventType.BATCH_FAILED, failed)])
    finally:
        reporter.close()
    event = reported.record
    assert (event["status"], event["failed_stage"]) == ("FAILED", "validation")
    assert event["failure_reason"].startswith("partition not found")
    html = (settings.lake / event["report_html_path"]).read_text()
    assert "partition not found" in html and "A retry may help" in html
    report = _report_of(settings, event)
    assert [(s["stage"], s["status"]) for s in report["timeline"]] == [
        ("validation", "FAILED"),
        ("reporting", "SUCCEEDED"),
    ]
    db = RunHistory.open(settings.results_db_url)
    try:
        stored = db.run(failed["run_id"])
        assert stored is not None
        assert (stored["status"], stored["failed_stage"]) == ("FAILED", "validation")
        (error,) = stored["errors"]
        assert (error["stage"], error["retryable"]) == ("validation", True)
    finally:
        db.close()


def test_null_fractions_are_computed_when_the_validator_gives_none(
    spark, settings: Settings
) -> None:
    run = write_run(settings.lake, PARTITION, seed=3)
    manifest_path = settings.lake / "demo" / "validated" / PARTITION / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["null_fraction"]
    manifest_path.write_text(json.dumps(manifest))
    reporter = BatchReporter(StageContext(settings, "reporter", spark=spark))
    try:
        reported, _ = reporter.report(EventType.BATCH_PREDICTED, run.predicted, {"stages": {}})
    finally:
        reporter.results.dispose()
    report = _report_of(settings, reported.record)
    assert report["null_fractions_of"].startswith("valid rows")
    assert report["null_fractions"]["feature1"] == 0.0
    assert 0 < report["null_fractions"]["feature3"] < 1
    # No previous partitions: nothing to compare, and the report says so.
    assert report["drift"]["flagged"] == []
    assert "no previous partitions" in report["drift"]["note"]


def test_string_class_labels_are_summarised_and_plotted_as_categories(
    spark, tmp_path: Path
) -> None:
    import pandas as pd

    from landfall.lake import MANIFEST_NAME, Lake
    from services.reporter.stage import prediction_distribution, prediction_summary

    lake = Lake(tmp_path / "lake")
    shares = {"2026-11-01": ("no", "no", "yes", None), "2026-11-02": ("yes", "yes", "maybe", "no")}
    for partition, labels in shares.items():
        directory = lake.partition_dir("labels", "predictions", partition)
        directory.mkdir(parents=True)
        frame = pd.DataFrame({"id": [f"r{i}" for i in range(4)], "prediction": list(labels)})
        frame.to_parquet(directory / "part-00000.parquet")
        (directory / MANIFEST_NAME).write_text("{}")
    current = lake.partition_dir("labels", "predictions", "2026-11-02")

    summary = prediction_summary(current)
    assert summary["rows"] == 4 and summary["null_predictions"] == 0
    assert summary["counts_by_value"] == {"yes": 2, "maybe": 1, "no": 1}
    assert "mean" not in summary  # labels have no mean

    distribution = prediction_distribution(lake, "labels", "2026-11-02", current, references=7)
    assert distribution["kind"] == "categorical"
    assert distribution["reference_partitions"] == ["2026-11-01"]
    assert distribution["categories"] == ["maybe", "no", "yes"]
    assert distribution["current"] == pytest.approx([0.25, 0.25, 0.5])
    assert distribution["reference"] == pytest.approx(
        [0.0, 2 / 3, 1 / 3]
    )  # the null is not a class
    assert [p["rows"] for p in distribution["by_partition"]] == [3, 4]


def test_a_restarted_reporter_knows_when_each_dataset_last_succeeded(
    spark, settings: Settings
) -> None:
    import time

    from prometheus_client import REGISTRY

    from landfall.telemetry import LAST_SUCCESS

    def last_success() -> float | None:
        labels = {"service": "reporter", "dataset": "demo"}
        return REGISTRY.get_sample_value("landfall_last_success_timestamp_seconds", labels)

    started = time.time()
    BatchReporter(StageContext(settings, "reporter", spark=spark)).close()
    gauge = last_success()
    assert gauge is not None and started <= gauge <= time.time()  # never reported: from now

    run = write_run(settings.lake, PARTITION, seed=4)
    reporter = BatchReporter(StageContext(settings, "reporter", spark=spark))
    try:
        _, reported = _follow(reporter, _run_events(run))
    finally:
        reporter.close()
    assert [out.record["status"] for out in reported] == ["SUCCEEDED"]
    LAST_SUCCESS.labels("reporter", "demo").set(0)  # what a new process would start from

    BatchReporter(StageContext(settings, "reporter", spark=spark)).close()

    db = RunHistory.open(settings.results_db_url)
    try:
        stored = db.run(run.run_id)
    finally:
        db.close()
    assert stored is not None
    assert last_success() == pytest.approx(stored["reported_at"].timestamp())


def test_drift_thresholds_are_the_dataset_s_per_feature(spark, tmp_path: Path) -> None:
    from tests.conftest import settings_for

    # f1 drifts but is not watched; f2 barely moves, over its own tiny threshold.
    drift = '{"features": {"f1": {"enabled": false}, "f2": {"threshold": 0.0001}}}'
    settings = settings_for(tmp_path, LANDFALL_DATASETS__DEMO__DRIFT=drift)
    for seed, partition in enumerate(PREVIOUS):
        write_run(settings.lake, partition, seed=seed)
    run = write_run(settings.lake, PARTITION, shift=2.0, seed=9)
    reporter = BatchReporter(StageContext(settings, "reporter", spark=spark))
    try:
        reported, _ = reporter.report(EventType.BATCH_PREDICTED, run.predicted, {"stages": {}})
    finally:
        reporter.results.dispose()

    assert reported.record["drifted_features"] == ["f2"]
    report = _report_of(settings, reported.record)
    drift_report = report["drift"]
    assert drift_report["not_watched"] == ["f1"]
    assert "f1" not in drift_report["features"]
    assert drift_report["features"]["f2"]["threshold"] == 0.0001
    assert drift_report["features"]["f2"]["flagged"] is True
    others = {c: f for c, f in drift_report["features"].items() if c != "f2"}
    assert others and all(f["threshold"] == 0.2 for f in others.values())  # the global one
    html = (settings.lake / reported.record["report_html_path"]).read_text()
    assert "own thresholds: f2 0.0001" in html and "not watched: f1" in html


def test_a_regressor_s_predictions_are_binned_against_the_previous_partitions(
    tmp_path: Path,
) -> None:
    import math

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from landfall.lake import MANIFEST_NAME, Lake
    from services.reporter.stage import prediction_distribution, prediction_summary

    lake = Lake(tmp_path / "lake")
    generator = np.random.default_rng(7)
    values = {
        "2026-11-01": generator.normal(10.0, 2.0, 500),
        "2026-11-02": np.append(generator.normal(12.0, 3.0, 300), [math.nan]),
    }
    for partition, predictions in values.items():
        directory = lake.partition_dir("prices", "predictions", partition)
        directory.mkdir(parents=True)
        ids = [f"r{i}" for i in range(len(predictions) + 1)]
        # pyarrow, not pandas: pandas would write the NaN as a null.
        table = pa.table({"id": ids, "prediction": pa.array([*predictions, None], pa.float64())})
        pq.write_table(table, directory / "part-00000.parquet")
        (directory / MANIFEST_NAME).write_text("{}")
    current = lake.partition_dir("prices", "predictions", "2026-11-02")

    summary = prediction_summary(current)
    numbers = values["2026-11-02"][:-1]
    assert summary["rows"] == 302 and summary["null_predictions"] == 1
    # As Spark orders them: NaN is the largest value, and the mean is NaN with it.
    assert math.isnan(summary["max"]) and math.isnan(summary["mean"])
    assert summary["min"] == numbers.min()

    distribution = prediction_distribution(lake, "prices", "2026-11-02", current, references=7)
    assert distribution["kind"] == "histogram"
    together = np.concatenate([values["2026-11-01"], numbers])
    edges = np.linspace(together.min(), together.max(), 21)
    assert distribution["bin_edges"] == pytest.approx(list(edges))
    # numpy's last bin is closed, as landfall's: the maximum falls in bin 19.
    expected_current, _ = np.histogram(numbers, bins=edges)
    expected_reference, _ = np.histogram(values["2026-11-01"], bins=edges)
    assert distribution["current"] == pytest.approx(list(expected_current / len(numbers)))
    assert distribution["reference"] == pytest.approx(list(expected_reference / 500))
    assert [p["rows"] for p in distribution["by_partition"]] == [500, 301]  # the NaN counts
