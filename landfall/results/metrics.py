"""The status page's figures, computed by the database: counts, sums and percentiles.

Nothing here loads runs into Python: a refresh costs a few aggregate queries however
many runs the database holds. Run durations are ``finished_at - started_at`` of finished
runs (never negative); their percentiles follow ``percentile_cont`` (linear between the
two nearest values), which PostgreSQL computes itself and SQLite, which lacks it, gets
from the one or two values around the rank (``ORDER BY ... LIMIT 2 OFFSET k``).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import ColumnElement, Connection, Float, cast, extract, func, select

from landfall.results.schema import batch_runs, batches, stage_runs

__all__ = ["DURATION_PERCENTILES", "run_durations", "run_metrics", "stage_durations"]

DURATION_PERCENTILES = {"p50": 0.5, "p95": 0.95}


def run_metrics(conn: Connection, dataset: str | None = None) -> dict[str, Any]:
    """Batches and runs by status, rows, error rates, run and stage durations."""
    batch_filter = [batches.c.dataset == dataset] if dataset else []
    run_filter = [batch_runs.c.dataset == dataset] if dataset else []
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
    rows = conn.execute(
        select(
            *(
                func.coalesce(func.sum(batch_runs.c[f"rows_{kind}"]), 0)
                for kind in ("landed", "valid", "quarantined", "scored")
            )
        ).where(*run_filter)
    ).one()
    landed, valid, quarantined, scored = (int(v) for v in rows)
    finished = runs_by_status.get("SUCCEEDED", 0) + runs_by_status.get("FAILED", 0)
    return {
        "dataset": dataset,
        "batches": {"total": sum(batches_by_status.values()), "by_status": batches_by_status},
        "runs": {"total": sum(runs_by_status.values()), "by_status": runs_by_status},
        "rows": {"landed": landed, "valid": valid, "quarantined": quarantined, "scored": scored},
        "error_rates": {
            "failed_runs": runs_by_status.get("FAILED", 0) / finished if finished else None,
            "quarantined_rows": quarantined / landed if landed else None,
        },
        "durations_s": run_durations(conn, run_filter),
        "stage_durations_ms": stage_durations(conn, run_filter),
    }


def stage_durations(conn: Connection, run_filter: list[Any]) -> dict[str, dict[str, Any]]:
    """Per stage: how many runs timed it, their mean and longest time in milliseconds."""
    rows = conn.execute(
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
    return {
        stage: {"runs": int(n), "mean": float(mean), "max": int(top)}
        for stage, n, mean, top in rows
    }


def run_durations(conn: Connection, run_filter: list[Any]) -> dict[str, float | int | None]:
    """Count, mean, percentiles and max of finished runs' durations in seconds."""
    seconds = _run_seconds(conn.dialect.name)
    where = [*run_filter, batch_runs.c.finished_at.is_not(None)]
    aggregates: list[Any] = [func.count(), func.avg(seconds), func.max(seconds)]
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        aggregates += [
            func.percentile_cont(fraction).within_group(seconds)
            for fraction in DURATION_PERCENTILES.values()
        ]
    count, mean, top, *percentiles = conn.execute(select(*aggregates).where(*where)).one()
    if not count:
        return {"runs": 0, "mean": None, **dict.fromkeys(DURATION_PERCENTILES), "max": None}
    if not postgres:
        percentiles = [
            _percentile_by_offset(conn, seconds, where, int(count), fraction)
            for fraction in DURATION_PERCENTILES.values()
        ]
    return {
        "runs": int(count),
        "mean": float(mean),
        **{
            name: None if value is None else float(value)
            for name, value in zip(DURATION_PERCENTILES, percentiles, strict=True)
        },
        "max": float(top),
    }


def _run_seconds(dialect: str) -> ColumnElement[Any]:
    finished, started = batch_runs.c.finished_at, batch_runs.c.started_at
    if dialect == "postgresql":
        return func.greatest(cast(extract("epoch", finished - started), Float), 0.0)
    # SQLite keeps times as text; julianday reads them, to the millisecond (rounding
    # drops what the day fraction's floating point adds beyond it).
    days = func.julianday(finished) - func.julianday(started)
    return func.max(func.round(days * 86400.0, 3), 0.0)  # two-argument max: the larger


def _percentile_by_offset(
    conn: Connection, seconds: ColumnElement[Any], where: list[Any], count: int, fraction: float
) -> float | None:
    """``percentile_cont(fraction)`` from the (at most) two values around its rank."""
    position = fraction * (count - 1)
    below = math.floor(position)
    values = (
        conn.execute(select(seconds).where(*where).order_by(seconds).limit(2).offset(below))
        .scalars()
        .all()
    )
    if not values:
        return None  # runs vanished between the two queries; nothing to interpolate
    if len(values) == 1 or position == below:
        return float(values[0])
    return float(values[0]) + (position - below) * (float(values[1]) - float(values[0]))
