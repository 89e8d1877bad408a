"""The read side of the results database: runs, batches, history pages and gauges.

Used by the job API and its status page, ``landfall reconcile`` and the reporter's
gauges; the figures of the status page are computed in :mod:`landfall.results.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from landfall.results.database import ResultsClient
from landfall.results.metrics import run_metrics
from landfall.results.schema import (
    NULL_FRACTION,
    RULE_FAILURES,
    batch_runs,
    batches,
    feature_drift,
    prediction_summaries,
    quality_figures,
    run_errors,
    stage_runs,
    utc,
)

__all__ = ["BatchPage", "RunHistory"]


class BatchPage:
    """One page of batches, the total that matched and the paging asked for."""

    def __init__(self, items: list[dict[str, Any]], total: int, limit: int, offset: int) -> None:
        self.items = items
        self.total = total
        self.limit = limit
        self.offset = offset


def _row(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    return {k: utc(v) if isinstance(v, datetime) else v for k, v in mapping.items()}


class RunHistory(ResultsClient):
    """Reads batches and their runs; never writes."""

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

    def latest_runs(self, dataset: str, *, partitions: int = 31) -> list[dict[str, Any]]:
        """The latest run of each of ``dataset``'s newest partitions, oldest first.

        Each with its recorded stages (``stages``: stage name to status): what the
        status page's partition grid shows. Two queries, whatever the number of runs.
        """
        last = batch_runs.alias("last_run")
        query = (
            select(
                batches.c.batch_id,
                batches.c.dataset,
                batches.c.partition,
                last.c.run_id,
                last.c.status,
                last.c.failed_stage,
                last.c.report_path,
            )
            .select_from(batches.join(last, last.c.run_id == batches.c.last_run_id))
            .where(batches.c.dataset == dataset)
            .order_by(batches.c.partition.desc())
            .limit(partitions)
        )
        with self.engine.connect() as conn:
            runs = [_row(r) for r in conn.execute(query).mappings()]
            recorded = conn.execute(
                select(stage_runs.c.run_id, stage_runs.c.stage, stage_runs.c.status).where(
                    stage_runs.c.run_id.in_([run["run_id"] for run in runs])
                )
            ).all()
        stages: dict[str, dict[str, str]] = {run["run_id"]: {} for run in runs}
        for run_id, stage, status in recorded:
            stages[run_id][stage] = status
        for run in runs:
            run["stages"] = stages[run["run_id"]]
        return runs[::-1]

    def metrics(self, dataset: str | None = None) -> dict[str, Any]:
        """Aggregated figures: batches and runs by status, rows, error rates, durations."""
        with self.engine.connect() as conn:
            return run_metrics(conn, dataset)

    def last_success_by_dataset(self) -> dict[str, datetime]:
        """When each dataset's latest successful run was reported."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batch_runs.c.dataset, func.max(batch_runs.c.reported_at))
                .where(batch_runs.c.status == "SUCCEEDED", batch_runs.c.reported_at.is_not(None))
                .group_by(batch_runs.c.dataset)
            ).all()
        return {str(dataset): utc(at) for dataset, at in rows}  # type: ignore[misc]

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
