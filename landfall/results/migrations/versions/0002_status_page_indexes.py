"""Indexes for what is asked on every status-page refresh and gauge tick.

The status page counts runs per dataset and status; the stuck-runs gauge looks for
unfinished runs with no stage finished lately. Without these both scan every run.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_batch_runs_dataset_status", "batch_runs", ["dataset", "status"])
    op.create_index("ix_stage_runs_finished_at", "stage_runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_stage_runs_finished_at", table_name="stage_runs")
    op.drop_index("ix_batch_runs_dataset_status", table_name="batch_runs")
