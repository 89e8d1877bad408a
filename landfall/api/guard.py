"""The job API's outermost layer: request limits, security headers, a bounded access log.

:class:`RequestGuard` (ASGI middleware, outermost) refuses a request target over
``api.max_url_bytes`` (414) and a body over ``api.max_body_bytes`` (413) before any
routing or parsing, each check linear in the input and done once; it puts the security
headers on every response, and turns an unexpected failure into a 500 that shows no
traceback, path or input.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BODY_TIMEOUT_S", "CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "RequestGuard"]

log = logging.getLogger("landfall.api")
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
