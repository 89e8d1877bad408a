"""Who may do what: bearer tokens with roles, and the browser's session cookie.

Each route depends on a role: ``read`` (status, history, metrics, reports; open without
a token only with ``api.public_reads``) or ``operator`` (anything that changes
something). A token comes as ``Authorization: Bearer``; a browser, which cannot send
that header when it follows a link, logs in once with a form (:mod:`.session`) and then
carries a signed session cookie (HttpOnly, SameSite=Strict). The cookie reads; it
changes something only through the console's forms (:mod:`.console`), and only when
three things hold: the session is an operator's, the form carries the session's CSRF
token (:meth:`TokenStore.form_token`, which only a page of this API shows), and the
post comes from this API's own origin. So no other site can make a browser change
anything, and JSON clients change things with a bearer token only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from landfall.api_tokens import Principal, Role, TokenStore
from landfall.config import Settings

__all__ = [
    "CSRF_FIELD",
    "REALM",
    "Auth",
    "LoginRequired",
    "operator_access",
    "page_access",
    "read_access",
    "same_origin",
]

REALM = 'Bearer realm="landfall"'
# The console forms' field holding the session's CSRF token.
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# Module level: FastAPI resolves the dependency's (string) annotations in this module.
_BEARER = HTTPBearer(auto_error=False, description="a read or operator token of the job API")


def same_origin(request: Request) -> bool:
    """Whether a form post comes from this API's own pages (not from another site)."""
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site")
    if origin is None:
        return fetch_site in (None, "same-origin", "none")
    if origin == "null":
        # Under this API's "Referrer-Policy: no-referrer" a browser posts its own forms
        # with "Origin: null", as it does a sandboxed page's; Sec-Fetch-Site, which no
        # page can set, tells them apart.
        return fetch_site == "same-origin"
    return urlsplit(origin).netloc == request.headers.get("host", "") != ""


class LoginRequired(Exception):
    """A browser page without a valid session: answered with the login form (401)."""

    def __init__(self, next_url: str, problem: str | None = None) -> None:
        super().__init__(next_url)
        self.next_url = next_url
        self.problem = problem


class Auth:
    """The API's tokens, and the principal each request acts as."""

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

    def principal(self, request: Request, role: Role, *, page: bool = False) -> Principal:
        """Who sends ``request``, if they may act as ``role``; else 401/403 (or a login)."""
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
            challenge = REALM + (', error="invalid_token"' if problem else "")
            raise HTTPException(
                401,
                problem or "this needs a token: send 'Authorization: Bearer TOKEN'",
                headers={"WWW-Authenticate": challenge},
            )
        if not found.may(role):  # only a read token can fall short (of operator)
            raise HTTPException(
                403,
                f"this needs an operator token; {found.name} is a read token",
                headers={"WWW-Authenticate": f'{REALM}, error="insufficient_scope"'},
            )
        return found

    def _session(self, request: Request) -> str | None:
        value = request.cookies.get(self.cookie)
        return None if value is None else value[:200]

    def console_form_token(self, request: Request) -> str | None:
        """The CSRF token for the console's forms: only for an operator's session."""
        session = self._session(request)
        if session is None:
            return None
        found = self.tokens.session_principal(session)
        if found is None or not found.may("operator"):
            return None  # a read-only session sees no buttons
        return self.tokens.form_token(session)

    def console_principal(self, request: Request, form: Mapping[str, str]) -> Principal:
        """The operator who posted a console form; else 401 (no session) or 403."""
        if not same_origin(request):
            raise HTTPException(403, "a form posted from another site is refused")
        session = self._session(request)
        found = None if session is None else self.tokens.session_principal(session)
        if session is None or found is None:
            raise LoginRequired("/", "log in to use the console")
        if not found.may("operator"):
            raise HTTPException(403, f"this needs an operator; {found.name} may only read")
        if not self.tokens.form_token_matches(session, form.get(CSRF_FIELD, "")[:200]):
            raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page")
        return found


def _requires(role: Role, *, page: bool = False) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        # Declares the scheme in the OpenAPI (Swagger's "Authorize"); read by Auth.
        _declared: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> Principal:
        auth: Auth = request.app.state.auth
        return auth.principal(request, role, page=page)

    return dependency


# The route dependencies: the request's principal in that role.
read_access = _requires("read")
operator_access = _requires("operator")
# A browser page: no session answers with the login form rather than a bare 401.
page_access = _requires("read", page=True)
