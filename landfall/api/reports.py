"""The reports the reporter wrote: a partition's current one, and each run's own."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import Response

from landfall.api.auth import page_access
from landfall.api.deps import HistoryDep, LakeDep
from landfall.api.errors import error_responses, shown
from landfall.api.models import DATASET_NAME, PARTITION_CHARS, checked_partition
from landfall.lake import LakePath

__all__ = ["router"]

router = APIRouter(tags=["reports"], dependencies=[Depends(page_access)])
_REPORT_FILES = ("report.html", "report.json")


def _answers(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {}},
        },
        **error_responses(401, 413, 414, html_401=True),
        **error_responses(404),
    }


def _report_response(path: LakePath, name: str, what: str) -> Response:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise HTTPException(404, f"no {name} for {what}") from None
    media = "text/html; charset=utf-8" if name.endswith(".html") else "application/json"
    return Response(content=content, media_type=media)


@router.get(
    "/reports/{dataset}/{partition}/{name}",
    response_model=None,
    responses=_answers("the report"),
)
def report_file(
    dataset: Annotated[str, Path(max_length=128)],
    partition: Annotated[str, Path(max_length=PARTITION_CHARS)],
    name: Annotated[str, Path(max_length=16)],
    lake: LakeDep,
) -> Response:
    """A partition's current report.html or report.json: its newest successful run's.

    A failed later run does not replace it; each run's own report is at
    ``/batch/{run_id}/{name}``.
    """
    if name not in _REPORT_FILES or not DATASET_NAME.match(dataset):
        raise HTTPException(404, "no such report file")
    checked_partition(partition, ("path", "partition"))
    commit = lake.committed(dataset, "reports", partition)
    if commit is None:
        raise HTTPException(404, f"no {name} for {dataset} {partition} yet")
    return _report_response(commit.path / name, name, f"{dataset} {partition}")


@router.get(
    "/batch/{run_id}/{name}",
    response_model=None,
    responses=_answers("the run's own report"),
)
def run_report_file(
    run_id: Annotated[str, Path(max_length=64)],
    name: Annotated[str, Path(max_length=16)],
    history: HistoryDep,
    lake: LakeDep,
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
