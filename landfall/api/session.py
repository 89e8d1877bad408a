"""The browser's session: the login form, logging in with a token, logging out.

A token typed into the form becomes a signed session cookie that reads, and for an
operator also posts the console's forms (:mod:`.auth`); a form posted from another
site is refused, and after logging in the browser returns only to a path of this API.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from landfall.api.auth import REALM, Auth, LoginRequired, same_origin
from landfall.api.deps import SettingsDep
from landfall.api.errors import ErrorDetail, error_responses
from landfall.api.forms import form_body, read_form
from landfall.rendering import render

__all__ = ["install_login_handler", "login_page", "router"]

log = logging.getLogger(__name__)
router = APIRouter(tags=["session"])

_FORM_BODY = form_body(
    {
        "token": {"type": "string", "maxLength": 4096},
        "next": {"type": "string", "maxLength": 2048},
    },
    required=["token"],
)


def _safe_next(value: str | None) -> str:
    """A local path to return to after login; anything else (other sites) is ``/``."""
    if (
        not value
        or len(value) > 2048
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(ord(c) < 0x20 or c == "\x7f" for c in value)
    ):
        return "/"
    return value


def login_page(next_url: str, problem: str | None = None, status_code: int = 200) -> HTMLResponse:
    """The form that turns a token into a browser session."""
    html = render("login.html", next_url=_safe_next(next_url), problem=problem)
    headers = {"WWW-Authenticate": REALM} if status_code == 401 else None
    return HTMLResponse(html, status_code=status_code, headers=headers)


def install_login_handler(app: FastAPI) -> None:
    """A page read without a session answers with the login form."""

    @app.exception_handler(LoginRequired)
    async def log_in_first(_request: Request, exc: LoginRequired) -> HTMLResponse:
        return login_page(exc.next_url, exc.problem, status_code=401)


@router.get("/login", response_class=HTMLResponse, responses=error_responses(413, 414))
def login_form(
    next_url: str | None = Query(default=None, alias="next", max_length=2048),
) -> HTMLResponse:
    """The login form of the status page and reports."""
    return login_page(next_url or "/")


@router.post(
    "/login",
    status_code=303,
    response_class=RedirectResponse,
    openapi_extra={"requestBody": _FORM_BODY},
    responses={
        303: {"description": "Logged in: back to the page asked for, with a session cookie"},
        **error_responses(401, 403, 413, 414, 415, html_401=True),
        422: {"model": ErrorDetail, "description": "More than a few form fields"},
    },
)
async def log_in(request: Request, settings: SettingsDep) -> Response:
    """Exchange a token (a form field) for a session cookie that reads."""
    if not same_origin(request):
        raise HTTPException(403, "a login from another site is refused")
    form = await read_form(request, max_fields=8)
    next_url = _safe_next(form.get("next", "/"))
    token = form.get("token", "").strip()
    auth: Auth = request.app.state.auth
    lifetime = settings.api.session_hours * 3600
    value = auth.tokens.session_value(token, lifetime) if token else None
    if value is None:
        # For the operator watching for guessing; never what was typed.
        client = request.client.host if request.client else "-"
        log.warning("browser login from %s refused: not a valid token", client)
        return login_page(next_url, "That token is not valid.", status_code=401)
    principal = auth.tokens.session_principal(value)
    log.info("browser session started for %s", principal.name if principal else "?")
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        auth.cookie,
        value,
        max_age=int(lifetime),
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.api.secure_cookies,
    )
    return response


@router.post(
    "/logout",
    status_code=303,
    response_class=RedirectResponse,
    responses=error_responses(403, 413, 414),
)
async def log_out(request: Request) -> Response:
    """End this browser's session."""
    if not same_origin(request):
        raise HTTPException(403, "a logout from another site is refused")
    auth: Auth = request.app.state.auth
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.cookie, path="/", httponly=True, samesite="strict")
    return response
