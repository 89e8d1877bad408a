"""The dead-letter page: the newest dead letters with reason, source and a decoded preview.

Read per request with :func:`landfall.dlq.read_dead_letters` (an assigned consumer that
joins no group and commits nothing), bounded to the newest :data:`PAGE_LETTERS` of
each partition. Every value shown is redacted by :mod:`landfall.dlq` and escaped by the
template. An operator's session may redrive a letter (the console's rules: its CSRF
token, this API's own origin), as ``landfall dlq redrive`` does.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from landfall.api.auth import CSRF_FIELD, Auth, page_access
from landfall.api.console import CONSOLE_ERRORS, FormProblem, console_page, operator_form
from landfall.api.deps import SettingsDep
from landfall.api.errors import error_responses, public_message
from landfall.api.forms import form_body
from landfall.config import Settings
from landfall.dlq import (
    DeadLetterMessage,
    decode_preview,
    parse_ref,
    read_dead_letters,
    read_one,
    redrive,
)
from landfall.errors import LandfallError
from landfall.rendering import render

__all__ = ["PAGE_LETTERS", "router"]

log = logging.getLogger("landfall.api")
router = APIRouter(tags=["pages"])
# The newest this many dead letters are shown: a page, not an archive (`landfall dlq
# list` reads them all).
PAGE_LETTERS = 200
# A decoded event's field is shown up to this many characters.
_FIELD_CHARS = 300


def _row(settings: Settings, letter: DeadLetterMessage) -> dict[str, Any]:
    """A dead letter as the page shows it; every string already redacted."""
    preview = decode_preview(settings, letter)
    fields = {
        name: text if len(text := json.dumps(value, default=str)) <= _FIELD_CHARS
        else text[:_FIELD_CHARS] + "..."
        for name, value in (preview.get("event") or {}).items()
    }  # fmt: skip
    return {
        **letter.summary(),
        "event_type": preview.get("event_type"),
        "fields": fields,
        "text": preview.get("text") or preview.get("hex") or "",
        "decode_error": preview.get("decode_error"),
        "redrivable": letter.original_bytes is None and letter.source_place is not None,
    }


@router.get(
    "/dead-letters",
    response_class=HTMLResponse,
    dependencies=[Depends(page_access)],
    responses=error_responses(401, 413, 414, html_401=True),
)
def dead_letter_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The newest dead letters, newest first, each with its reason and a preview."""
    auth: Auth = request.app.state.auth
    problem = None
    letters: list[DeadLetterMessage] = []
    try:
        letters = list(read_dead_letters(settings, newest=PAGE_LETTERS))
    except LandfallError as exc:
        problem = public_message(exc, settings)
    letters.sort(key=lambda m: (m.timestamp_ms or 0, m.partition, m.offset), reverse=True)
    html = render(
        "dead_letters.html",
        topic=settings.kafka.topics.dead_letter.name,
        letters=[_row(settings, letter) for letter in letters[:PAGE_LETTERS]],
        limit=PAGE_LETTERS,
        problem=problem,
        form_token=auth.console_form_token(request),
    )
    return HTMLResponse(html, status_code=503 if problem else 200)


@router.post(
    "/console/redrive",
    response_class=HTMLResponse,
    responses=CONSOLE_ERRORS,
    openapi_extra={
        "requestBody": form_body(
            {
                CSRF_FIELD: {"type": "string", "maxLength": 200},
                "ref": {"type": "string", "maxLength": 40, "description": "partition@offset"},
            },
            required=[CSRF_FIELD, "ref"],
        )
    },
)
async def console_redrive(request: Request, settings: SettingsDep) -> HTMLResponse:
    """Redrive one dead letter to its source (an operator's session, from the page)."""
    form, operator = await operator_form(request)
    ref = form.get("ref", "")
    try:
        parse_ref(ref)
    except LandfallError as exc:
        return console_page(
            "redrive refused", problem=FormProblem("ref", str(exc)), status_code=400
        )
    return await run_in_threadpool(_redrive, settings, operator, ref)


def _redrive(settings: Settings, operator: str, ref: str) -> HTMLResponse:
    title = f"redrive of dead letter {ref}"
    try:
        (result,) = redrive(settings, [read_one(settings, ref)])
    except LandfallError as exc:
        problem = FormProblem("ref", public_message(exc, settings))
        return console_page(title, problem=problem, status_code=400)
    if result.refused is not None:
        return console_page(title, problem=FormProblem("ref", result.refused), status_code=400)
    log.info("%s redrove dead letter %s to %s", operator, ref, result.redriven_to)
    item = {"text": f"{ref} from {result.source} to {result.redriven_to}"}
    return console_page(title, sections=[{"heading": "redriven", "items": [item]}])
