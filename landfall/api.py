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
- ``GET /login``, ``POST /login``, ``POST /logout``: a browser's session; ``GET /healthz``.

Every endpoint but the OpenAPI description, ``/docs``, the login and ``/healthz``
needs a bearer token (landfall/api_security.py): an operator token to submit, any
token to read (none with ``api.public_reads``). The status page and the reports ask a
browser for the token once, then a session cookie carries it.

Everything read comes from the results database, which the reporter writes; the API
itself writes only the submission of a run, so ``GET /batch/{run_id}`` answers at once.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

import landfall
from landfall.api_page import report_links, status_page_html
from landfall.api_security import Auth, error_responses, install, invalid, public_message, shown
from landfall.api_tokens import Principal, ensure_generated_token
from landfall.config import Settings
from landfall.contracts import validate_partition
from landfall.errors import InvalidEventError, LandfallError, PathOutsideLakeError, RetryableError
from landfall.events import publish_data_landed
from landfall.lake import OUTPUT_ZONES, Lake, LakePath
from landfall.results import RunHistory, RunKey, RunRecorder, open_results_db

__all__ = ["PredictAccepted", "PredictRequest", "create_app", "serve_api"]

log = logging.getLogger(__name__)

# The stages of a run in order, as the results database names them.
STAGES = ("validation", "featurization", "prediction", "reporting")
_REPORT_FILES = ("report.html", "report.json")
# The event contract's grammar for dataset names (landfall/contracts.py).
_DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_DATASET_NAME = re.compile(_DATASET_PATTERN)
# ASCII digits only: a regex's \d would also take other scripts' digits.
_PARTITION_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2})?$"
_PARTITION_CHARS = len("YYYY-MM-DDTHH")
# A lake-relative directory: no control characters (a NUL makes every file call fail).
_LAKE_PATH_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_LAKE_PATH_CHARS = 1024
# Ids are uuids and hashes; anything much longer is not one of ours.
_ID_CHARS = 128
# Paging deeper than this is a mistake (or a probe); the database's integers end anyway.
_MAX_OFFSET = 1_000_000_000
# What each kind of route may answer besides 2xx and 422 (declared in the OpenAPI).
_READ_ERRORS = error_responses(401, 413, 414)
_PAGE_ERRORS = error_responses(401, 413, 414, html_401=True)


class PredictRequest(BaseModel):
    """A batch to score: a landed partition of a configured dataset."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        min_length=1, max_length=128, pattern=_DATASET_PATTERN, description="a configured dataset"
    )
    # The pattern is declared for clients; the validator checks it, and the calendar,
    # with a message that names the format.
    partition: str = Field(
        max_length=_PARTITION_CHARS,
        description="the partition: YYYY-MM-DD or YYYY-MM-DDTHH",
        json_schema_extra={"pattern": _PARTITION_PATTERN},
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=_LAKE_PATH_CHARS,
        pattern=_LAKE_PATH_PATTERN,
        description="lake-relative directory of the raw files, if not the default",
    )
    format: Literal["csv", "parquet", "json"] | None = Field(
        default=None, description="raw file format, if not the dataset's"
    )
    model_version: str | None = Field(
        default=None,
        max_length=18,
        pattern=r"^[0-9]+$",
        description="a registered model version to pin, instead of the dataset's alias",
    )

    @field_validator("partition")
    @classmethod
    def _a_partition(cls, value: str) -> str:
        if re.fullmatch(_PARTITION_PATTERN, value) is None:
            raise ValueError("not a date YYYY-MM-DD or date-hour YYYY-MM-DDTHH")
        try:
            validate_partition(value)
        except InvalidEventError:
            raise ValueError(f"{value} is not a date YYYY-MM-DD or YYYY-MM-DDTHH") from None
        return value


class PredictAccepted(BaseModel):
    """A submitted run: poll ``links.self`` for its progress."""

    job_id: str = Field(description="the run id; GET /batch/{job_id} follows it")
    batch_id: str
    run_id: str
    dataset: str
    partition: str
    status: str
    links: dict[str, str]


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


def _checked_partition(value: str | None, location: tuple[str, str]) -> str | None:
    if value is None:
        return None
    problem = f"{location[1]}: {shown(value, 20)} is not a date YYYY-MM-DD or YYYY-MM-DDTHH"
    # The cheap ASCII shape first: only a short string of digits reaches the calendar.
    if re.fullmatch(_PARTITION_PATTERN, value) is None:
        raise invalid(location, problem)
    try:
        validate_partition(value)
    except InvalidEventError:
        raise invalid(location, problem) from None
    return value


def _oversized(max_url_bytes: int) -> Callable[[MutableMapping[str, Any]], bool]:
    def oversized(scope: MutableMapping[str, Any]) -> bool:
        raw = scope.get("raw_path") or scope.get("path", "").encode()
        return len(raw) + len(scope.get("query_string", b"")) > max_url_bytes

    return oversized


def create_app(settings: Settings) -> FastAPI:
    """The API over one results database and lake, publishing to the configured broker."""
    results = open_results_db(settings.results_db_url)
    history, recorder = RunHistory(results), RunRecorder(results)
    lake = Lake.from_settings(settings)
    auth = Auth(settings)
    app = FastAPI(
        title="landfall job API",
        version=landfall.__version__,
        description="Submit batch predictions and follow every batch run: status per "
        "stage, data quality, predictions, history and reports. Send a token as "
        "'Authorization: Bearer TOKEN': an operator token to submit, any token to read.",
        # /docs is served by api_security with a content security policy of its own;
        # ReDoc would need a wider one (workers from blob:, web fonts) for no gain.
        docs_url=None,
        redoc_url=None,
        # FastAPI traces every request with its whole path and query as attributes; a
        # request refused for its length (414) would put all of it into the trace, and
        # every span attribute passes through redaction: no span for those.
        telemetry={"exclude": _oversized(settings.api.max_url_bytes)},
    )
    install(app, settings, auth)
    app.state.auth = auth
    pins_model = "model_version" in inspect.signature(publish_data_landed).parameters
    reader = Depends(auth.requires("read"))
    operator = Depends(auth.requires("operator"))
    page_reader = Depends(auth.requires("read", page=True))

    @app.post(
        "/batch/predict",
        status_code=202,
        response_model=PredictAccepted,
        responses=error_responses(400, 401, 403, 413, 414, 503),
    )
    def submit_batch(request: PredictRequest, principal: Principal = operator) -> PredictAccepted:
        """Publish data-landed for a partition; return the new run's ids (operator token)."""
        if request.dataset not in settings.datasets:
            known = ", ".join(sorted(settings.datasets)) or "none"
            raise invalid(
                ("body", "dataset"),
                f"unknown dataset {shown(request.dataset)} (configured: {shown(known, 200)[1:-1]})",
            )
        if request.path is not None:
            try:
                # The validator's own check, answered now rather than as a failed batch.
                lake.input_dir(
                    request.path, dataset=request.dataset, zone="raw", partition=request.partition
                )
            except (PathOutsideLakeError, ValueError, OSError) as exc:
                raise invalid(("body", "path"), public_message(exc, settings)) from None
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
            raise HTTPException(
                503, f"the broker is unavailable: {public_message(exc, settings)}"
            ) from None
        except LandfallError as exc:
            raise invalid(("body",), public_message(exc, settings)) from None
        recorder.record_submission(
            RunKey.of(event),
            submitted_at=event.get("occurred_at") or datetime.now(UTC),
            model_version=request.model_version,
        )
        # Who submitted what: the token's name, never the token.
        log.info(
            "%s submitted %s %s as run %s",
            principal.name,
            request.dataset,
            request.partition,
            event["run_id"],
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

    @app.get("/batch/metrics", dependencies=[reader], responses=_READ_ERRORS)
    def batch_metrics(
        dataset: Annotated[str | None, Query(max_length=128)] = None,
    ) -> dict[str, Any]:
        """Batches and runs by status, rows processed, error rates and durations."""
        return history.metrics(dataset)

    @app.get(
        "/batch/{job_id}",
        dependencies=[reader],
        responses={**_READ_ERRORS, **error_responses(404)},
    )
    def batch_status(job_id: Annotated[str, Path(max_length=_ID_CHARS)]) -> dict[str, Any]:
        """A run (by run id) or a batch's latest run (by batch id), with its stages."""
        run = history.run(job_id)
        runs: list[dict[str, Any]] | None = None
        if run is None:
            batch = history.batch(job_id)
            if batch is None:
                raise HTTPException(404, f"no batch run or batch with id {shown(job_id)}")
            run = history.run(batch["last_run_id"])
            if run is None:
                raise HTTPException(404, f"batch {shown(job_id)} has no recorded run")
            runs = history.runs_of(job_id)
        view = _run_view(run, lake)
        view["job_kind"] = "run" if runs is None else "batch"
        all_runs = runs if runs is not None else history.runs_of(run["batch_id"])
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

    @app.get("/batches", dependencies=[reader], responses=_READ_ERRORS)
    def list_batches(
        request: Request,
        dataset: Annotated[str | None, Query(max_length=128)] = None,
        from_: Annotated[
            str | None,
            Query(
                alias="from",
                max_length=_PARTITION_CHARS,
                pattern=_PARTITION_PATTERN,
                description="first partition, YYYY-MM-DD",
            ),
        ] = None,
        to: Annotated[
            str | None,
            Query(
                max_length=_PARTITION_CHARS,
                pattern=_PARTITION_PATTERN,
                description="last partition, YYYY-MM-DD",
            ),
        ] = None,
        status: Annotated[
            Literal["SUBMITTED", "RUNNING", "SUCCEEDED", "FAILED"] | None,
            Query(description="the status of the batch's latest run"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=_MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        """Batch history, newest first, one page at a time."""
        first = _checked_partition(from_, ("query", "from"))
        last = _checked_partition(to, ("query", "to"))
        if first is not None and last is not None and first > last:
            raise invalid(("query", "from"), f"from ({first}) is after to ({last})")
        page = history.list_batches(
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
                "links": {"self": f"/batch/{row['batch_id']}", **report_links(row)},
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

    @app.get(
        "/reports/{dataset}/{partition}/{name}",
        response_model=None,
        dependencies=[page_reader],
        responses={
            200: {
                "description": "the report",
                "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {}},
            },
            **_PAGE_ERRORS,
            **error_responses(404),
        },
    )
    def report_file(
        dataset: Annotated[str, Path(max_length=128)],
        partition: Annotated[str, Path(max_length=_PARTITION_CHARS)],
        name: Annotated[str, Path(max_length=16)],
    ) -> Response:
        """A partition's current report.html or report.json: its newest successful run's.

        A failed later run does not replace it; each run's own report is at
        ``/batch/{run_id}/{name}``.
        """
        if name not in _REPORT_FILES or not _DATASET_NAME.match(dataset):
            raise HTTPException(404, "no such report file")
        _checked_partition(partition, ("path", "partition"))
        commit = lake.committed(dataset, "reports", partition)
        if commit is None:
            raise HTTPException(404, f"no {name} for {dataset} {partition} yet")
        return _report_response(commit.path / name, name, f"{dataset} {partition}")

    @app.get(
        "/batch/{run_id}/{name}",
        response_model=None,
        dependencies=[page_reader],
        responses={
            200: {
                "description": "the run's own report",
                "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {}},
            },
            **_PAGE_ERRORS,
            **error_responses(404),
        },
    )
    def run_report_file(
        run_id: Annotated[str, Path(max_length=64)],
        name: Annotated[str, Path(max_length=16)],
    ) -> Response:
        """One run's report.html or report.json, whatever its outcome."""
        if name not in _REPORT_FILES:
            raise HTTPException(404, "no such report file")
        run = history.run(run_id)
        report = (run or {}).get("report_path")
        if not report or not isinstance(report, str):
            raise HTTPException(404, f"no report for run {shown(run_id, 64)}")
        folder = lake.path(report).parent
        if folder.rel.split("/")[1:2] != ["reports"]:  # the database names a report folder
            raise HTTPException(404, f"no report for run {shown(run_id, 64)}")
        return _report_response(folder / name, name, f"run {run_id}")

    def _report_response(path: LakePath, name: str, what: str) -> Response:
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            raise HTTPException(404, f"no {name} for {what}") from None
        media = "text/html; charset=utf-8" if name.endswith(".html") else "application/json"
        return Response(content=content, media_type=media)

    @app.get("/", response_class=HTMLResponse, dependencies=[page_reader], responses=_PAGE_ERRORS)
    def status_page(request: Request) -> str:
        """Recent batches with their state and reports."""
        session = auth.cookie in request.cookies
        return status_page_html(
            history.list_batches(limit=100).items, history.metrics(), session=session
        )

    return app


def serve_api(settings: Settings) -> None:
    """Serve the API with uvicorn until SIGTERM or SIGINT."""
    import uvicorn

    generated = ensure_generated_token(settings)
    app = create_app(settings)
    reporting, limits = settings.reporting, settings.api
    url = f"http://{reporting.api_host}:{reporting.api_port}/"
    log.info("job API and status page on %s: %s", url, app.state.auth.describe())
    if generated is not None:
        # Where the token is, as Jupyter says at start; the token itself is never logged.
        log.info(
            "no API token is configured: the operator token generated for this home is "
            "in %s (`landfall api-token` prints it); open %s and enter it there, or send "
            "it as 'Authorization: Bearer TOKEN'",
            generated,
            url,
        )
    uvicorn.run(
        app,
        host=reporting.api_host,
        port=reporting.api_port,
        log_level="info",
        # h11 (pure Python) always, whatever else is installed: its limit on a request's
        # head is what bounds the memory of a huge URL; one within it gets our 414.
        http="h11",
        h11_max_incomplete_event_size=limits.max_url_bytes + 64 * 1024,
        limit_concurrency=limits.max_concurrent_requests,
        server_header=False,
        access_log=False,  # RequestGuard writes one with the target cut short
    )
