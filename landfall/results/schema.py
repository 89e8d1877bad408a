"""The results database's tables, as this landfall's code reads and writes them.

Tables::

    batches             one row per batch (dataset partition); its latest run and status
    batch_runs          one row per run (trigger) of a batch: status, rows, model, report
    stage_runs          one row per stage a run went through: when, how long, rows
    quality_figures     per run: failures per validation check, null fraction per column
    prediction_summaries  per run: count, mean, min, max, most frequent values
    feature_drift       per run and feature: population stability index, flagged or not
    run_errors          per run and stage: why it failed, whether a retry may help

A database gets these tables from the migrations in :mod:`landfall.results.migrations`,
never from ``metadata.create_all``: a change here needs a migration that makes it, and
``tests/integration/test_results_migrations.py`` fails until both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
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
)

__all__ = [
    "NULL_FRACTION",
    "RULE_FAILURES",
    "RUN_STATUSES",
    "RunKey",
    "batch_runs",
    "batches",
    "feature_drift",
    "metadata",
    "prediction_summaries",
    "quality_figures",
    "run_errors",
    "stage_runs",
]

metadata = MetaData()

# A run's status and how far along it is; a status never moves to a lower rank.
RUN_STATUSES = {"SUBMITTED": 0, "RUNNING": 1, "SUCCEEDED": 2, "FAILED": 2}

# Quality figure kinds.
RULE_FAILURES = "rule_failures"
NULL_FRACTION = "null_fraction"

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
    # The status page counts runs per dataset and status; the stuck-runs gauge looks
    # for unfinished ones (migration 0002).
    Index("ix_batch_runs_dataset_status", "dataset", "status"),
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
    # The stuck-runs gauge asks which runs finished a stage recently (migration 0002).
    Index("ix_stage_runs_finished_at", "finished_at"),
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


def utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime: SQLite hands back naive ones, all of them UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
