"""Runs and batches: submit a batch, follow a run, page through history, the figures."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

import landfall
from landfall.api.auth import operator_access, read_access
from landfall.api.deps import HistoryDep, LakeDep, PublisherDep, RecorderDep, SettingsDep
from landfall.api.errors import error_responses, invalid, public_message, shown
from landfall.api.models import (
    ID_CHARS,
    MAX_OFFSET,
    PARTITION_CHARS,
    PARTITION_PATTERN,
    PredictAccepted,
    PredictRequest,
    checked_partition,
)
from landfall.api.publisher import record_submitted
from landfall.api.views import batch_item, run_view, runs_summary
from landfall.api_tokens import Principal
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.errors import LandfallError, PathOutsideLakeError, RetryableError
from landfall.events import data_landed_event
from landfall.lake import Lake

__all__ = ["router"]

log = logging.getLogger("landfall.api")
router = APIRouter(tags=["batches"])
_READ_ERRORS = error_responses(401, 413, 414)


def _check_submission(request: PredictRequest, settings: Settings, lake: Lake) -> None:
    """What the body's schema cannot know: a configured dataset, a raw path in the lake."""
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


@router.post(
    "/batch/predict",
    status_code=202,
    response_model=PredictAccepted,
    responses=error_responses(400, 401, 403, 413, 414, 503),
)
def submit_batch(
    request: PredictRequest,
    principal: Annotated[Principal, Depends(operator_access)],
    settings: SettingsDep,
    lake: LakeDep,
    recorder: RecorderDep,
    publisher: PublisherDep,
) -> PredictAccepted:
    """Publish data-landed for a partition; return the new run's ids (operator token)."""
    _check_submission(request, settings, lake)
    try:
        event = publisher.publish(
            EventType.DATA_LANDED,
            settings.kafka.topics.landed.name,
            data_landed_event(
                request.dataset,
                request.partition,
                path=request.path,
                data_format=request.format,
                model_version=request.model_version,
                producer_name=f"landfall-api/{landfall.__version__}",
            ),
        )
    except RetryableError as exc:
        raise HTTPException(
            503, f"the broker is unavailable: {public_message(exc, settings)}"
        ) from None
    except LandfallError as exc:
        raise invalid(("body",), public_message(exc, settings)) from None
    record_submitted(recorder, event)
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


# Before /batch/{job_id}, which would take "metrics" for an id.
@router.get("/batch/metrics", dependencies=[Depends(read_access)], responses=_READ_ERRORS)
def batch_metrics(
    history: HistoryDep,
    dataset: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    """Batches and runs by status, rows processed, error rates and durations."""
    return history.metrics(dataset)


@router.get(
    "/batch/{job_id}",
    dependencies=[Depends(read_access)],
    responses={**_READ_ERRORS, **error_responses(404)},
)
def batch_status(
    job_id: Annotated[str, Path(max_length=ID_CHARS)], history: HistoryDep, lake: LakeDep
) -> dict[str, Any]:
    """A run (by run id) or a batch's latest run (by batch id), with its stages."""
    run = history.run(job_id)
    kind = "run"
    if run is None:
        batch = history.batch(job_id)
        if batch is None:
            raise HTTPException(404, f"no batch run or batch with id {shown(job_id)}")
        run = history.run(batch["last_run_id"])
        if run is None:
            raise HTTPException(404, f"batch {shown(job_id)} has no recorded run")
        kind = "batch"
    view = run_view(run, lake)
    view["job_kind"] = kind
    view["runs"] = runs_summary(history.runs_of(run["batch_id"]))
    return view


@router.get("/batches", dependencies=[Depends(read_access)], responses=_READ_ERRORS)
def list_batches(
    request: Request,
    history: HistoryDep,
    dataset: Annotated[str | None, Query(max_length=128)] = None,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=PARTITION_CHARS,
            pattern=PARTITION_PATTERN,
            description="first partition, YYYY-MM-DD",
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(
            max_length=PARTITION_CHARS,
            pattern=PARTITION_PATTERN,
            description="last partition, YYYY-MM-DD",
        ),
    ] = None,
    status: Annotated[
        Literal["SUBMITTED", "RUNNING", "SUCCEEDED", "FAILED"] | None,
        Query(description="the status of the batch's latest run"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """Batch history, newest first, one page at a time."""
    first = checked_partition(from_, ("query", "from"))
    last = checked_partition(to, ("query", "to"))
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
    following = None
    if offset + limit < page.total:
        following = str(request.url.include_query_params(offset=offset + limit))
    return {
        "items": [batch_item(row) for row in page.items],
        "total": page.total,
        "limit": limit,
        "offset": offset,
        "next": following,
    }
