"""The results database's schema under migrations, on SQLite and a real PostgreSQL server.

A database made before landfall had migrations is upgraded in place (its rows read back
through today's code); the migrations make exactly the tables the code declares; bad
databases are refused with what is wrong; processes creating one database at the same
time do not trip over each other.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    bindparam,
    create_engine,
    inspect,
    text,
)

from landfall.broker import broker_dir
from landfall.errors import ConfigError
from landfall.results import RunHistory, RunKey, RunRecorder, open_results_db
from landfall.results.database import head_revision
from landfall.results.schema import metadata
from landfall.stack import LocalStack, running_services
from tests.conftest import settings_for
from tests.postgres import database_url, postgres_server

__all__ = ["database_url", "postgres_server"]  # the fixtures, imported for this module

T0 = datetime(2026, 10, 1, 6, 0, tzinfo=UTC)

# The DDL landfall's create_all issued before migrations (SQLAlchemy 2.1, compiled for
# each dialect; only the timestamp type differs). Kept verbatim: it is what databases
# in the field hold, whatever the code declares today.
OLD_SCHEMA = """
CREATE TABLE batches (
    batch_id VARCHAR(64) NOT NULL,
    dataset VARCHAR(200) NOT NULL,
    partition VARCHAR(32) NOT NULL,
    first_seen_at {ts} NOT NULL,
    last_run_id VARCHAR(64) NOT NULL,
    last_run_started_at {ts} NOT NULL,
    last_status VARCHAR(16) NOT NULL,
    updated_at {ts} NOT NULL,
    PRIMARY KEY (batch_id)
);
CREATE INDEX ix_batches_dataset_partition ON batches (dataset, partition);
CREATE TABLE batch_runs (
    run_id VARCHAR(64) NOT NULL,
    batch_id VARCHAR(64) NOT NULL,
    dataset VARCHAR(200) NOT NULL,
    partition VARCHAR(32) NOT NULL,
    status VARCHAR(16) NOT NULL,
    current_stage VARCHAR(32),
    started_at {ts} NOT NULL,
    finished_at {ts},
    requested_model_version VARCHAR(32),
    rows_landed BIGINT,
    rows_valid BIGINT,
    rows_quarantined BIGINT,
    rows_scored BIGINT,
    model_name VARCHAR(200),
    model_version VARCHAR(32),
    failed_stage VARCHAR(32),
    failure_reason TEXT,
    retryable BOOLEAN,
    stage_durations_ms JSON,
    drifted_features JSON,
    report_path TEXT,
    report_html_path TEXT,
    reported_at {ts},
    updated_at {ts} NOT NULL,
    PRIMARY KEY (run_id),
    FOREIGN KEY(batch_id) REFERENCES batches (batch_id)
);
CREATE INDEX ix_batch_runs_batch_id ON batch_runs (batch_id);
CREATE TABLE feature_drift (
    run_id VARCHAR(64) NOT NULL,
    feature VARCHAR(200) NOT NULL,
    psi FLOAT NOT NULL,
    flagged BOOLEAN NOT NULL,
    PRIMARY KEY (run_id, feature),
    FOREIGN KEY(run_id) REFERENCES batch_runs (run_id)
);
CREATE TABLE prediction_summaries (
    run_id VARCHAR(64) NOT NULL,
    rows BIGINT,
    null_predictions BIGINT,
    mean FLOAT,
    min FLOAT,
    max FLOAT,
    distinct_values BIGINT,
    counts_by_value JSON,
    PRIMARY KEY (run_id),
    FOREIGN KEY(run_id) REFERENCES batch_runs (run_id)
);
CREATE TABLE quality_figures (
    run_id VARCHAR(64) NOT NULL,
    kind VARCHAR(32) NOT NULL,
    name VARCHAR(200) NOT NULL,
    value FLOAT NOT NULL,
    PRIMARY KEY (run_id, kind, name),
    FOREIGN KEY(run_id) REFERENCES batch_runs (run_id)
);
CREATE TABLE run_errors (
    run_id VARCHAR(64) NOT NULL,
    stage VARCHAR(32) NOT NULL,
    reason TEXT NOT NULL,
    retryable BOOLEAN NOT NULL,
    occurred_at {ts} NOT NULL,
    event_id VARCHAR(64),
    PRIMARY KEY (run_id, stage),
    FOREIGN KEY(run_id) REFERENCES batch_runs (run_id)
);
CREATE TABLE stage_runs (
    run_id VARCHAR(64) NOT NULL,
    stage VARCHAR(32) NOT NULL,
    status VARCHAR(16) NOT NULL,
    started_at {ts},
    finished_at {ts},
    duration_ms BIGINT,
    rows BIGINT,
    event_id VARCHAR(64),
    PRIMARY KEY (run_id, stage),
    FOREIGN KEY(run_id) REFERENCES batch_runs (run_id)
);
"""
TIMESTAMP = {"sqlite": "DATETIME", "postgresql": "TIMESTAMP WITH TIME ZONE"}

BATCH = "batch-demo-2026-10-01"
OLD_ROWS: dict[str, list[dict[str, Any]]] = {
    "batches": [
        {
            "batch_id": BATCH,
            "dataset": "demo",
            "partition": "2026-10-01",
            "first_seen_at": T0,
            "last_run_id": "old-2",
            "last_run_started_at": T0 + timedelta(hours=1),
            "last_status": "SUCCEEDED",
            "updated_at": T0 + timedelta(hours=1, seconds=42),
        }
    ],
    "batch_runs": [
        {
            "run_id": "old-1",
            "batch_id": BATCH,
            "dataset": "demo",
            "partition": "2026-10-01",
            "status": "FAILED",
            "current_stage": "reporting",
            "started_at": T0,
            "finished_at": T0 + timedelta(seconds=12),
            "rows_landed": 100,
            "failed_stage": "featurization",
            "failure_reason": "bad expression",
            "retryable": False,
            "updated_at": T0 + timedelta(seconds=12),
        },
        {
            "run_id": "old-2",
            "batch_id": BATCH,
            "dataset": "demo",
            "partition": "2026-10-01",
            "status": "SUCCEEDED",
            "current_stage": "reporting",
            "started_at": T0 + timedelta(hours=1),
            "finished_at": T0 + timedelta(hours=1, seconds=42),
            "requested_model_version": "3",
            "rows_landed": 100,
            "rows_valid": 96,
            "rows_quarantined": 4,
            "rows_scored": 96,
            "model_name": "m",
            "model_version": "3",
            "stage_durations_ms": {"validation": 4000, "prediction": 9000},
            "drifted_features": ["f1"],
            "report_path": "demo/reports/2026-10-01/report.json",
            "report_html_path": "demo/reports/2026-10-01/report.html",
            "reported_at": T0 + timedelta(hours=1, seconds=42),
            "updated_at": T0 + timedelta(hours=1, seconds=42),
        },
    ],
    "stage_runs": [
        {
            "run_id": "old-2",
            "stage": "validation",
            "status": "SUCCEEDED",
            "started_at": T0 + timedelta(hours=1),
            "finished_at": T0 + timedelta(hours=1, seconds=4),
            "duration_ms": 4000,
            "rows": 100,
            "event_id": "e-1",
        }
    ],
    "quality_figures": [
        {"run_id": "old-2", "kind": "rule_failures", "name": "not_null:f2", "value": 4.0},
        {"run_id": "old-2", "kind": "null_fraction", "name": "f3", "value": 0.125},
    ],
    "prediction_summaries": [
        {
            "run_id": "old-2",
            "rows": 96,
            "null_predictions": 0,
            "mean": 0.25,
            "min": 0.0,
            "max": 1.0,
            "distinct_values": 2,
            "counts_by_value": {"0.0": 72, "1.0": 24},
        }
    ],
    "feature_drift": [{"run_id": "old-2", "feature": "f1", "psi": 0.31, "flagged": True}],
    "run_errors": [
        {
            "run_id": "old-1",
            "stage": "featurization",
            "reason": "bad expression",
            "retryable": False,
            "occurred_at": T0 + timedelta(seconds=10),
            "event_id": "e-0",
        }
    ],
}


@pytest.fixture
def url(database_url: str) -> str:
    return database_url


@pytest.fixture
def raw(url: str) -> Iterator[Engine]:
    """An engine that neither creates nor migrates anything."""
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _make_old_database(raw: Engine, *, leave_out: str | None = None) -> None:
    """The tables and rows as landfall left them before it had migrations."""
    ddl = OLD_SCHEMA.format(ts=TIMESTAMP[raw.dialect.name])
    if leave_out is not None:
        ddl = "\n".join(line for line in ddl.splitlines() if not line.strip().startswith(leave_out))
    with raw.begin() as conn:
        for statement in filter(str.strip, ddl.split(";")):
            conn.exec_driver_sql(statement)
        for table, rows in OLD_ROWS.items():
            for full in rows:
                row = {c: v for c, v in full.items() if c != leave_out}
                insert = text(
                    f"INSERT INTO {table} ({', '.join(row)}) VALUES "
                    f"({', '.join(f':{c}' for c in row)})"
                ).bindparams(*(_typed(c, v) for c, v in row.items()))
                conn.execute(insert, row)


def _typed(column: str, value: Any) -> Any:
    # Bound as the old code bound them: SQLAlchemy's own DateTime, JSON and Boolean.
    kind = (
        DateTime(timezone=True)
        if isinstance(value, datetime)
        else JSON()
        if isinstance(value, dict | list)
        else Boolean()
        if isinstance(value, bool)
        else None
    )
    return bindparam(column, type_=kind)


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_an_old_database_is_upgraded_in_place_and_its_rows_read_back(url: str, raw: Engine) -> None:
    _make_old_database(raw)
    assert _revision(raw) is None
    engine = open_results_db(url)
    try:
        assert _revision(engine) == head_revision()
        indexes = {i["name"] for i in inspect(engine).get_indexes("batch_runs")}
        assert "ix_batch_runs_dataset_status" in indexes  # revision 0002 ran on it
        history = RunHistory(engine)
        failed, succeeded = history.runs_of(BATCH)
        assert succeeded["run_id"] == "old-2"
        assert (failed["run_id"], failed["status"], failed["failure_reason"]) == (
            "old-1",
            "FAILED",
            "bad expression",
        )
        run = history.run("old-2")
        assert run is not None
        assert run["started_at"] == T0 + timedelta(hours=1)
        assert (run["rows_scored"], run["model_version"], run["drifted_features"]) == (
            96,
            "3",
            ["f1"],
        )
        assert run["stage_durations_ms"] == {"validation": 4000, "prediction": 9000}
        assert run["quality"] == {
            "rule_failures": {"not_null:f2": 4.0},
            "null_fraction": {"f3": 0.125},
        }
        assert run["prediction_summary"]["counts_by_value"] == {"0.0": 72, "1.0": 24}
        assert run["drift"] == [{"feature": "f1", "psi": 0.31, "flagged": True}]
        assert [s["stage"] for s in run["stages"]] == ["validation"]
        assert history.run("old-1")["errors"][0]["occurred_at"] == T0 + timedelta(seconds=10)  # type: ignore[index]
        metrics = history.metrics()
        assert metrics["runs"]["by_status"] == {"FAILED": 1, "SUCCEEDED": 1}
        assert metrics["durations_s"]["max"] == pytest.approx(42.0)

        # The upgraded database takes new runs: a replay of the batch becomes its latest.
        RunRecorder(engine).record_submission(
            RunKey(BATCH, "new-3", "demo", "2026-10-01"), submitted_at=T0 + timedelta(days=1)
        )
        (batch,) = history.list_batches().items
        assert (batch["run_count"], batch["last_run_id"], batch["last_status"]) == (
            3,
            "new-3",
            "SUBMITTED",
        )
    finally:
        engine.dispose()
    # Opening it again finds it current and changes nothing.
    again = open_results_db(url)
    try:
        assert _revision(again) == head_revision()
        assert len(RunHistory(again).runs_of(BATCH)) == 3
    finally:
        again.dispose()


def test_the_migrations_make_the_tables_the_code_declares(url: str) -> None:
    engine = open_results_db(url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_an_old_database_lacking_a_column_is_refused_and_left_as_it_was(
    url: str, raw: Engine
) -> None:
    _make_old_database(raw, leave_out="report_html_path")
    with pytest.raises(ConfigError) as caught:
        open_results_db(url)
    message = str(caught.value)
    assert "results_db.url" in message and "batch_runs.report_html_path" in message
    assert _revision(raw) is None  # not stamped
    assert "alembic_version" not in inspect(raw).get_table_names()


def test_a_database_upgraded_by_a_newer_landfall_is_refused(url: str) -> None:
    open_results_db(url).dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(ConfigError, match=r"revision 9999.*does not know"):
        open_results_db(url)


# One process of a stack starting: wait for the starting gun, open (so migrate), write.
_OPEN_AND_RECORD = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from landfall.results import RunKey, RunRecorder, open_results_db

url, worker, gun = sys.argv[1], sys.argv[2], Path(sys.argv[3])
gun.with_name(f"ready-{worker}").touch()
while not gun.exists():
    time.sleep(0.005)
engine = open_results_db(url)
key = RunKey(f"batch-{worker}", f"run-{worker}", "demo", "2026-10-01")
RunRecorder(engine).record_submission(key, submitted_at=datetime.now(UTC))
engine.dispose()
"""


@pytest.mark.parametrize("round_", range(3))
def test_processes_creating_a_fresh_database_at_once_all_succeed(
    url: str, round_: int, tmp_path: Path
) -> None:
    # As `landfall up` on a fresh home: the reporter and the API open it together.
    gun = tmp_path / f"go-{round_}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AND_RECORD, url, str(i), str(gun)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(workers):  # all imported, all waiting
        assert time.monotonic() < deadline, "the workers did not start"
        assert all(w.poll() is None for w in workers), "a worker died before the start"
        time.sleep(0.05)
    gun.touch()
    outcomes = [(w.wait(timeout=120), w.stderr.read() if w.stderr else "") for w in workers]
    assert [code for code, _ in outcomes] == [0] * len(workers), outcomes
    engine = open_results_db(url)
    try:
        assert _revision(engine) == head_revision()
        assert RunHistory(engine).metrics()["runs"]["total"] == len(workers)
    finally:
        engine.dispose()


def test_up_opens_the_results_database_before_starting_anything(tmp_path: Path) -> None:
    # A database `up` cannot use stops it before the broker or any service starts,
    # which shows where it is migrated: once, by `up`, ahead of the services.
    settings = settings_for(tmp_path)
    raw = create_engine(settings.results_db_url)
    _make_old_database(raw, leave_out="drifted_features")
    raw.dispose()
    stack = LocalStack(settings, services=("reporter", "api"))
    with pytest.raises(ConfigError, match=r"batch_runs\.drifted_features"):
        stack.start()
    assert stack.processes == {}
    assert running_services(settings) == {}
    assert not broker_dir(settings.home).exists()
