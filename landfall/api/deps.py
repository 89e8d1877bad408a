"""The job API's dependencies: what a route asks for, from the app it runs in.

:func:`landfall.api.app.create_app` puts one :class:`ApiContext` on ``app.state`` (and
the lifespan the publisher); routes name what they need with the annotated types below,
so a route's signature says what it touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from landfall.api.publisher import Publisher
from landfall.config import Settings
from landfall.lake import Lake
from landfall.results import RunHistory, RunRecorder

__all__ = [
    "ApiContext",
    "HistoryDep",
    "LakeDep",
    "PublisherDep",
    "RecorderDep",
    "SettingsDep",
]


@dataclass(frozen=True)
class ApiContext:
    """What every request of one app shares: its settings, results database and lake."""

    settings: Settings
    history: RunHistory
    recorder: RunRecorder
    lake: Lake


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _settings(request: Request) -> Settings:
    return _context(request).settings


def _history(request: Request) -> RunHistory:
    return _context(request).history


def _recorder(request: Request) -> RunRecorder:
    return _context(request).recorder


def _lake(request: Request) -> Lake:
    return _context(request).lake


def _publisher(request: Request) -> Publisher:
    publisher: Publisher | None = getattr(request.app.state, "publisher", None)
    if publisher is None:
        # An app used without its lifespan (a TestClient outside ``with``) reads only.
        raise HTTPException(503, "the API has no event publisher: it was not started")
    return publisher


SettingsDep = Annotated[Settings, Depends(_settings)]
HistoryDep = Annotated[RunHistory, Depends(_history)]
RecorderDep = Annotated[RunRecorder, Depends(_recorder)]
LakeDep = Annotated[Lake, Depends(_lake)]
PublisherDep = Annotated[Publisher, Depends(_publisher)]
