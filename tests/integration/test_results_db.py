"""The results database on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import random
import statistics
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from landfall.results import RunHistory, RunKey, RunRecorder, open_results_db
from landfall.results.schema import (
    batch_runs,
    batches,
    feature_drift,
    prediction_summaries,
    quality_figures,
    run_errors,
    stage_runs,
    utc,
)
from tests.postgres import database_url, postgres_server
from tests.reporting_support import finished_report

__all__ = ["database_url", "postgres_server"]  # the fixtures, imported for this module

T0 = datetime(2026, 11, 5, 6, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    results = open_results_db(database_url)
    yield results
    results.dispose()


@pytest.fixture
def rec(engine: Engine) -> RunRecorder:
    return RunRecorder(engine)


@pytest.fixture
def hist(engine: Engine) -> RunHistory:
    return RunHistory(engine)


def _ids(run_id: str, partition: str = "2026-11-01", dataset: str = "demo") -> RunKey:
    return RunKey(f"batch-{dataset}-{partition}", run_id, dataset, partition)


def _stage(rec: RunRecorder, run_id: str, stage: str, at: datetime, **kw: object) -> None:
    ids = _ids(run_id, **kw)  # type: ignore[arg-type]
    rec.record_stage(
        ids,
        stage=stage,
        finished_at=at,
        duration_ms=1000,
        rows=100,
        event_id=f"{run_id}-{stage}",
        figures={"rows_landed": 100} if stage == "validation" else None,
    )


def _report(run_id: str, status: str = "SUCCEEDED", **kw: str) -> dict:
    return finished_report(_ids(run_id, **kw), status, started=T0)


def _counts(hist: RunHistory) -> dict[str, int]:
    tables = [
        batches,
        batch_runs,
        stage_runs,
        quality_figures,
        prediction_summaries,
        feature_drift,
        run_errors,
    ]
    with hist.engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables
        }


def test_a_run_from_submission_to_report(rec: RunRecorder, hist: RunHistory) -> None:
    rec.record_submission(_ids("r1"), submitted_at=T0, model_version="4")
    assert hist.run("r1")["status"] == "SUBMITTED"  # type: ignore[index]
    _stage(rec, "r1", "validation", T0 + timedelta(seconds=4))
    run = hist.run("r1")
    assert run is not None
    assert (run["status"], run["current_stage"], run["rows_landed"]) == (
        "RUNNING",
        "validation",
        100,
    )
    assert run["requested_model_version"] == "4"
    assert run["started_at"] == T0
    rec.record_report(_report("r1"))

    run = hist.run("r1")
    assert run is not None
    assert (run["status"], run["model_version"], run["rows_scored"]) == ("SUCCEEDED", "4", 95)
    assert [s["stage"] for s in run["stages"]] == [
        "validation",
        "featurization",
        "prediction",
        "reporting",
    ]
    assert run["quality"] == {
        "rule_failures": {"not_null:feature2": 5.0},
        "null_fraction": {"feature3": 0.25},
    }
    assert run["prediction_summary"]["mean"] == 0.4
    assert run["drift"] == [{"feature": "f1", "psi": 0.5, "flagged": True}]
    assert run["drifted_features"] == ["f1"]
    assert run["finished_at"] == T0 + timedelta(seconds=30)
    batch = hist.batch("batch-demo-2026-11-01")
    assert batch is not None
    assert (batch["last_run_id"], batch["last_status"]) == ("r1", "SUCCEEDED")


def test_a_replay_adds_a_run_never_a_batch_and_a_late_event_changes_no_status(
    rec: RunRecorder, hist: RunHistory
) -> None:
    _stage(rec, "r1", "validation", T0)
    rec.record_report(_report("r1", "FAILED"))
    rec.record_submission(_ids("r2"), submitted_at=T0 + timedelta(hours=1))
    _stage(rec, "r2", "validation", T0 + timedelta(hours=1, seconds=5))
    # A late, redelivered event of the first run must not make it the latest again,
    # nor reopen it.
    _stage(rec, "r1", "prediction", T0 + timedelta(seconds=20))
    page = hist.list_batches()
    assert page.total == 1
    (batch,) = page.items
    assert (batch["run_count"], batch["last_run_id"], batch["last_status"]) == (2, "r2", "RUNNING")
    assert hist.run("r1")["status"] == "FAILED"  # type: ignore[index]
    assert hist.run("r1")["errors"][0]["reason"] == "model missing"  # type: ignore[index]
    rec.record_report(_report("r2"))
    assert hist.batch("batch-demo-2026-11-01")["last_status"] == "SUCCEEDED"  # type: ignore[index]
    assert [r["run_id"] for r in hist.runs_of("batch-demo-2026-11-01")] == ["r1", "r2"]
    metrics = hist.metrics()
    assert metrics["batches"] == {"total": 1, "by_status": {"SUCCEEDED": 1}}
    assert metrics["runs"]["by_status"] == {"FAILED": 1, "SUCCEEDED": 1}
    assert metrics["error_rates"]["failed_runs"] == 0.5


def test_redelivered_events_change_nothing(rec: RunRecorder, hist: RunHistory) -> None:
    rec.record_submission(_ids("r1"), submitted_at=T0)
    _stage(rec, "r1", "validation", T0 + timedelta(seconds=4))
    rec.record_report(_report("r1", "FAILED"))
    before = _counts(hist)
    rec.record_submission(_ids("r1"), submitted_at=T0)
    _stage(rec, "r1", "validation", T0 + timedelta(seconds=4))
    rec.record_report(_report("r1", "FAILED"))
    assert _counts(hist) == before
    assert before["batches"] == before["batch_runs"] == before["run_errors"] == 1
    assert hist.run("r1")["status"] == "FAILED"  # type: ignore[index]


def test_writers_racing_on_a_new_run_make_one_batch_and_one_run(
    rec: RunRecorder, hist: RunHistory
) -> None:
    # The API (a submission) and the reporter (stage events) write the same new run.
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            if i % 2:
                rec.record_submission(_ids("r1"), submitted_at=T0)
            else:
                _stage(rec, "r1", "validation", T0 + timedelta(seconds=i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    counts = _counts(hist)
    assert (counts["batches"], counts["batch_runs"], counts["stage_runs"]) == (1, 1, 1)
    assert hist.run("r1")["status"] == "RUNNING"  # type: ignore[index]


def test_history_filters_and_pages(rec: RunRecorder, hist: RunHistory) -> None:
    partitions = ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-01T05", "2026-11-02"]
    for i, partition in enumerate(partitions):
        rec.record_submission(_ids(f"a{i}", partition), submitted_at=T0 + timedelta(minutes=i))
        if i % 2 == 0:
            rec.record_report(_report(f"a{i}", partition=partition))
    rec.record_submission(_ids("b0", dataset="other"), submitted_at=T0)

    assert hist.list_batches().total == 6
    demo = hist.list_batches(dataset="demo")
    assert demo.total == 5
    window = hist.list_batches(
        dataset="demo", partition_from="2026-10-31", partition_to="2026-11-01"
    )
    assert sorted(r["partition"] for r in window.items) == [
        "2026-10-31",
        "2026-11-01",
        "2026-11-01T05",
    ]
    done = hist.list_batches(status="SUCCEEDED")
    assert sorted(r["partition"] for r in done.items) == ["2026-10-30", "2026-11-01", "2026-11-02"]
    first, second = hist.list_batches(limit=4), hist.list_batches(limit=4, offset=4)
    assert (len(first.items), len(second.items), first.total) == (4, 2, 6)
    assert not {r["batch_id"] for r in first.items} & {r["batch_id"] for r in second.items}
    assert hist.metrics("other")["batches"] == {"total": 1, "by_status": {"SUBMITTED": 1}}


def test_stuck_runs_are_the_unfinished_ones_with_no_recent_progress(
    rec: RunRecorder, hist: RunHistory
) -> None:
    hour = timedelta(hours=1)
    _stage(rec, "quiet", "validation", T0)  # stopped after validating
    _stage(rec, "moving", "validation", T0)
    _stage(rec, "moving", "featurization", T0 + 3 * hour)  # still making progress
    rec.record_submission(_ids("never", partition="2026-11-02"), submitted_at=T0)
    _stage(rec, "done", "validation", T0, partition="2026-11-03")
    rec.record_report(_report("done", partition="2026-11-03"))
    _stage(rec, "other", "validation", T0, dataset="sensors")

    assert hist.stuck_runs(T0 + 2 * hour) == {"demo": 2, "sensors": 1}  # quiet, never; other
    assert hist.stuck_runs(T0 - hour) == {}  # nothing is quiet for that long yet


def _brute_force_metrics(hist: RunHistory, dataset: str | None) -> dict[str, Any]:
    """The status page's figures the slow way: every row into Python, counted here."""
    with hist.engine.connect() as conn:
        runs = [
            r
            for r in conn.execute(select(batch_runs)).mappings()
            if dataset in (None, r["dataset"])
        ]
        last = [
            r for r in conn.execute(select(batches)).mappings() if dataset in (None, r["dataset"])
        ]
        stages = [
            r
            for r in conn.execute(
                select(stage_runs, batch_runs.c.dataset).join(batch_runs)
            ).mappings()
            if dataset in (None, r["dataset"]) and r["duration_ms"] is not None
        ]
    durations = sorted(
        max((utc(r["finished_at"]) - utc(r["started_at"])).total_seconds(), 0.0)  # type: ignore[operator]
        for r in runs
        if r["finished_at"] is not None
    )
    cuts = statistics.quantiles(durations, n=100, method="inclusive")
    by_stage: dict[str, list[int]] = {}
    for r in stages:
        by_stage.setdefault(r["stage"], []).append(r["duration_ms"])
    return {
        "batches": Counter(r["last_status"] for r in last),
        "runs": Counter(r["status"] for r in runs),
        "rows": {
            k: sum(r[f"rows_{k}"] or 0 for r in runs)
            for k in ("landed", "valid", "quarantined", "scored")
        },
        "durations_s": {
            "runs": len(durations),
            "mean": statistics.fmean(durations),
            "p50": cuts[49],
            "p95": cuts[94],
            "max": durations[-1],
        },
        "stage_durations_ms": {
            stage: {"runs": len(v), "mean": statistics.fmean(v), "max": max(v)}
            for stage, v in by_stage.items()
        },
    }


def test_status_page_figures_equal_a_brute_force_count_over_the_same_rows(
    rec: RunRecorder, hist: RunHistory
) -> None:
    rng = random.Random(11)
    for i in range(53):
        owner = "other" if i % 3 == 0 else "demo"
        key = _ids(f"m{i}", partition=f"2026-10-{i % 28 + 1:02d}", dataset=owner)
        start = T0 + timedelta(minutes=i, milliseconds=rng.randint(0, 999))
        rec.record_submission(key, submitted_at=start)
        if i % 7 == 6:
            continue  # still in flight: no duration
        report = finished_report(key, "FAILED" if i % 4 == 0 else "SUCCEEDED", started=start)
        # Durations from "finished before it started" (a clock step: counted as 0) to 10 min,
        # some equal, so that ties and interpolation between neighbours both occur.
        took = rng.choice([-1500, 30_000, 30_000, rng.randint(0, 600_000)])
        report["reported_at"] = (start + timedelta(milliseconds=took)).isoformat()
        for entry in report["timeline"]:
            entry["duration_ms"] = rng.randint(1, 90_000)
        rec.record_report(report)

    datasets: list[str | None] = [None, "demo", "other"]
    for dataset in datasets:
        expected = _brute_force_metrics(hist, dataset)
        got = hist.metrics(dataset)
        assert got["batches"]["by_status"] == expected["batches"]
        assert got["runs"]["by_status"] == expected["runs"]
        assert got["rows"] == expected["rows"]
        assert got["durations_s"] == pytest.approx(expected["durations_s"], abs=1e-6)
        assert got["stage_durations_ms"].keys() == expected["stage_durations_ms"].keys()
        for stage, figures in expected["stage_durations_ms"].items():
            assert got["stage_durations_ms"][stage] == pytest.approx(figures)
        assert got["durations_s"]["runs"] > 10 and got["durations_s"]["p50"] > 0


def test_no_finished_run_means_no_durations(rec: RunRecorder, hist: RunHistory) -> None:
    rec.record_submission(_ids("r1"), submitted_at=T0)
    assert hist.metrics()["durations_s"] == {
        "runs": 0,
        "mean": None,
        "p50": None,
        "p95": None,
        "max": None,
    }
    # One finished run: every percentile is its duration.
    rec.record_report(_report("r1"))
    assert hist.metrics()["durations_s"] == {
        "runs": 1,
        "mean": 30.0,
        "p50": 30.0,
        "p95": 30.0,
        "max": 30.0,
    }
