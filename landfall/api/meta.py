"""What the API says about itself: liveness for probes, and its browsable description."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from landfall.api.errors import error_responses

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz", tags=["health"], responses=error_responses(413, 414))
def healthz() -> dict[str, str]:
    """Liveness for probes and load balancers: no token, no data."""
    return {"status": "ok"}


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    app = request.app
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - docs"
    )
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
