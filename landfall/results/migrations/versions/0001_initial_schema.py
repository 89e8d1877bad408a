"""The schema landfall created before its migrations (create_all, no alembic_version).

A database made then is recognised and stamped at this revision, not re-created; its
tables must be exactly these (see landfall.results.database).

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _when(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _run_id() -> sa.Column:
    return sa.Column("run_id", sa.String(64), sa.ForeignKey("batch_runs.run_id"), primary_key=True)


def upgrade() -> None:
    # Long: one create per table, in dependency order, exactly as the schema was made.
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("partition", sa.String(32), nullable=False),
        _when("first_seen_at", nullable=False),
        sa.Column("last_run_id", sa.String(64), nullable=False),
        _when("last_run_started_at", nullable=False),
        sa.Column("last_status", sa.String(16), nullable=False),
        _when("updated_at", nullable=False),
    )
    op.create_index("ix_batches_dataset_partition", "batches", ["dataset", "partition"])
    op.create_table(
        "batch_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.batch_id"), nullable=False),
        sa.Column("dataset", sa.String(200), nullable=False),
        sa.Column("partition", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_stage", sa.String(32)),
        _when("started_at", nullable=False),
        _when("finished_at"),
        sa.Column("requested_model_version", sa.String(32)),
        sa.Column("rows_landed", sa.BigInteger),
        sa.Column("rows_valid", sa.BigInteger),
        sa.Column("rows_quarantined", sa.BigInteger),
        sa.Column("rows_scored", sa.BigInteger),
        sa.Column("model_name", sa.String(200)),
        sa.Column("model_version", sa.String(32)),
        sa.Column("failed_stage", sa.String(32)),
        sa.Column("failure_reason", sa.Text),
        sa.Column("retryable", sa.Boolean),
        sa.Column("stage_durations_ms", sa.JSON),
        sa.Column("drifted_features", sa.JSON),
        sa.Column("report_path", sa.Text),
        sa.Column("report_html_path", sa.Text),
        _when("reported_at"),
        _when("updated_at", nullable=False),
    )
    op.create_index("ix_batch_runs_batch_id", "batch_runs", ["batch_id"])
    op.create_table(
        "stage_runs",
        _run_id(),
        sa.Column("stage", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("duration_ms", sa.BigInteger),
        sa.Column("rows", sa.BigInteger),
        sa.Column("event_id", sa.String(64)),
    )
    op.create_table(
        "quality_figures",
        _run_id(),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
    )
    op.create_table(
        "prediction_summaries",
        _run_id(),
        sa.Column("rows", sa.BigInteger),
        sa.Column("null_predictions", sa.BigInteger),
        sa.Column("mean", sa.Float),
        sa.Column("min", sa.Float),
        sa.Column("max", sa.Float),
        sa.Column("distinct_values", sa.BigInteger),
        sa.Column("counts_by_value", sa.JSON),
    )
    op.create_table(
        "feature_drift",
        _run_id(),
        sa.Column("feature", sa.String(200), primary_key=True),
        sa.Column("psi", sa.Float, nullable=False),
        sa.Column("flagged", sa.Boolean, nullable=False),
    )
    op.create_table(
        "run_errors",
        _run_id(),
        sa.Column("stage", sa.String(32), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("retryable", sa.Boolean, nullable=False),
        _when("occurred_at", nullable=False),
        sa.Column("event_id", sa.String(64)),
    )


def downgrade() -> None:
    for table in (
        "run_errors",
        "feature_drift",
        "prediction_summaries",
        "quality_figures",
        "stage_runs",
        "batch_runs",
        "batches",
    ):
        op.drop_table(table)
