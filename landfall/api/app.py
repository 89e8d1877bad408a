"""The job API app: its routers, its dependencies' state, its lifespan, and its server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import landfall
from landfall.api import console, dead_letters, meta, pages, reports, runs, session
from landfall.api.auth import Auth
from landfall.api.deps import ApiContext
from landfall.api.errors import install_error_handlers
from landfall.api.guard import RequestGuard
from landfall.api.publisher import Publisher
from landfall.api_tokens import ensure_generated_token
from landfall.config import Settings
from landfall.events import EventProducer
from landfall.lake import Lake
from landfall.logs import uvicorn_log_config
from landfall.results import RunHistory, RunRecorder, open_results_db

__all__ = ["create_app", "serve_api"]

log = logging.getLogger("landfall.api")


def _oversized(max_url_bytes: int) -> Callable[[MutableMapping[str, Any]], bool]:
    def oversized(scope: MutableMapping[str, Any]) -> bool:
        raw = scope.get("raw_path") or scope.get("path", "").encode()
        return len(raw) + len(scope.get("query_string", b"")) > max_url_bytes

    return oversized


def _lifespan(settings: Settings) -> Callable[[FastAPI], Any]:
    """One producer for the app's life: made at start-up, flushed and closed at shutdown.

    A publisher given to :func:`create_app` is the caller's: used, never closed here.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned: EventProducer | None = None
        if app.state.publisher is None:
            owned = app.state.publisher = EventProducer(settings)
        try:
            yield
        finally:
            if owned is not None:
                app.state.publisher = None
                # Blocks up to the flush timeout: off the event loop.
                await run_in_threadpool(owned.close)

    return lifespan


def create_app(settings: Settings, *, publisher: Publisher | None = None) -> FastAPI:
    """The API over one results database and lake, publishing to the configured broker.

    ``publisher``: what submissions publish through; by default a Kafka producer the
    app's lifespan owns (so a submission needs the app started: ``with TestClient(app)``).
    """
    results = open_results_db(settings.results_db_url)
    app = FastAPI(
        title="landfall job API",
        version=landfall.__version__,
        description="Submit batch predictions and follow every batch run: status per "
        "stage, data quality, predictions, history and reports. Send a token as "
        "'Authorization: Bearer TOKEN': an operator token to submit, any token to read.",
        lifespan=_lifespan(settings),
        # /docs is served by meta.py with a content security policy of its own; ReDoc
        # would need a wider one (workers from blob:, web fonts) for no gain.
        docs_url=None,
        redoc_url=None,
        # FastAPI traces every request with its whole path and query as attributes; a
        # request refused for its length (414) would put all of it into the trace, and
        # every span attribute passes through redaction: no span for those.
        telemetry={"exclude": _oversized(settings.api.max_url_bytes)},
    )
    app.state.context = ApiContext(
        settings=settings,
        history=RunHistory(results),
        recorder=RunRecorder(results),
        lake=Lake.from_settings(settings),
    )
    app.state.auth = Auth(settings)
    app.state.publisher = publisher
    app.add_middleware(
        RequestGuard,
        max_url_bytes=settings.api.max_url_bytes,
        max_body_bytes=settings.api.max_body_bytes,
    )
    install_error_handlers(app)
    session.install_login_handler(app)
    for router in (
        runs.router,
        reports.router,
        pages.router,
        console.router,
        dead_letters.router,
        session.router,
        meta.router,
    ):
        app.include_router(router)
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
        # Its lines go through landfall's logging (JSON with LANDFALL_LOG_FORMAT=json).
        log_config=uvicorn_log_config(),
        # h11 (pure Python) always, whatever else is installed: its limit on a request's
        # head is what bounds the memory of a huge URL; one within it gets our 414.
        http="h11",
        h11_max_incomplete_event_size=limits.max_url_bytes + 64 * 1024,
        limit_concurrency=limits.max_concurrent_requests,
        server_header=False,
        access_log=False,  # RequestGuard writes one with the target cut short
    )
