"""The operator's console: backfill a range and re-run a failed partition from the page.

The status page shows these forms to an operator's browser session only; each post
must pass :meth:`.auth.Auth.console_principal` (operator session, the session's CSRF
token, this API's own origin). Plain HTML forms, no script: the content security
policy allows none. Every action is logged with the operator's name; bad input
answers a 400 page naming the field. Events go out through the app's one producer
(:mod:`.publisher`), and each published run is recorded as submitted at once.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

import landfall
from landfall.api.auth import CSRF_FIELD, Auth
from landfall.api.deps import HistoryDep, PublisherDep, RecorderDep, SettingsDep
from landfall.api.errors import ErrorDetail, error_responses, public_message, shown
from landfall.api.forms import form_body, read_form
from landfall.api.models import MODEL_VERSION_PATTERN, is_partition
from landfall.api.publisher import Publisher, record_submitted
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.errors import LandfallError
from landfall.events import data_landed_event
from landfall.ingress import batch_id_for
from landfall.operations import BackfillStopped, backfill, partitions_between, plan_backfill
from landfall.rendering import render
from landfall.results import RunHistory, RunRecorder

__all__ = [
    "CONSOLE_ERRORS",
    "MAX_CONSOLE_PARTITIONS",
    "FormProblem",
    "console_page",
    "form_dataset",
    "operator_form",
    "router",
]

log = logging.getLogger("landfall.api")
router = APIRouter(tags=["console"])
# A backfill from a web form covers at most this many partitions: a longer range is
# most likely a slip of a date, and `landfall backfill` does long ones with progress.
MAX_CONSOLE_PARTITIONS = 100
# The console's forms have at most a handful of fields.
_FORM_FIELDS = 8
_PRODUCER = f"landfall-console/{landfall.__version__}"
_HTML = {"text/html": {"schema": {"type": "string"}}}
CONSOLE_ERRORS = {
    **error_responses(401, 403, 413, 414, 415, html_401=True),
    400: {"description": "A form field is not valid: a page naming it", "content": _HTML},
    503: {"description": "The broker did not take an event: what was done", "content": _HTML},
    # JSON, as the API's other errors; declared by content: a model would take the
    # route's media type (HTML).
    422: {
        "description": "More than a few form fields",
        "content": {"application/json": {"schema": ErrorDetail.model_json_schema()}},
    },
}
_TEXT = {"type": "string", "maxLength": 200}
_CSRF = {CSRF_FIELD: {**_TEXT, "description": "the session's token, from the status page"}}
_BACKFILL_FORM = form_body(
    {
        **_CSRF,
        "dataset": _TEXT,
        "first": {**_TEXT, "description": "the first partition, YYYY-MM-DD or YYYY-MM-DDTHH"},
        "last": {**_TEXT, "description": "the last partition, included"},
        "missing_only": {"type": "string", "enum": ["on"]},
    },
    required=[CSRF_FIELD, "dataset", "first", "last"],
)
_RERUN_FORM = form_body(
    {
        **_CSRF,
        "dataset": _TEXT,
        "partition": _TEXT,
        "model_version": {**_TEXT, "description": "a model version to pin; empty: the alias"},
    },
    required=[CSRF_FIELD, "dataset", "partition"],
)


class FormProblem(Exception):
    """A console form's field that is not valid: answered with a 400 page naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def console_page(
    title: str,
    *,
    sections: list[dict[str, Any]] | None = None,
    problem: FormProblem | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A console result: ``sections`` of items (``text``, optional ``link``), or a problem."""
    html = render("console.html", title=title, sections=sections or [], problem=problem)
    return HTMLResponse(html, status_code=status_code)


async def operator_form(request: Request) -> tuple[dict[str, str], str]:
    """The posted form and the name of the operator who may post it (else 401/403)."""
    form = await read_form(request, _FORM_FIELDS)
    auth: Auth = request.app.state.auth
    return form, auth.console_principal(request, form).name


def form_dataset(form: dict[str, str], settings: Settings) -> str:
    """The form's configured dataset; else a problem naming the known ones."""
    dataset = form.get("dataset", "")
    if dataset not in settings.datasets:
        known = ", ".join(sorted(settings.datasets)) or "none"
        raise FormProblem("dataset", f"unknown dataset {shown(dataset)} (configured: {known})")
    return dataset


def _partition(form: dict[str, str], field: str) -> str:
    value = form.get(field, "").strip()
    if not is_partition(value):
        raise FormProblem(field, f"{shown(value, 20)} is not a date YYYY-MM-DD or YYYY-MM-DDTHH")
    return value


def _model_version(form: dict[str, str]) -> str | None:
    value = form.get("model_version", "").strip()
    if not value:
        return None  # the dataset's alias, as a run without a pin
    if re.fullmatch(MODEL_VERSION_PATTERN, value) is None:
        raise FormProblem("model_version", f"{shown(value, 20)} is not a model version number")
    return value


def _backfill_range(form: dict[str, str]) -> tuple[str, str, bool]:
    """The form's first and last partitions (both daily or both hourly), within the cap."""
    first, last = _partition(form, "first"), _partition(form, "last")
    hourly = "T" in first
    if ("T" in last) != hourly:
        raise FormProblem("last", "give first and last alike: both days or both hours")
    try:
        count = len(partitions_between(first, last, hourly=hourly))
    except LandfallError as exc:
        raise FormProblem("last", str(exc)) from None
    if count > MAX_CONSOLE_PARTITIONS:
        raise FormProblem(
            "last",
            f"{first}..{last} is {count} partitions; the console backfills at most "
            f"{MAX_CONSOLE_PARTITIONS} at once (`landfall backfill` takes longer ranges)",
        )
    return first, last, hourly


def _published_items(events: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {"text": f"{e['partition']}: run {e['run_id']}", "link": f"/batch/{e['run_id']}"}
        for e in events
    ]


@router.post(
    "/console/backfill",
    response_class=HTMLResponse,
    responses=CONSOLE_ERRORS,
    openapi_extra={"requestBody": _BACKFILL_FORM},
)
async def console_backfill(
    request: Request, settings: SettingsDep, recorder: RecorderDep, publisher: PublisherDep
) -> HTMLResponse:
    """Backfill a dataset's range of partitions (an operator's session, from the page)."""
    form, operator = await operator_form(request)
    try:
        dataset = form_dataset(form, settings)
        first, last, hourly = _backfill_range(form)
    except FormProblem as problem:
        return console_page("backfill refused", problem=problem, status_code=400)
    missing_only = form.get("missing_only") == "on"
    return await run_in_threadpool(
        _backfill, settings, recorder, publisher, operator, dataset, (first, last, hourly),
        missing_only,
    )  # fmt: skip


def _backfill(
    settings: Settings,
    recorder: RunRecorder,
    publisher: Publisher,
    operator: str,
    dataset: str,
    span: tuple[str, str, bool],
    missing_only: bool,
) -> HTMLResponse:
    first, last, hourly = span
    plan = plan_backfill(settings, dataset, first, last, hourly=hourly, missing_only=missing_only)
    title = f"backfill of {dataset} {first}..{last}"
    skipped = [
        {"heading": "skipped: not landed", "items": [{"text": p} for p in plan.not_landed]},
        {"heading": "skipped: already scored", "items": [{"text": p} for p in plan.already_scored]},
    ]
    try:
        events = backfill(
            settings,
            plan,
            publish=publisher.publish,
            producer_name=_PRODUCER,
            on_published=lambda event: record_submitted(recorder, event),
        )
    except BackfillStopped as stop:
        log.warning("%s's backfill of %s stopped: %s", operator, dataset, stop)
        sections = [
            {"heading": "published", "items": _published_items(stop.published)},
            {"heading": "not published", "items": [{"text": stop.partition}]},
            {"heading": "not attempted", "items": [{"text": p} for p in stop.remaining]},
            *skipped,
        ]
        problem = FormProblem("broker", public_message(stop.reason, settings))
        return console_page(title, sections=sections, problem=problem, status_code=503)
    log.info(
        "%s backfilled %s %s..%s: %d published, %d not landed, %d already scored",
        operator, dataset, first, last, len(events), len(plan.not_landed),
        len(plan.already_scored),
    )  # fmt: skip
    sections = [{"heading": "published", "items": _published_items(events)}, *skipped]
    return console_page(title, sections=sections)


@router.post(
    "/console/rerun",
    response_class=HTMLResponse,
    responses=CONSOLE_ERRORS,
    openapi_extra={"requestBody": _RERUN_FORM},
)
async def console_rerun(
    request: Request,
    settings: SettingsDep,
    history: HistoryDep,
    recorder: RecorderDep,
    publisher: PublisherDep,
) -> HTMLResponse:
    """Run a failed partition again, optionally with a pinned model version."""
    form, operator = await operator_form(request)
    try:
        dataset = form_dataset(form, settings)
        partition = _partition(form, "partition")
        model_version = _model_version(form)
    except FormProblem as problem:
        return console_page("re-run refused", problem=problem, status_code=400)
    return await run_in_threadpool(
        _rerun, settings, history, recorder, publisher, operator, dataset, partition, model_version
    )


def _rerun(
    settings: Settings,
    history: RunHistory,
    recorder: RunRecorder,
    publisher: Publisher,
    operator: str,
    dataset: str,
    partition: str,
    model_version: str | None,
) -> HTMLResponse:
    """A new run (new run id, same batch id) of a partition whose latest run failed."""
    title = f"re-run of {dataset} {partition}"
    batch = history.batch(batch_id_for(dataset, partition))
    status = batch["last_status"] if batch else "never run"
    if status != "FAILED":
        # Only a failure is re-run from here; the backfill form runs any landed partition.
        problem = FormProblem("partition", f"its latest run is not a failure ({status})")
        return console_page(title, problem=problem, status_code=400)
    record = data_landed_event(
        dataset, partition, model_version=model_version, producer_name=_PRODUCER
    )
    try:
        event = publisher.publish(EventType.DATA_LANDED, settings.kafka.topics.landed.name, record)
    except LandfallError as exc:
        problem = FormProblem("broker", public_message(exc, settings))
        return console_page(title, problem=problem, status_code=503)
    record_submitted(recorder, event)
    log.info(
        "%s re-ran %s %s as run %s (model version %s)",
        operator, dataset, partition, event["run_id"], model_version or "of the alias",
    )  # fmt: skip
    pinned = f" with model version {model_version}" if model_version else ""
    item = {
        "text": f"{partition}: run {event['run_id']}{pinned}",
        "link": f"/batch/{event['run_id']}",
    }
    return console_page(title, sections=[{"heading": "published", "items": [item]}])
