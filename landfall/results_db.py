"""The results database: batches, their runs, stage timings and figures (SQLAlchemy Core).

SQLite by default, PostgreSQL (or any SQLAlchemy URL with ``ON CONFLICT`` support) by
config. Tables::

    batches             one row per batch (dataset partition); its latest run and status
    batch_runs          one row per run (trigger) of a batch: status, rows, model, report
    stage_runs          one row per stage a run went through: when, how long, rows
    quality_figures     per run: failures per validation check, null fraction per column
    prediction_summaries  per run: count, mean, min, max, most frequent values
    feature_drift       per run and feature: population stability index, flagged or not
    run_errors          per run and stage: why it failed, whether a retry may help

Every write is an upsert keyed on ids the events carry, so a redelivered event changes
nothing and a replay (a new run of the same batch) adds a run, never a batch. A run's
status only moves forward (SUBMITTED -> RUNNING -> SUCCEEDED | FAILED), so a stage event
that arrives after the report does not reopen the run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from landfall.errors import ConfigError, RetryableError
from landfall.redact import redact

__all__ = [
    "RUN_STATUSES",
    "BatchPage",
    "ResultsDb",
    "RunKey",
    "batch_runs",
    "batches",
    "feature_drift",
    "prediction_summaries",
    "quality_figures",
    "run_errors",
    "stage_runs",
]

metadata = MetaData()

# A run's status and how far along it is; a status never moves to a lower rank.
RUN_STATUSES = {"SUBMITTED": 0, "RUNNING": 1, "SUCCEEDED": 2, "FAILED": 2}

batches = Table(
    "batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("dataset", String(200), nullable=False),
    Column("partition", String(32), nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_run_id", String(64), nullable=False),
    Column("last_run_started_at", DateTime(timezone=True), nullable=False),
    Column("last_status", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_batches_dataset_partition", "dataset", "partition"),
)

batch_runs = Table(
    "batch_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("batch_id", String(64), ForeignKey("batches.batch_id"), nullable=False, index=True),
    Column("dataset", String(200), nullable=False),
    Column("partition", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("current_stage", String(32)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("requested_model_version", String(32)),
    Column("rows_landed", BigInteger),
    Column("rows_valid", BigInteger),
    Column("rows_quarantined", BigInteger),
    Column("rows_scored", BigInteger),
    Column("model_name", String(200)),
    Column("model_version", String(32)),
    Column("failed_stage", String(32)),
    Column("failure_reason", Text),
    Column("retryable", Boolean),
    Column("stage_durations_ms", JSON),
    Column("drifted_features", JSON),
    Column("report_path", Text),
    Column("report_html_path", Text),
    Column("reported_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

stage_runs = Table(
    "stage_runs",
    metadata,
    Column("run_id", String(64), ForeignKey("batch_runs.run_id"), primary_key=True),
    Column("stage", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_ms", BigInteger),
    Column("rows", BigInteger),
    Column("event_id", String(64)),
)

quality_figures = Table(
    "quality_figures",
    metadata,
    Column("run_id", String(64), ForeignKey("batch_runs.run_id"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", Float, nullable=False),
)

prediction_summaries = Table(
    "prediction_summaries",
    metadata,
    Column("run_id", String(64), ForeignKey("batch_runs.run_id"), primary_key=True),
    Column("rows", BigInteger),
    Column("null_predictions", BigInteger),
    Column("mean", Float),
    Column("min", Float),
    Column("max", Float),
    Column("distinct_values", BigInteger),
    Column("counts_by_value", JSON),
)

feature_drift = Table(
    "feature_drift",
    metadata,
    Column("run_id", String(64), ForeignKey("batch_runs.run_id"), primary_key=True),
    Column("feature", String(200), primary_key=True),
    Column("psi", Float, nullable=False),
    Column("flagged", Boolean, nullable=False),
)

run_errors = Table(
    "run_errors",
    metadata,
    Column("run_id", String(64), ForeignKey("batch_runs.run_id"), primary_key=True),
    Column("stage", String(32), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("retryable", Boolean, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(64)),
)

# Quality figure kinds.
RULE_FAILURES = "rule_failures"
NULL_FRACTION = "null_fraction"


@dataclass(frozen=True)
class RunKey:
    """Which run of which batch: what every record of the results database is about."""

    batch_id: str
    run_id: str
    dataset: str
    partition: str

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> RunKey:
        """The key of an event or a report, which carry all four fields."""
        return cls(
            batch_id=str(record["batch_id"]),
            run_id=str(record["run_id"]),
            dataset=str(record["dataset"]),
            partition=str(record["partition"]),
        )

    def as_dict(self) -> dict[str, str]:
        """The four fields, as the rows and reports name them."""
        return asdict(self)


class BatchPage:
    """One page of batches, the total that matched and the paging asked for."""

    def __init__(self, items: list[dict[str, Any]], total: int, limit: int, offset: int) -> None:
        self.items = items
        self.total = total
        self.limit = limit
        self.offset = offset


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything landfall writes is UTC.
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    return {k: _utc(v) if isinstance(v, datetime) else v for k, v in mapping.items()}


def _statuses_at_most(status: str) -> list[str]:
    rank = RUN_STATUSES[status]
    return [s for s, r in RUN_STATUSES.items() if r <= rank]


class ResultsDb:
    """Reads and writes the results database; every write is idempotent."""

    def __init__(self, url: str) -> None:
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # The reporter and the API write from separate processes: wait for the lock.
            connect_args["timeout"] = 30
        self._url = url
        try:
            self.engine: Engine = create_engine(url, connect_args=connect_args)
        except (SQLAlchemyError, ImportError) as exc:
            # No engine for this URL (an unknown dialect, a driver that does not load):
            # a configuration to fix, not a fault that a retry could heal.
            raise ConfigError(
                f"results database {self._safe_url()} (results_db.url) cannot be used: "
                f"{redact(f'{type(exc).__name__}: {exc}')}"
            ) from None
        try:
            self._create_tables()
            self._check_schema()
        except SQLAlchemyError as exc:
            raise RetryableError(
                f"results database {self._safe_url()} unusable: {redact(str(exc))}"
            ) from exc

    def _create_tables(self) -> None:
        """Create what is missing; a process that created it meanwhile is no error.

        The services of one stack start together, and create_all checks, then creates:
        between the two, another process may create the same table ("already exists").
        """
        for attempt in range(5):
            try:
                metadata.create_all(self.engine)
                return
            except SQLAlchemyError as exc:
                # SQLite: "table ... already exists"; PostgreSQL: the same, or a
                # duplicate key in its catalogue (pg_type) when both create at once.
                raced = "already exists" in str(exc) or "duplicate key" in str(exc)
                if not raced or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _safe_url(self) -> str:
        # Made from the URL itself, not the engine: there may be no engine yet.
        try:
            return make_url(self._url).render_as_string(hide_password=True)
        except ArgumentError:
            return redact(self._url)

    def _check_schema(self) -> None:
        # create_all never alters an existing table: a database made by an older
        # landfall would fail later with an obscure error, so say it now.
        existing = {c["name"] for c in inspect(self.engine).get_columns("batch_runs")}
        missing = sorted({c.name for c in batch_runs.columns} - existing)
        if missing:
            raise ConfigError(
                f"results database {self._safe_url()} has an older schema (batch_runs lacks "
                f"{', '.join(missing)}); move it aside or migrate it"
            )

    # ------------------------------------------------------------------ writing

    def _upsert(
        self,
        conn: Connection,
        table: Table,
        values: Mapping[str, Any],
        update: Iterable[str] = (),
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

    def _ensure_run(
        self, conn: Connection, key: RunKey, *, started_at: datetime, status: str
    ) -> None:
        """Create the batch and run rows if new; make the run its batch's latest if it is."""
        batch_id, run_id, dataset, partition = key.batch_id, key.run_id, key.dataset, key.partition
        now = datetime.now(UTC)
        self._upsert(
            conn,
            batches,
            {
                "batch_id": batch_id,
                "dataset": dataset,
                "partition": partition,
                "first_seen_at": now,
                "last_run_id": run_id,
                "last_run_started_at": started_at,
                "last_status": status,
                "updated_at": now,
            },
        )
        self._upsert(
            conn,
            batch_runs,
            {
                "run_id": run_id,
                "batch_id": batch_id,
                "dataset": dataset,
                "partition": partition,
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

    def _advance_run(self, conn: Connection, run_id: str, status: str, **values: Any) -> bool:
        """Set the run's status (and ``values``) unless it is already further along."""
        result = conn.execute(
            batch_runs.update()
            .where(
                batch_runs.c.run_id == run_id,
                batch_runs.c.status.in_(_statuses_at_most(status)),
            )
            .values(status=status, updated_at=datetime.now(UTC), **values)
        )
        return bool(result.rowcount)

    def _sync_batch_status(self, conn: Connection, batch_id: str) -> None:
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

    def record_submission(
        self, key: RunKey, *, submitted_at: datetime, model_version: str | None = None
    ) -> None:
        """A run was requested (data-landed published); it has not started yet."""
        with self.engine.begin() as conn:
            self._ensure_run(conn, key, started_at=submitted_at, status="SUBMITTED")
            if model_version is not None:
                conn.execute(
                    batch_runs.update()
                    .where(batch_runs.c.run_id == key.run_id)
                    .values(requested_model_version=model_version)
                )
            self._sync_batch_status(conn, key.batch_id)

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
        run_id, batch_id = key.run_id, key.batch_id
        started_at = finished_at - timedelta(milliseconds=duration_ms or 0)
        with self.engine.begin() as conn:
            self._ensure_run(conn, key, started_at=started_at, status="RUNNING")
            self._upsert(
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
            if self._advance_run(conn, run_id, "RUNNING", current_stage=stage):
                self._sync_batch_status(conn, batch_id)

    def record_report(self, report: Mapping[str, Any]) -> None:
        """A run's final report: status, figures, timings, quality, predictions, drift."""
        run_id, batch_id = report["run_id"], report["batch_id"]
        timeline = report.get("timeline", [])
        starts = [_parse_time(s.get("started_at")) for s in timeline]
        known_starts = [s for s in starts if s is not None]
        started_at = min(known_starts) if known_starts else datetime.now(UTC)
        finished_at = _parse_time(report.get("reported_at")) or datetime.now(UTC)
        rows = report.get("rows") or {}
        model = report.get("model") or {}
        drift = report.get("drift") or {}
        status = report["status"]
        with self.engine.begin() as conn:
            self._ensure_run(conn, RunKey.of(report), started_at=started_at, status="RUNNING")
            for entry in timeline:
                self._upsert(
                    conn,
                    stage_runs,
                    {
                        "run_id": run_id,
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
            figures = {
                (RULE_FAILURES, name): float(count)
                for name, count in (report.get("failures_by_rule") or {}).items()
            } | {
                (NULL_FRACTION, name): float(fraction)
                for name, fraction in (report.get("null_fractions") or {}).items()
            }
            for (kind, name), value in figures.items():
                self._upsert(
                    conn,
                    quality_figures,
                    {"run_id": run_id, "kind": kind, "name": name, "value": value},
                    update=("value",),
                )
            summary = report.get("predictions")
            if summary:
                columns = ("rows", "null_predictions", "mean", "min", "max", "distinct_values")
                self._upsert(
                    conn,
                    prediction_summaries,
                    {"run_id": run_id, **{c: summary.get(c) for c in columns}}
                    | {"counts_by_value": summary.get("counts_by_value")},
                    update=(*columns, "counts_by_value"),
                )
            for feature, figure in (drift.get("features") or {}).items():
                self._upsert(
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
            if status == "FAILED":
                self._upsert(
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
            self._advance_run(
                conn,
                run_id,
                status,
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
                drifted_features=drift.get("flagged"),
                report_path=report.get("report_path"),
                report_html_path=report.get("report_html_path"),
            )
            self._sync_batch_status(conn, batch_id)

    # ------------------------------------------------------------------ reading

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """The batch row, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(batches).where(batches.c.batch_id == batch_id)).first()
            return _row(row._mapping) if row else None

    def runs_of(self, batch_id: str) -> list[dict[str, Any]]:
        """Every recorded run of a batch, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batch_runs)
                .where(batch_runs.c.batch_id == batch_id)
                .order_by(batch_runs.c.started_at, batch_runs.c.run_id)
            ).mappings()
            return [_row(r) for r in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its stages, quality figures, prediction summary, drift and errors."""
        with self.engine.connect() as conn:
            found = conn.execute(select(batch_runs).where(batch_runs.c.run_id == run_id)).first()
            if found is None:
                return None
            run = _row(found._mapping)
            run["stages"] = [
                _row(r)
                for r in conn.execute(
                    select(stage_runs)
                    .where(stage_runs.c.run_id == run_id)
                    .order_by(stage_runs.c.started_at, stage_runs.c.stage)
                ).mappings()
            ]
            quality: dict[str, dict[str, float]] = {RULE_FAILURES: {}, NULL_FRACTION: {}}
            for r in conn.execute(
                select(quality_figures).where(quality_figures.c.run_id == run_id)
            ).mappings():
                quality.setdefault(r["kind"], {})[r["name"]] = r["value"]
            run["quality"] = quality
            summary = conn.execute(
                select(prediction_summaries).where(prediction_summaries.c.run_id == run_id)
            ).first()
            run["prediction_summary"] = (
                {k: v for k, v in summary._mapping.items() if k != "run_id"} if summary else None
            )
            run["drift"] = [
                {"feature": r["feature"], "psi": r["psi"], "flagged": r["flagged"]}
                for r in conn.execute(
                    select(feature_drift)
                    .where(feature_drift.c.run_id == run_id)
                    .order_by(feature_drift.c.feature)
                ).mappings()
            ]
            run["errors"] = [
                {k: v for k, v in _row(r).items() if k != "run_id"}
                for r in conn.execute(
                    select(run_errors).where(run_errors.c.run_id == run_id)
                ).mappings()
            ]
            return run

    def list_batches(
        self,
        *,
        dataset: str | None = None,
        partition_from: str | None = None,
        partition_to: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> BatchPage:
        """Batches with their latest run, most recently updated first, one page of them."""
        conditions = []
        if dataset is not None:
            conditions.append(batches.c.dataset == dataset)
        if partition_from is not None:
            conditions.append(batches.c.partition >= partition_from)
        if partition_to is not None:
            # Inclusive of a whole day: "2026-11-01T23" sorts after "2026-11-01".
            conditions.append(batches.c.partition <= partition_to + "~")
        if status is not None:
            conditions.append(batches.c.last_status == status)
        run_count = (
            select(func.count())
            .where(batch_runs.c.batch_id == batches.c.batch_id)
            .scalar_subquery()
            .label("run_count")
        )
        last = batch_runs.alias("last_run")
        query = (
            select(
                batches,
                run_count,
                last.c.current_stage,
                last.c.started_at,
                last.c.finished_at,
                last.c.rows_landed,
                last.c.rows_scored,
                last.c.model_version,
                last.c.failure_reason,
                last.c.report_path,
                last.c.report_html_path,
            )
            .select_from(batches.outerjoin(last, last.c.run_id == batches.c.last_run_id))
            .where(*conditions)
        )
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(batches).where(*conditions)
            ).scalar_one()
            rows = conn.execute(
                query.order_by(batches.c.updated_at.desc(), batches.c.batch_id)
                .limit(limit)
                .offset(offset)
            ).mappings()
            return BatchPage([_row(r) for r in rows], int(total), limit, offset)

    def metrics(self, dataset: str | None = None) -> dict[str, Any]:
        """Aggregated figures: batches and runs by status, rows, error rates, durations."""
        batch_filter = [batches.c.dataset == dataset] if dataset else []
        run_filter = [batch_runs.c.dataset == dataset] if dataset else []
        with self.engine.connect() as conn:
            batches_by_status = {
                s: int(n)
                for s, n in conn.execute(
                    select(batches.c.last_status, func.count())
                    .where(*batch_filter)
                    .group_by(batches.c.last_status)
                )
            }
            runs_by_status = {
                s: int(n)
                for s, n in conn.execute(
                    select(batch_runs.c.status, func.count())
                    .where(*run_filter)
                    .group_by(batch_runs.c.status)
                )
            }
            sums = conn.execute(
                select(
                    func.coalesce(func.sum(batch_runs.c.rows_landed), 0),
                    func.coalesce(func.sum(batch_runs.c.rows_valid), 0),
                    func.coalesce(func.sum(batch_runs.c.rows_quarantined), 0),
                    func.coalesce(func.sum(batch_runs.c.rows_scored), 0),
                ).where(*run_filter)
            ).one()
            spans = conn.execute(
                select(batch_runs.c.started_at, batch_runs.c.finished_at).where(
                    *run_filter, batch_runs.c.finished_at.is_not(None)
                )
            ).all()
            stage_rows = conn.execute(
                select(
                    stage_runs.c.stage,
                    func.count(),
                    func.avg(stage_runs.c.duration_ms),
                    func.max(stage_runs.c.duration_ms),
                )
                .select_from(stage_runs.join(batch_runs))
                .where(*run_filter, stage_runs.c.duration_ms.is_not(None))
                .group_by(stage_runs.c.stage)
            ).all()
        landed, valid, quarantined, scored = (int(v) for v in sums)
        finished = runs_by_status.get("SUCCEEDED", 0) + runs_by_status.get("FAILED", 0)
        durations = sorted(
            max((_utc(end) - _utc(start)).total_seconds(), 0.0)  # type: ignore[operator]
            for start, end in spans
        )
        return {
            "dataset": dataset,
            "batches": {"total": sum(batches_by_status.values()), "by_status": batches_by_status},
            "runs": {"total": sum(runs_by_status.values()), "by_status": runs_by_status},
            "rows": {
                "landed": landed,
                "valid": valid,
                "quarantined": quarantined,
                "scored": scored,
            },
            "error_rates": {
                "failed_runs": runs_by_status.get("FAILED", 0) / finished if finished else None,
                "quarantined_rows": quarantined / landed if landed else None,
            },
            "durations_s": _duration_stats(durations),
            "stage_durations_ms": {
                stage: {"runs": int(n), "mean": float(mean), "max": int(top)}
                for stage, n, mean, top in stage_rows
            },
        }

    def last_success_by_dataset(self) -> dict[str, datetime]:
        """When each dataset's latest successful run was reported."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batch_runs.c.dataset, func.max(batch_runs.c.reported_at))
                .where(batch_runs.c.status == "SUCCEEDED", batch_runs.c.reported_at.is_not(None))
                .group_by(batch_runs.c.dataset)
            ).all()
        return {str(dataset): _utc(at) for dataset, at in rows}  # type: ignore[misc]

    def stuck_runs(self, quiet_since: datetime) -> dict[str, int]:
        """Unfinished runs per dataset with nothing recorded since ``quiet_since``.

        SUBMITTED or RUNNING, started before it, and no stage finished after it: a
        batch that stopped between stages (see ``landfall reconcile``).
        """
        recent = (
            select(stage_runs.c.run_id)
            .where(stage_runs.c.finished_at >= quiet_since)
            .scalar_subquery()
        )
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batch_runs.c.dataset, func.count())
                .where(
                    batch_runs.c.status.in_(("SUBMITTED", "RUNNING")),
                    batch_runs.c.started_at < quiet_since,
                    batch_runs.c.run_id.not_in(recent),
                )
                .group_by(batch_runs.c.dataset)
            ).all()
        return {str(dataset): int(count) for dataset, count in rows}

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def _duration_stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"runs": 0, "mean": None, "p50": None, "p95": None, "max": None}
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return {
        "runs": len(values),
        "mean": statistics.fmean(values),
        "p50": statistics.median(values),
        "p95": p95,
        "max": values[-1],
    }


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _utc(value)
    parsed = datetime.fromisoformat(str(value))
    return _utc(parsed)


def _redacted(text: str | None) -> str | None:
    # Error text goes into rows anyone with read access to the database sees.
    return redact(text) if text else text
