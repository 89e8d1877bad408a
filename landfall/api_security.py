"""The job API's guard: bearer tokens and roles, the browser login, request limits, headers.

- :class:`RequestGuard` (ASGI middleware, outermost) refuses a request target over
  ``api.max_url_bytes`` (414) and a body over ``api.max_body_bytes`` (413) before any
  routing or parsing, each check linear in the input and done once; it puts the
  security headers on every response, and turns an unexpected failure into a 500 that
  shows no traceback, path or input.
- :class:`Auth` gives each route its role: ``read`` (status, history, metrics,
  reports; open without a token only with ``api.public_reads``) or ``operator``
  (anything that changes something). A token comes as ``Authorization: Bearer``; a
  browser, which cannot send that header when it follows a link, logs in once with a
  form and then carries a signed session cookie (HttpOnly, SameSite=Strict), accepted
  only for reads, so no other site can make a browser change anything.
- Errors echo at most a short, cut piece of any input, and never a server path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from html import escape
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from landfall.api_tokens import Principal, Role, TokenStore
from landfall.config import Settings
from landfall.redact import redact

__all__ = [
    "Auth",
    "ErrorDetail",
    "LoginRequired",
    "RequestGuard",
    "error_responses",
    "install",
    "invalid",
    "public_message",
    "shown",
]

log = logging.getLogger(__name__)
access = logging.getLogger("landfall.api.access")

# No scripts, no plugins, no framing, forms only to this origin. Inline styles stay
# allowed: the status page and the reports carry their CSS inline and escape all data.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    # Batch data and reports are not for shared caches or the browser's history.
    ("cache-control", "no-store"),
)
# A client that sends its body slower than this in total is cut off (408): a slow
# trickle must not hold one of the API's request slots for ever.
BODY_TIMEOUT_S = 30.0
# How much of an input an error message may quote.
ECHO_CHARS = 80
_REALM = 'Bearer realm="landfall"'
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# A rest of a server path in error text: /a/b... not preceded by a word, ':' or '/'
# (so URL paths inside http://host/... and lake-relative paths a/b/c stay readable).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


# Module level: FastAPI resolves the dependency's (string) annotations in this module.
_BEARER = HTTPBearer(auto_error=False, description="a read or operator token of the job API")


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
    words = {
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
                "description": words[code],
                "content": {"application/json": {"schema": ErrorDetail.model_json_schema()}},
            }
    return declared


async def _json(send: Send, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers={"connection": "close"})
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class RequestGuard:
    """Limits every request and secures every response before the app sees either."""

    def __init__(self, app: ASGIApp, *, max_url_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def secured(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(raw=list(message.get("headers", [])))
                for name, value in SECURITY_HEADERS:
                    if name not in headers:  # a route may set a stricter or wider one
                        headers.append(name, value)
                message["headers"] = headers.raw
            await send(message)

        try:
            await self._guarded(scope, receive, secured)
        except Exception:
            log.exception("%s %s failed", scope["method"], _target(scope))
            if not status:
                await _json(secured, 500, "internal error; the API's log says more")
        finally:
            # The access log, in place of uvicorn's: that one writes the whole target,
            # 60 KB of it if a client sends that; this one a bounded piece.
            client = scope.get("client") or ("-", 0)
            access.info('%s - "%s %s" %s', client[0], scope["method"], _target(scope), status)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
        if target > self.max_url_bytes:
            await _json(send, 414, f"the request target is over {self.max_url_bytes} bytes")
            return
        headers = {
            k.lower(): v
            for k, v in scope["headers"]
            if k.lower() in (b"content-length", b"transfer-encoding")
        }
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 18:
                await _json(send, 400, "Content-Length is not a byte count")
                return
            # Refused unread: a client announcing 50 MB is answered before it sends it.
            if int(declared) > self.max_body_bytes:
                await _json(send, 413, f"the body is over {self.max_body_bytes} bytes")
                return
        if declared not in (None, b"0") or b"transfer-encoding" in headers:
            body = await self._read_body(receive)
            if body == 413:
                await _json(send, 413, f"the body is over {self.max_body_bytes} bytes")
                return
            if body == 408:
                await _json(send, 408, f"no whole body within {BODY_TIMEOUT_S:g}s")
                return
            if isinstance(body, int):
                return  # the client went away
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _read_body(self, receive: Receive) -> bytes | int:
        """The whole body, or 413 past the limit, 408 when too slow, 0 on disconnect."""
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_TIMEOUT_S
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return 408
            if message["type"] == "http.disconnect":
                return 0
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return 413
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _target(scope: Scope, limit: int = 200) -> str:
    """The request's path and query for a log line, cut to ``limit`` characters."""
    query = scope["query_string"].decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    return target if len(target) <= limit else f"{target[:limit]}... ({len(target)} chars)"


def _replay(body: bytes, receive: Receive) -> Receive:
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later: the client's disconnect

    return replayed


class LoginRequired(Exception):
    """A browser page without a valid session: answered with the login form (401)."""

    def __init__(self, next_url: str, problem: str | None = None) -> None:
        super().__init__(next_url)
        self.next_url = next_url
        self.problem = problem


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


class Auth:
    """The API's tokens and the dependency that gives each route its role."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = TokenStore(settings)
        # The port in the name: browsers share cookies across a host's ports, and two
        # APIs on one machine must not overwrite each other's session.
        self.cookie = f"landfall_session_{settings.reporting.api_port}"

    def describe(self) -> str:
        """What the API accepts, for its start-up log (names and counts, no token)."""
        counts = self.tokens.counts()
        source = " and ".join(
            s
            for s in (
                "api.tokens" if self.settings.api.tokens else "",
                str(self.tokens.file) if self.tokens.file else "",
            )
            if s
        )
        reads = "open to all" if self.settings.api.public_reads else "need a token"
        return (
            f"{counts['operator']} operator and {counts['read']} read tokens "
            f"from {source}; reads {reads}"
        )

    def requires(self, role: Role, *, page: bool = False) -> Callable[..., Awaitable[Principal]]:
        """A route dependency: the request's principal, or 401/403 (a login form for pages)."""

        async def dependency(
            request: Request,
            # Declares the scheme in the OpenAPI (Swagger's "Authorize"); read below.
            _declared: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
        ) -> Principal:
            return self.principal(request, role, page=page)

        return dependency

    def principal(self, request: Request, role: Role, *, page: bool = False) -> Principal:
        header = request.headers.get("authorization")
        found: Principal | None = None
        problem = None
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                problem = "use 'Authorization: Bearer TOKEN'"
            else:
                found = self.tokens.authenticate(token.strip())
                problem = None if found else "the token is not valid"
        elif request.method in _SAFE_METHODS and self.cookie in request.cookies:
            # The session cookie reads only: a change always needs the header, which
            # no other site can make a browser send.
            found = self.tokens.session_principal(request.cookies[self.cookie][:200])
            problem = None if found else "the session has expired; log in again"
        elif role == "read" and self.settings.api.public_reads:
            return Principal("anonymous", "read")
        if found is None:
            if page:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                raise LoginRequired(target, problem)
            challenge = _REALM + (', error="invalid_token"' if problem else "")
            raise HTTPException(
                401,
                problem or "this needs a token: send 'Authorization: Bearer TOKEN'",
                headers={"WWW-Authenticate": challenge},
            )
        if not found.may(role):  # only a read token can fall short (of operator)
            raise HTTPException(
                403,
                f"this needs an operator token; {found.name} is a read token",
                headers={"WWW-Authenticate": f'{_REALM}, error="insufficient_scope"'},
            )
        return found


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from this API's own pages (no other site logs you in)."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    return urlsplit(origin).netloc == request.headers.get("host", "") != ""


_LOGIN_CSS = (
    "body{font-family:system-ui,sans-serif;margin:4rem auto;max-width:28rem;color:#222}"
    "input{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.5rem 0}"
    "button{font:inherit;padding:.4rem 1.2rem}.problem{color:#c62828}"
)


def login_page(next_url: str, problem: str | None = None) -> str:
    """The form that turns a token into a browser session."""
    said = f"<p class='problem'>{escape(problem)}</p>" if problem else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>landfall: log in</title><style>{_LOGIN_CSS}</style></head><body>"
        "<h1>landfall</h1><p>Enter a token of the job API (a read token is enough for "
        "the status page and reports). <code>landfall api-token</code> prints the one "
        "landfall generated when none is configured.</p>"
        f"{said}<form method='post' action='/login'>"
        f"<input type='hidden' name='next' value='{escape(_safe_next(next_url))}'>"
        "<label for='token'>token</label>"
        "<input id='token' name='token' type='password' autocomplete='off' required autofocus>"
        "<button type='submit'>log in</button></form></body></html>"
    )


def _docs_page(openapi_url: str, title: str) -> HTMLResponse:
    page = get_swagger_ui_html(openapi_url=openapi_url, title=title)
    html = bytes(page.body).decode()
    # Swagger UI starts from one inline script: allowed by its hash, so no other
    # inline script (an injected one) can run on this page.
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    )
    cdn = "https://cdn.jsdelivr.net"
    policy = (
        f"default-src 'none'; script-src {cdn} {hashes}; style-src {cdn} 'unsafe-inline'; "
        "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return HTMLResponse(html, headers={"content-security-policy": policy})


_FORM_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["token"],
                "properties": {
                    "token": {"type": "string", "maxLength": 4096},
                    "next": {"type": "string", "maxLength": 2048},
                },
            }
        }
    },
}


def install(app: FastAPI, settings: Settings, auth: Auth) -> None:
    """Put the guard, the error handlers, the login routes and ``/docs`` on the app."""
    api = settings.api
    app.add_middleware(
        RequestGuard, max_url_bytes=api.max_url_bytes, max_body_bytes=api.max_body_bytes
    )

    @app.exception_handler(RequestValidationError)
    async def unprocessable(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(exc.errors()), status_code=422)

    @app.exception_handler(LoginRequired)
    async def log_in_first(_request: Request, exc: LoginRequired) -> HTMLResponse:
        return HTMLResponse(
            login_page(exc.next_url, exc.problem),
            status_code=401,
            headers={"WWW-Authenticate": _REALM},
        )

    @app.get(
        "/login", response_class=HTMLResponse, tags=["session"], responses=error_responses(413, 414)
    )
    def login_form(
        next_url: str | None = Query(default=None, alias="next", max_length=2048),
    ) -> str:
        """The login form of the status page and reports."""
        return login_page(next_url or "/")

    @app.post(
        "/login",
        status_code=303,
        response_class=RedirectResponse,
        tags=["session"],
        openapi_extra={"requestBody": _FORM_BODY},
        responses={
            303: {"description": "Logged in: back to the page asked for, with a session cookie"},
            **error_responses(401, 403, 413, 414, 415, html_401=True),
            422: {"model": ErrorDetail, "description": "More than a few form fields"},
        },
    )
    async def log_in(request: Request) -> Response:
        """Exchange a token (a form field) for a session cookie that reads."""
        if not _same_origin(request):
            raise HTTPException(403, "a login from another site is refused")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
        try:
            # Latin-1 maps every byte: no decoding error; tokens are ASCII anyway.
            form = parse_qs((await request.body()).decode("latin-1"), max_num_fields=8)
        except ValueError:
            return JSONResponse({"detail": "more than a few form fields"}, status_code=422)
        next_url = _safe_next(form.get("next", ["/"])[0])
        token = form.get("token", [""])[0].strip()
        lifetime = api.session_hours * 3600
        value = auth.tokens.session_value(token, lifetime) if token else None
        if value is None:
            # For the operator watching for guessing; never what was typed.
            client = request.client.host if request.client else "-"
            log.warning("browser login from %s refused: not a valid token", client)
            return HTMLResponse(
                login_page(next_url, "That token is not valid."),
                status_code=401,
                headers={"WWW-Authenticate": _REALM},
            )
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
            secure=api.secure_cookies,
        )
        return response

    @app.post(
        "/logout",
        status_code=303,
        response_class=RedirectResponse,
        tags=["session"],
        responses=error_responses(403, 413, 414),
    )
    async def log_out(request: Request) -> Response:
        """End this browser's session."""
        if not _same_origin(request):
            raise HTTPException(403, "a logout from another site is refused")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.cookie, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return _docs_page(app.openapi_url or "/openapi.json", f"{app.title} - docs")

    @app.get("/healthz", tags=["health"], responses=error_responses(413, 414))
    def healthz() -> dict[str, str]:
        """Liveness for probes and load balancers: no token, no data."""
        return {"status": "ok"}
