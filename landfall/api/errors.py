"""What the job API's errors say: declared shapes, short echoes, no server paths.

Errors echo at most a short, cut piece of any input, and never a server path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from landfall.config import Settings
from landfall.redact import redact

__all__ = [
    "ECHO_CHARS",
    "ErrorDetail",
    "error_responses",
    "install_error_handlers",
    "invalid",
    "public_message",
    "shown",
]

# How much of an input an error message may quote.
ECHO_CHARS = 80
# A rest of a server path in error text: /a/b... not preceded by a word, ':' or '/'
# (so URL paths inside http://host/... and lake-relative paths a/b/c stay readable).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")
_ERROR_WORDS = {
    400: "Malformed request (a bad Content-Length)",
    401: "No token, or one that is not valid (WWW-Authenticate: Bearer)",
    403: "The token is valid but its role may not do this (an operator token is needed)",
    404: "No such resource",
    408: "The request body did not arrive in time",
    413: "The request body is larger than api.max_body_bytes",
    414: "The request target is longer than api.max_url_bytes",
    415: "The body is not of the media type the route takes",
    503: "A dependency (the broker) is unavailable; try again",
}


class ErrorDetail(BaseModel):
    """An error: what was wrong, in words."""

    detail: str


def shown(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the full length said."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}... ({len(text)} characters)"


def public_message(text: object, settings: Settings, limit: int = 300) -> str:
    """An error's text fit for a client: no credentials, no server path, bounded."""
    message = str(text)[: limit * 4]
    message = redact(message)
    for root, name in ((settings.lake_uri, "<lake>"), (settings.home, "<home>")):
        message = message.replace(str(root), name)
    message = _ABSOLUTE_PATH.sub("<path>", message)
    return message if len(message) <= limit else message[:limit] + "..."


def invalid(location: Iterable[str | int], message: str) -> RequestValidationError:
    """A 422 in the same shape as a request that failed its schema."""
    return RequestValidationError([{"loc": tuple(location), "msg": message, "type": "value_error"}])


def _validation_body(errors: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    # FastAPI's own 422 quotes the whole input back (a 50 MB field, a 50 MB reply);
    # this keeps the declared shape (loc, msg, type) and cuts every part of it.
    detail = []
    for error in list(errors)[:20]:
        loc = [
            part
            if isinstance(part, int)
            else (str(part) if len(str(part)) <= 40 else shown(part, 40))
            for part in error.get("loc", ())
        ]
        detail.append(
            {
                "loc": loc,
                "msg": str(error.get("msg", "invalid"))[:300],
                "type": str(error.get("type", "value_error"))[:60],
            }
        )
    return {"detail": detail}


def error_responses(*codes: int, html_401: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the errors a route may answer (besides FastAPI's 422)."""
    declared: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        if code == 401 and html_401:
            declared[code] = {
                "description": "Not logged in: a login form for the token",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        else:
            # JSON whatever the route's own media type (the status page's is HTML).
            declared[code] = {
                "description": _ERROR_WORDS[code],
                "content": {"application/json": {"schema": ErrorDetail.model_json_schema()}},
            }
    return declared


def install_error_handlers(app: FastAPI) -> None:
    """Every 422 in the declared, cut-short shape."""

    @app.exception_handler(RequestValidationError)
    async def unprocessable(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(exc.errors()), status_code=422)
