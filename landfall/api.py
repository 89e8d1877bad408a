"""The job API and status page (FastAPI), served by ``landfall serve api``.

Endpoints (the OpenAPI description is at ``/openapi.json``, a browsable one at ``/docs``):

- ``POST /batch/predict``: submit a batch run (dataset, partition, optional lake path,
  format and model version). Publishes data-landed and answers 202 with the batch id and
  the run id. The *job id* is the run id: one submission, one run.
- ``GET /batch/{job_id}``: one run's status per stage, figures, errors and links. A batch
  id is accepted too and answers with the batch's latest run (and all its runs).
- ``GET /batch/metrics``: batches and runs by status, rows, error rates, durations.
- ``GET /batches?dataset=&from=&to=&status=&limit=&offset=``: batch history, paged,
  newest first; ``from``/``to`` bound the partition date, inclusive.
- ``GET /``: an HTML status page of recent batches with their reports.
- ``GET /reports/{dataset}/{partition}/report.html`` (and ``report.json``).

Everything read comes from the results database, which the reporter writes; the API
itself writes only the submission of a run, so ``GET /batch/{run_id}`` answers at once.
"""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

import landfall
from landfall.config import Settings
from landfall.contracts import validate_partition
from landfall.errors import InvalidEventError, LandfallError, PathOutsideLakeError, RetryableError
from landfall.events import publish_data_landed
from landfall.lake import Lake
from landfall.results_db import ResultsDb, RunKey

__all__ = ["PredictAccepted", "PredictRequest", "create_app", "serve_api"]

# The stages of a run in order, as the results database names them.
STAGES = ("validation", "featurization", "prediction", "reporting")
_REPORT_FILES = ("report.html", "report.json")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class PredictRequest(BaseModel):
    """A batch to score: a landed partition of a configured dataset."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=200, description="a configured dataset")
    partition: str = Field(description="the partition: YYYY-MM-DD or YYYY-MM-DDTHH")
    path: str | None = Field(
        default=None, description="lake-relative directory of the raw files, if not the default"
    )
    format: Literal["csv", "parquet", "json"] | None = Field(
        default=None, description="raw file format, if not the dataset's"
    )
    model_version: str | None = Field(
        default=None,
        pattern=r"^[0-9]+$",
        description="a registered model version to pin, instead of the dataset's alias",
    )


class PredictAccepted(BaseModel):
    """A submitted run: poll ``links.self`` for its progress."""

    job_id: str = Field(description="the run id; GET /batch/{job_id} follows it")
    batch_id: str
    run_id: str
    dataset: str
    partition: str
    status: str
    links: dict[str, str]


def _report_links(row: dict[str, Any]) -> dict[str, str]:
    if not row.get("report_path"):
        return {}
    base = f"/reports/{row['dataset']}/{row['partition']}"
    return {"report_html": f"{base}/report.html", "report_json": f"{base}/report.json"}


def _stage_statuses(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pipeline stage of a run with its status, timings and rows."""
    recorded = {s["stage"]: s for s in run["stages"]}
    failed_stage = run.get("failed_stage")
    out = []
    blocked = False
    for stage in STAGES:
        entry = recorded.get(stage)
        if stage == failed_stage:
            status, blocked = "FAILED", True
        elif entry is not None:
            status = entry["status"]
        elif blocked or run["status"] == "FAILED":
            status = "SKIPPED"
        else:
            status = "PENDING"
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


def _run_view(run: dict[str, Any], lake: Lake) -> dict[str, Any]:
    dataset, partition = run["dataset"], run["partition"]
    outputs = {
        zone: f"{dataset}/{zone}/{partition}"
        for zone in ("validated", "quarantine", "features", "predictions", "reports")
        if lake.partition_dir(dataset, zone, partition).is_dir()  # type: ignore[arg-type]
    }
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
            **_report_links(run),
        },
        # Lake-relative directories; the report is per partition, the latest run's.
        "outputs": outputs,
    }


def _checked_partition(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        validate_partition(value)
    except InvalidEventError as exc:
        raise HTTPException(422, f"{name}: {exc}") from None
    return value


def create_app(settings: Settings, results: ResultsDb | None = None) -> FastAPI:
    """The API over one results database and lake, publishing to the configured broker."""
    db = results or ResultsDb(settings.results_db_url)
    lake = Lake(settings.lake)
    app = FastAPI(
        title="landfall job API",
        version=landfall.__version__,
        description="Submit batch predictions and follow every batch run: status per "
        "stage, data quality, predictions, history and reports.",
    )
    pins_model = "model_version" in inspect.signature(publish_data_landed).parameters

    @app.post("/batch/predict", status_code=202, response_model=PredictAccepted)
    def submit_batch(request: PredictRequest) -> PredictAccepted:
        """Publish data-landed for a partition; return the new run's ids."""
        if request.dataset not in settings.datasets:
            known = ", ".join(sorted(settings.datasets)) or "none"
            raise HTTPException(
                422, f"dataset: unknown dataset {request.dataset!r} (configured: {known})"
            )
        _checked_partition(request.partition, "partition")
        if request.path is not None:
            try:
                lake.resolve(request.path)
            except PathOutsideLakeError as exc:
                raise HTTPException(422, f"path: {exc}") from None
        extra: dict[str, Any] = {}
        if request.model_version is not None:
            if not pins_model:
                raise HTTPException(501, "model_version: this build cannot pin a model version")
            extra["model_version"] = request.model_version
        try:
            event = publish_data_landed(
                settings,
                request.dataset,
                request.partition,
                path=request.path,
                data_format=request.format,
                producer_name=f"landfall-api/{landfall.__version__}",
                **extra,
            )
        except RetryableError as exc:
            raise HTTPException(503, f"the broker is unavailable: {exc}") from None
        except LandfallError as exc:
            raise HTTPException(422, str(exc)) from None
        db.record_submission(
            RunKey.of(event),
            submitted_at=event.get("occurred_at") or datetime.now(UTC),
            model_version=request.model_version,
        )
        return PredictAccepted(
            job_id=event["run_id"],
            batch_id=event["batch_id"],
            run_id=event["run_id"],
            dataset=request.dataset,
            partition=request.partition,
            status="SUBMITTED",
            links={"self": f"/batch/{event['run_id']}", "batch": f"/batch/{event['batch_id']}"},
        )

    @app.get("/batch/metrics")
    def batch_metrics(
        dataset: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        """Batches and runs by status, rows processed, error rates and durations."""
        return db.metrics(dataset)

    @app.get("/batch/{job_id}")
    def batch_status(job_id: str) -> dict[str, Any]:
        """A run (by run id) or a batch's latest run (by batch id), with its stages."""
        run = db.run(job_id)
        runs: list[dict[str, Any]] | None = None
        if run is None:
            batch = db.batch(job_id)
            if batch is None:
                raise HTTPException(404, f"no batch run or batch with id {job_id!r}")
            run = db.run(batch["last_run_id"])
            if run is None:
                raise HTTPException(404, f"batch {job_id!r} has no recorded run")
            runs = db.runs_of(job_id)
        view = _run_view(run, lake)
        view["job_kind"] = "run" if runs is None else "batch"
        all_runs = runs if runs is not None else db.runs_of(run["batch_id"])
        view["runs"] = [
            {
                "run_id": r["run_id"],
                "status": r["status"],
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
                "link": f"/batch/{r['run_id']}",
            }
            for r in all_runs
        ]
        return view

    @app.get("/batches")
    def list_batches(
        request: Request,
        dataset: Annotated[str | None, Query(max_length=200)] = None,
        from_: Annotated[
            str | None, Query(alias="from", description="first partition, YYYY-MM-DD")
        ] = None,
        to: Annotated[str | None, Query(description="last partition, YYYY-MM-DD")] = None,
        status: Annotated[
            Literal["SUBMITTED", "RUNNING", "SUCCEEDED", "FAILED"] | None,
            Query(description="the status of the batch's latest run"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Batch history, newest first, one page at a time."""
        first = _checked_partition(from_, "from")
        last = _checked_partition(to, "to")
        if first is not None and last is not None and first > last:
            raise HTTPException(422, f"from ({first}) is after to ({last})")
        page = db.list_batches(
            dataset=dataset,
            partition_from=first,
            partition_to=last,
            status=status,
            limit=limit,
            offset=offset,
        )
        items = [
            {
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
                "links": {"self": f"/batch/{row['batch_id']}", **_report_links(row)},
            }
            for row in page.items
        ]
        following = None
        if offset + limit < page.total:
            following = str(request.url.include_query_params(offset=offset + limit))
        return {
            "items": items,
            "total": page.total,
            "limit": limit,
            "offset": offset,
            "next": following,
        }

    @app.get("/reports/{dataset}/{partition}/{name}", response_model=None)
    def report_file(dataset: str, partition: str, name: str) -> FileResponse:
        """A partition's report.html or report.json, as the reporter last wrote it."""
        if name not in _REPORT_FILES or not _DATASET_NAME.match(dataset):
            raise HTTPException(404, "no such report file")
        _checked_partition(partition, "partition")
        path = lake.partition_dir(dataset, "reports", partition) / name
        if not path.is_file():
            raise HTTPException(404, f"no {name} for {dataset} {partition} yet")
        media = "text/html; charset=utf-8" if name.endswith(".html") else "application/json"
        return FileResponse(path, media_type=media)

    @app.get("/", response_class=HTMLResponse)
    def status_page() -> str:
        """Recent batches with their state and reports."""
        return _status_page(db.list_batches(limit=100).items, db.metrics())

    return app


_PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .6rem;text-align:left;
border-bottom:1px solid #eee}th{background:#f5f5f5}.num{text-align:right}
.status{display:inline-block;padding:.05rem .5rem;border-radius:.7rem;color:#fff;
font-size:.85em;font-weight:600}.SUCCEEDED{background:#2e7d32}.FAILED{background:#c62828}
.RUNNING,.SUBMITTED{background:#f9a825}.muted{color:#666}.summary span{margin-right:1.5rem}
"""


def _status_page(rows: list[dict[str, Any]], metrics: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return '<span class="muted">-</span>'
        if isinstance(value, datetime):
            return escape(value.strftime("%Y-%m-%d %H:%M:%S"))
        return escape(str(value))

    lines = []
    for row in rows:
        links = _report_links(row)
        reports = (
            f'<a href="{links["report_html"]}">report</a> · '
            f'<a href="{links["report_json"]}">json</a>'
            if links
            else '<span class="muted">none yet</span>'
        )
        status = escape(row["last_status"])
        lines.append(
            f'<tr class="batch" data-batch-id="{escape(row["batch_id"])}" '
            f'data-status="{status}"><td>{cell(row["dataset"])}</td>'
            f"<td>{cell(row['partition'])}</td>"
            f'<td><span class="status {status}">{status}</span></td>'
            f"<td>{cell(row['current_stage'])}</td><td class='num'>{cell(row['run_count'])}</td>"
            f"<td class='num'>{cell(row['rows_scored'])}</td><td>{cell(row['model_version'])}</td>"
            f"<td>{cell(row['updated_at'])}</td>"
            f'<td><a href="/batch/{escape(row["batch_id"])}">details</a> · {reports}</td></tr>'
        )
    by_status = metrics["batches"]["by_status"]
    summary = "".join(
        f"<span>{escape(s.lower())}: <b>{n}</b></span>" for s, n in sorted(by_status.items())
    )
    body = "".join(lines) or '<tr><td colspan="9" class="muted">no batches yet</td></tr>'
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='15'><title>landfall: batches</title>"
        f"<style>{_PAGE_CSS}</style></head><body><h1>landfall batches</h1>"
        f"<p class='summary'><span>batches: <b>{metrics['batches']['total']}</b></span>"
        f"<span>rows scored: <b>{metrics['rows']['scored']:,}</b></span>{summary}</p>"
        "<table><thead><tr><th>dataset</th><th>partition</th><th>status</th><th>stage</th>"
        "<th>runs</th><th>rows scored</th><th>model</th><th>updated (UTC)</th><th></th></tr>"
        f"</thead><tbody>{body}</tbody></table>"
        "<p class='muted'><a href='/docs'>API</a> · <a href='/openapi.json'>OpenAPI</a> · "
        "<a href='/batch/metrics'>metrics</a></p></body></html>"
    )


def serve_api(settings: Settings) -> None:
    """Serve the API with uvicorn until SIGTERM or SIGINT."""
    import uvicorn

    reporting = settings.reporting
    uvicorn.run(
        create_app(settings),
        host=reporting.api_host,
        port=reporting.api_port,
        log_level="info",
    )
