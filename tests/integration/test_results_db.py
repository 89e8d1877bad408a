"""The results database on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from landfall.results_db import (
    ResultsDb,
    RunKey,
    batch_runs,
    batches,
    feature_drift,
    prediction_summaries,
    quality_figures,
    run_errors,
    stage_runs,
)
from tests.postgres import create_database, postgres_server
from tests.reporting_support import finished_report

__all__ = ["postgres_server"]  # the fixture, imported for this module

T0 = datetime(2026, 11, 5, 6, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultsDb]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'results.db'}"
    else:
        url = create_database(request.getfixturevalue("postgres_server"))
    results = ResultsDb(url)
    yield results
    results.close()


def _ids(run_id: str, partition: str = "2026-11-01", dataset: str = "demo") -> RunKey:
    return RunKey(f"batch-{dataset}-{partition}", run_id, dataset, partition)


def _stage(db: ResultsDb, run_id: str, stage: str, at: datetime, **kw: object) -> None:
    ids = _ids(run_id, **kw)  # type: ignore[arg-type]
    db.record_stage(
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


def _counts(db: ResultsDb) -> dict[str, int]:
    tables = [
        batches,
        batch_runs,
        stage_runs,
        quality_figures,
        prediction_summaries,
        feature_drift,
        run_errors,
    ]
    with db.engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables
        }


def test_a_run_from_submission_to_report(db: ResultsDb) -> None:
    db.record_submission(_ids("r1"), submitted_at=T0, model_version="4")
    assert db.run("r1")["status"] == "SUBMITTED"  # type: ignore[index]
    _stage(db, "r1", "validation", T0 + timedelta(seconds=4))
    run = db.run("r1")
    assert run is not None
    assert (run["status"], run["current_stage"], run["rows_landed"]) == (
        "RUNNING",
        "validation",
        100,
    )
    assert run["requested_model_version"] == "4"
    assert run["started_at"] == T0
    db.record_report(_report("r1"))

    run = db.run("r1")
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
    batch = db.batch("batch-demo-2026-11-01")
    assert batch is not None
    assert (batch["last_run_id"], batch["last_status"]) == ("r1", "SUCCEEDED")


def test_a_replay_adds_a_run_never_a_batch_and_a_late_event_changes_no_status(
    db: ResultsDb,
) -> None:
    _stage(db, "r1", "validation", T0)
    db.record_report(_report("r1", "FAILED"))
    db.record_submission(_ids("r2"), submitted_at=T0 + timedelta(hours=1))
    _stage(db, "r2", "validation", T0 + timedelta(hours=1, seconds=5))
    # A late, redelivered event of the first run must not make it the latest again,
    # nor reopen it.
    _stage(db, "r1", "prediction", T0 + timedelta(seconds=20))
    page = db.list_batches()
    assert page.total == 1
    (batch,) = page.items
    assert (batch["run_count"], batch["last_run_id"], batch["last_status"]) == (2, "r2", "RUNNING")
    assert db.run("r1")["status"] == "FAILED"  # type: ignore[index]
    assert db.run("r1")["errors"][0]["reason"] == "model missing"  # type: ignore[index]
    db.record_report(_report("r2"))
    assert db.batch("batch-demo-2026-11-01")["last_status"] == "SUCCEEDED"  # type: ignore[index]
    assert [r["run_id"] for r in db.runs_of("batch-demo-2026-11-01")] == ["r1", "r2"]
    metrics = db.metrics()
    assert metrics["batches"] == {"total": 1, "by_status": {"SUCCEEDED": 1}}
    assert metrics["runs"]["by_status"] == {"FAILED": 1, "SUCCEEDED": 1}
    assert metrics["error_rates"]["failed_runs"] == 0.5


def test_redelivered_events_change_nothing(db: ResultsDb) -> None:
    db.record_submission(_ids("r1"), submitted_at=T0)
    _stage(db, "r1", "validation", T0 + timedelta(seconds=4))
    db.record_report(_report("r1", "FAILED"))
    before = _counts(db)
    db.record_submission(_ids("r1"), submitted_at=T0)
    _stage(db, "r1", "validation", T0 + timedelta(seconds=4))
    db.record_report(_report("r1", "FAILED"))
    assert _counts(db) == before
    assert before["batches"] == before["batch_runs"] == before["run_errors"] == 1
    assert db.run("r1")["status"] == "FAILED"  # type: ignore[index]


def test_writers_racing_on_a_new_run_make_one_batch_and_one_run(db: ResultsDb) -> None:
    # The API (a submission) and the reporter (stage events) write the same new run.
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            if i % 2:
                db.record_submission(_ids("r1"), submitted_at=T0)
            else:
                _stage(db, "r1", "validation", T0 + timedelta(seconds=i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    counts = _counts(db)
    assert (counts["batches"], counts["batch_runs"], counts["stage_runs"]) == (1, 1, 1)
    assert db.run("r1")["status"] == "RUNNING"  # type: ignore[index]


def test_history_filters_and_pages(db: ResultsDb) -> None:
    partitions = ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-01T05", "2026-11-02"]
    for i, partition in enumerate(partitions):
        db.record_submission(_ids(f"a{i}", partition), submitted_at=T0 + timedelta(minutes=i))
        if i % 2 == 0:
            db.record_report(_report(f"a{i}", partition=partition))
    db.record_submission(_ids("b0", dataset="other"), submitted_at=T0)

    assert db.list_batches().total == 6
    demo = db.list_batches(dataset="demo")
    assert demo.total == 5
    window = db.list_batches(dataset="demo", partition_from="2026-10-31", partition_to="2026-11-01")
    assert sorted(r["partition"] for r in window.items) == [
        "2026-10-31",
        "2026-11-01",
        "2026-11-01T05",
    ]
    done = db.list_batches(status="SUCCEEDED")
    assert sorted(r["partition"] for r in done.items) == ["2026-10-30", "2026-11-01", "2026-11-02"]
    first, second = db.list_batches(limit=4), db.list_batches(limit=4, offset=4)
    assert (len(first.items), len(second.items), first.total) == (4, 2, 6)
    assert not {r["batch_id"] for r in first.items} & {r["batch_id"] for r in second.items}
    assert db.metrics("other")["batches"] == {"total": 1, "by_status": {"SUBMITTED": 1}}


def test_stuck_runs_are_the_unfinished_ones_with_no_recent_progress(db: ResultsDb) -> None:
    hour = timedelta(hours=1)
    _stage(db, "quiet", "validation", T0)  # stopped after validating
    _stage(db, "moving", "validation", T0)
    _stage(db, "moving", "featurization", T0 + 3 * hour)  # still making progress
    db.record_submission(_ids("never", partition="2026-11-02"), submitted_at=T0)
    _stage(db, "done", "validation", T0, partition="2026-11-03")
    db.record_report(_report("done", partition="2026-11-03"))
    _stage(db, "other", "validation", T0, dataset="sensors")

    assert db.stuck_runs(T0 + 2 * hour) == {"demo": 2, "sensors": 1}  # quiet, never; other
    assert db.stuck_runs(T0 - hour) == {}  # nothing is quiet for that long yet
