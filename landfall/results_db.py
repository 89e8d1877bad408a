"""The results database: one row per batch, one per run of it (SQLAlchemy).

SQLite by default, any SQLAlchemy URL (PostgreSQL in production) by config. A replay
of a partition is a new run of the same batch: it adds a run row and updates the
batch row, never a second batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
)
from sqlalchemy.engine import Engine

__all__ = ["ResultsDb", "batch_runs", "batches"]

metadata = MetaData()

batches = Table(
    "batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("dataset", String(200), nullable=False),
    Column("partition", String(32), nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_run_id", String(64), nullable=False),
    Column("last_status", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

batch_runs = Table(
    "batch_runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("batch_id", String(64), ForeignKey("batches.batch_id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("rows_landed", BigInteger),
    Column("rows_valid", BigInteger),
    Column("rows_quarantined", BigInteger),
    Column("rows_scored", BigInteger),
    Column("model_name", String(200)),
    Column("model_version", String(32)),
    Column("failed_stage", String(32)),
    Column("failure_reason", Text),
    Column("stage_durations_ms", JSON),
    Column("report_path", Text),
    Column("reported_at", DateTime(timezone=True), nullable=False),
)


class ResultsDb:
    """Records batch runs; safe to call again for the same run (it updates)."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, future=True)
        metadata.create_all(self.engine)

    def record_run(
        self,
        *,
        batch_id: str,
        run_id: str,
        dataset: str,
        partition: str,
        status: str,
        **figures: Any,
    ) -> None:
        """Insert or update one run and its batch, in one transaction."""
        now = datetime.now(UTC)
        run_row = {"status": status, "reported_at": now, **figures}
        with self.engine.begin() as conn:
            batch = conn.execute(
                select(batches.c.batch_id).where(batches.c.batch_id == batch_id)
            ).first()
            if batch is None:
                conn.execute(
                    batches.insert().values(
                        batch_id=batch_id,
                        dataset=dataset,
                        partition=partition,
                        first_seen_at=now,
                        last_run_id=run_id,
                        last_status=status,
                        updated_at=now,
                    )
                )
            else:
                conn.execute(
                    batches.update()
                    .where(batches.c.batch_id == batch_id)
                    .values(
                        last_run_id=run_id,
                        last_status=status,
                        updated_at=now,
                    )
                )
            run = conn.execute(
                select(batch_runs.c.run_id).where(batch_runs.c.run_id == run_id)
            ).first()
            if run is None:
                conn.execute(
                    batch_runs.insert().values(run_id=run_id, batch_id=batch_id, **run_row)
                )
            else:
                conn.execute(
                    batch_runs.update().where(batch_runs.c.run_id == run_id).values(**run_row)
                )

    def runs_of(self, batch_id: str) -> list[dict[str, Any]]:
        """Every recorded run of a batch, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batch_runs)
                .where(batch_runs.c.batch_id == batch_id)
                .order_by(batch_runs.c.reported_at)
            ).mappings()
            return [dict(r) for r in rows]

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """The batch row, or None."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(batches).where(batches.c.batch_id == batch_id))
                .mappings()
                .first()
            )
            return dict(row) if row else None

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()
