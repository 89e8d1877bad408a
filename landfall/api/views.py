"""How the job API shows runs and batches: the JSON views built from database rows."""

from __future__ import annotations

from typing import Any

from landfall.lake import OUTPUT_ZONES, Lake

__all__ = [
    "STAGES",
    "batch_item",
    "partition_grid",
    "report_links",
    "run_view",
    "runs_summary",
    "stage_states",
]

# The stages of a run in order, as the results database names them.
STAGES = ("validation", "featurization", "prediction", "reporting")


def report_links(row: dict[str, Any], *, own_run: bool = False) -> dict[str, str]:
    """Where a batch row's reports are, if the reporter wrote them.

    ``own_run``: the run's own report; otherwise the partition's current one (its newest
    successful run's).
    """
    if not row.get("report_path"):
        return {}
    if own_run and row.get("run_id"):
        base = f"/batch/{row['run_id']}"
    else:
        base = f"/reports/{row['dataset']}/{row['partition']}"
    return {"report_html": f"{base}/report.html", "report_json": f"{base}/report.json"}


def stage_states(
    recorded: dict[str, str], failed_stage: str | None, run_status: str
) -> dict[str, str]:
    """Each pipeline stage's state in a run, from the stages the database recorded.

    The failed stage is FAILED; a stage after it, or not reached by a failed run, is
    SKIPPED; one not reached yet by a run still going is PENDING.
    """
    states = {}
    blocked = False
    for stage in STAGES:
        if stage == failed_stage:
            states[stage], blocked = "FAILED", True
        elif stage in recorded:
            states[stage] = recorded[stage]
        elif blocked or run_status == "FAILED":
            states[stage] = "SKIPPED"
        else:
            states[stage] = "PENDING"
    return states


def _stage_statuses(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pipeline stage of a run with its status, timings and rows."""
    recorded = {s["stage"]: s for s in run["stages"]}
    states = stage_states(
        {name: entry["status"] for name, entry in recorded.items()},
        run.get("failed_stage"),
        run["status"],
    )
    out = []
    for stage, status in states.items():
        entry = recorded.get(stage)
        out.append(
            {
                "stage": stage,
                "status": status,
                "started_at": entry["started_at"] if entry else None,
                "finished_at": entry["finished_at"] if entry else None,
                "duration_ms": entry["duration_ms"] if entry else None,
                "rows": entry["rows"] if entry else None,
            }
        )
    return out


def run_view(run: dict[str, Any], lake: Lake) -> dict[str, Any]:
    """A run as ``GET /batch/{job_id}`` shows it: stages, figures, model, errors, links."""
    dataset, partition = run["dataset"], run["partition"]
    # Each zone's output of this very run (every run keeps its own), else the
    # partition's committed one.
    outputs = {}
    for zone in OUTPUT_ZONES:
        found = lake.output_of_run(dataset, zone, partition, run["run_id"])
        if found is not None:
            outputs[zone] = found.rel
    return {
        "job_id": run["run_id"],
        "batch_id": run["batch_id"],
        "run_id": run["run_id"],
        "dataset": dataset,
        "partition": partition,
        "status": run["status"],
        "current_stage": run["current_stage"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "stages": _stage_statuses(run),
        "figures": {
            "rows_landed": run["rows_landed"],
            "rows_valid": run["rows_valid"],
            "rows_quarantined": run["rows_quarantined"],
            "rows_scored": run["rows_scored"],
            "stage_durations_ms": run["stage_durations_ms"],
            "quality": run["quality"],
            "predictions": run["prediction_summary"],
            "drift": run["drift"],
            "drifted_features": run["drifted_features"] or [],
        },
        "model": {
            "name": run["model_name"],
            "version": run["model_version"],
            "requested_version": run["requested_model_version"],
        },
        "errors": run["errors"],
        "links": {
            "self": f"/batch/{run['run_id']}",
            "batch": f"/batch/{run['batch_id']}",
            # This run's own report (a failed run's too); /reports/... is the partition's.
            **report_links(run, own_run=True),
        },
        # Lake-relative directories.
        "outputs": outputs,
    }


def runs_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch's runs, each in brief with a link to its full view."""
    return [
        {
            "run_id": r["run_id"],
            "status": r["status"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "link": f"/batch/{r['run_id']}",
        }
        for r in runs
    ]


def batch_item(row: dict[str, Any]) -> dict[str, Any]:
    """A batch as the history (``GET /batches``) and the status page list it."""
    return {
        "batch_id": row["batch_id"],
        "dataset": row["dataset"],
        "partition": row["partition"],
        "status": row["last_status"],
        "current_stage": row["current_stage"],
        "last_run_id": row["last_run_id"],
        "run_count": row["run_count"],
        "rows_landed": row["rows_landed"],
        "rows_scored": row["rows_scored"],
        "model_version": row["model_version"],
        "failure_reason": row["failure_reason"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "updated_at": row["updated_at"],
        "links": {"self": f"/batch/{row['batch_id']}", **report_links(row)},
    }


def partition_grid(dataset: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A dataset's partitions across, the stages down, each cell its latest run's state.

    ``runs``: :meth:`RunHistory.latest_runs`. A cell links to the run's own report when
    it has one, else to the batch's run history (where a failure's reason is).
    """
    columns = []
    for run in runs:
        history = f"/batch/{run['batch_id']}"
        columns.append(
            {
                "partition": run["partition"],
                "status": run["status"],
                "history": history,
                "link": report_links(run, own_run=True).get("report_html", history),
                "states": stage_states(run["stages"], run.get("failed_stage"), run["status"]),
            }
        )
    return {"dataset": dataset, "stages": STAGES, "columns": columns}
