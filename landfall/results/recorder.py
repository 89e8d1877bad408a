"""The write side of the results database: what the reporter and the API record.

Every write is an upsert keyed on ids the events carry, so a redelivered event changes
nothing and a replay (a new run of the same batch) adds a run, never a batch. A run's
status only moves forward (SUBMITTED -> RUNNING -> SUCCEEDED | FAILED), so a stage event
that arrives after the report does not reopen the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from landfall.errors import ConfigError
from landfall.redact import redact
from landfall.results.database import ResultsClient
from landfall.results.schema import (
    NULL_FRACTION,
    RULE_FAILURES,
    RUN_STATUSES,
    RunKey,
    batch_runs,
    batches,
    feature_drift,
    prediction_summaries,
    quality_figures,
    run_errors,
    stage_runs,
    utc,
)

__all__ = ["RunRecorder"]


class RunRecorder(ResultsClient):
    """Records submissions, stage completions and reports of batch runs; idempotently."""

    def record_submission(
        self, key: RunKey, *, submitted_at: datetime, model_version: str | None = None
    ) -> None:
        """A run was requested (data-landed published); it has not started yet."""
        with self.engine.begin() as conn:
            _ensure_run(conn, key, started_at=submitted_at, status="SUBMITTED")
            if model_version is not None:
                conn.execute(
                    batch_runs.update()
                    .where(batch_runs.c.run_id == key.run_id)
                    .values(requested_model_version=model_version)
                )
            _sync_batch_status(conn, key.batch_id)

    def record_stage(
        self,
        key: RunKey,
        *,
        stage: str,
        finished_at: datetime,
        duration_ms: int | None,
        rows: int | None = None,
        event_id: str | None = None,
        figures: Mapping[str, Any] | None = None,
    ) -> None:
        """A stage of a run completed: its timing, and the run's figures it brought."""
        run_id = key.run_id
        started_at = finished_at - timedelta(milliseconds=duration_ms or 0)
        with self.engine.begin() as conn:
            _ensure_run(conn, key, started_at=started_at, status="RUNNING")
            _upsert(
                conn,
                stage_runs,
                {
                    "run_id": run_id,
                    "stage": stage,
                    "status": "SUCCEEDED",
                    "started_at": started_at,
                    "finished_at": finished_at,
                    "duration_ms": duration_ms,
                    "rows": rows,
                    "event_id": event_id,
                },
                update=("status", "started_at", "finished_at", "duration_ms", "rows", "event_id"),
            )
            known = {k: v for k, v in (figures or {}).items() if v is not None}
            if known:
                conn.execute(
                    batch_runs.update().where(batch_runs.c.run_id == run_id).values(**known)
                )
            if _advance_run(conn, run_id, "RUNNING", current_stage=stage):
                _sync_batch_status(conn, key.batch_id)

    def record_report(self, report: Mapping[str, Any]) -> None:
        """A run's final report: status, figures, timings, quality, predictions, drift."""
        key = RunKey.of(report)
        timeline = report.get("timeline", [])
        known_starts = [s for s in (_parse_time(e.get("started_at")) for e in timeline) if s]
        started_at = min(known_starts) if known_starts else datetime.now(UTC)
        finished_at = _parse_time(report.get("reported_at")) or datetime.now(UTC)
        with self.engine.begin() as conn:
            _ensure_run(conn, key, started_at=started_at, status="RUNNING")
            for entry in timeline:
                _upsert(
                    conn,
                    stage_runs,
                    {
                        "run_id": key.run_id,
                        "stage": entry["stage"],
                        "status": entry.get("status", "SUCCEEDED"),
                        "started_at": _parse_time(entry.get("started_at")),
                        "finished_at": _parse_time(entry.get("finished_at")),
                        "duration_ms": entry.get("duration_ms"),
                        "rows": entry.get("rows"),
                        "event_id": entry.get("event_id"),
                    },
                    update=("status", "started_at", "finished_at", "duration_ms", "rows"),
                )
            _record_report_details(conn, key.run_id, report, finished_at)
            rows = report.get("rows") or {}
            model = report.get("model") or {}
            _advance_run(
                conn,
                key.run_id,
                report["status"],
                current_stage="reporting",
                finished_at=finished_at,
                reported_at=finished_at,
                rows_landed=rows.get("landed"),
                rows_valid=rows.get("valid"),
                rows_quarantined=rows.get("quarantined"),
                rows_scored=rows.get("scored"),
                model_name=model.get("name"),
                model_version=model.get("version"),
                failed_stage=report.get("failed_stage"),
                failure_reason=_redacted(report.get("failure_reason")),
                retryable=report.get("retryable"),
                stage_durations_ms=report.get("stage_durations_ms"),
                drifted_features=(report.get("drift") or {}).get("flagged"),
                report_path=report.get("report_path"),
                report_html_path=report.get("report_html_path"),
            )
            _sync_batch_status(conn, key.batch_id)


def _record_report_details(
    conn: Connection, run_id: str, report: Mapping[str, Any], finished_at: datetime
) -> None:
    """The report's rows of the per-run tables: quality, predictions, drift, the error."""
    figures = {
        (RULE_FAILURES, name): float(count)
        for name, count in (report.get("failures_by_rule") or {}).items()
    } | {
        (NULL_FRACTION, name): float(fraction)
        for name, fraction in (report.get("null_fractions") or {}).items()
    }
    for (kind, name), value in figures.items():
        _upsert(
            conn,
            quality_figures,
            {"run_id": run_id, "kind": kind, "name": name, "value": value},
            update=("value",),
        )
    summary = report.get("predictions")
    if summary:
        columns = ("rows", "null_predictions", "mean", "min", "max", "distinct_values")
        _upsert(
            conn,
            prediction_summaries,
            {"run_id": run_id, **{c: summary.get(c) for c in columns}}
            | {"counts_by_value": summary.get("counts_by_value")},
            update=(*columns, "counts_by_value"),
        )
    for feature, figure in ((report.get("drift") or {}).get("features") or {}).items():
        _upsert(
            conn,
            feature_drift,
            {
                "run_id": run_id,
                "feature": feature,
                "psi": float(figure["psi"]),
                "flagged": bool(figure["flagged"]),
            },
            update=("psi", "flagged"),
        )
    if report["status"] == "FAILED":
        _upsert(
            conn,
            run_errors,
            {
                "run_id": run_id,
                "stage": report.get("failed_stage") or "unknown",
                "reason": redact(report.get("failure_reason") or ""),
                "retryable": bool(report.get("retryable")),
                "occurred_at": _parse_time(report.get("failed_at")) or finished_at,
                "event_id": report.get("failure_event_id"),
            },
            update=("reason", "retryable", "occurred_at", "event_id"),
        )


def _upsert(
    conn: Connection, table: Table, values: Mapping[str, Any], update: Iterable[str] = ()
) -> None:
    """Insert a row, or update ``update`` columns of the row with the same key."""
    keys = [c.name for c in table.primary_key.columns]
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ConfigError(f"results database dialect {dialect!r} is not supported")
    insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table)
    statement = insert.values(**values)
    columns = [c for c in update if c in values]
    if columns:
        statement = statement.on_conflict_do_update(
            index_elements=keys, set_={c: statement.excluded[c] for c in columns}
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    conn.execute(statement)


def _ensure_run(conn: Connection, key: RunKey, *, started_at: datetime, status: str) -> None:
    """Create the batch and run rows if new; make the run its batch's latest if it is."""
    batch_id, run_id = key.batch_id, key.run_id
    now = datetime.now(UTC)
    _upsert(
        conn,
        batches,
        {
            "batch_id": batch_id,
            "dataset": key.dataset,
            "partition": key.partition,
            "first_seen_at": now,
            "last_run_id": run_id,
            "last_run_started_at": started_at,
            "last_status": status,
            "updated_at": now,
        },
    )
    _upsert(
        conn,
        batch_runs,
        {
            "run_id": run_id,
            "batch_id": batch_id,
            "dataset": key.dataset,
            "partition": key.partition,
            "status": status,
            "started_at": started_at,
            "updated_at": now,
        },
    )
    # An event of a run may arrive before the one that says when it started.
    conn.execute(
        batch_runs.update()
        .where(batch_runs.c.run_id == run_id, batch_runs.c.started_at > started_at)
        .values(started_at=started_at)
    )
    conn.execute(
        batches.update()
        .where(
            batches.c.batch_id == batch_id,
            batches.c.last_run_id != run_id,
            or_(
                batches.c.last_run_started_at < started_at,
                and_(
                    batches.c.last_run_started_at == started_at,
                    batches.c.last_run_id < run_id,
                ),
            ),
        )
        .values(last_run_id=run_id, last_run_started_at=started_at)
    )


def _advance_run(conn: Connection, run_id: str, status: str, **values: Any) -> bool:
    """Set the run's status (and ``values``) unless it is already further along."""
    rank = RUN_STATUSES[status]
    result = conn.execute(
        batch_runs.update()
        .where(
            batch_runs.c.run_id == run_id,
            batch_runs.c.status.in_([s for s, r in RUN_STATUSES.items() if r <= rank]),
        )
        .values(status=status, updated_at=datetime.now(UTC), **values)
    )
    return bool(result.rowcount)


def _sync_batch_status(conn: Connection, batch_id: str) -> None:
    latest = (
        select(batch_runs.c.status)
        .where(batch_runs.c.run_id == batches.c.last_run_id)
        .scalar_subquery()
    )
    conn.execute(
        batches.update()
        .where(batches.c.batch_id == batch_id)
        .values(last_status=latest, updated_at=datetime.now(UTC))
    )


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return utc(value)
    return utc(datetime.fromisoformat(str(value)))


def _redacted(text: str | None) -> str | None:
    # Error text goes into rows anyone with read access to the database sees.
    return redact(text) if text else text
