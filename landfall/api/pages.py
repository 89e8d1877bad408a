"""The status page: each dataset's partition grid, recent batches, their reports, as HTML.

No scripts (the API's content security policy allows none); the template escapes
every value (landfall/templates/status.html).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from landfall.api.auth import Auth, page_access
from landfall.api.deps import HistoryDep, SettingsDep
from landfall.api.errors import error_responses
from landfall.api.views import batch_item, partition_grid
from landfall.rendering import render

__all__ = ["router"]

router = APIRouter(tags=["pages"])
# As many batches as a glance takes in; /batches pages through the rest.
_RECENT_BATCHES = 100
# A month of daily partitions per dataset in the grid.
_GRID_PARTITIONS = 31


@router.get(
    "/",
    response_class=HTMLResponse,
    dependencies=[Depends(page_access)],
    responses=error_responses(401, 413, 414, html_401=True),
)
def status_page(request: Request, history: HistoryDep, settings: SettingsDep) -> HTMLResponse:
    """Each dataset's partitions by stage, and recent batches with their reports."""
    auth: Auth = request.app.state.auth
    rows = [batch_item(row) for row in history.list_batches(limit=_RECENT_BATCHES).items]
    grids = [
        partition_grid(name, history.latest_runs(name, partitions=_GRID_PARTITIONS))
        for name in sorted(settings.datasets)
    ]
    html = render(
        "status.html",
        grids=grids,
        rows=rows,
        metrics=history.metrics(),
        # A logged-in browser gets a log-out button.
        session=auth.cookie in request.cookies,
        # An operator's session also gets the console's forms, with their CSRF token.
        form_token=auth.console_form_token(request),
    )
    return HTMLResponse(html)
