"""HTML forms posted to the API (the login, the console): read once, bounded, strictly.

Parsed here rather than by a multipart library: the forms are urlencoded, small and
few-fielded, and anything else is refused before it is parsed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Request

__all__ = ["form_body", "read_form"]


def form_body(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a form with these fields (JSON schemas)."""
    schema = {"type": "object", "required": required, "properties": fields}
    return {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": schema}},
    }


async def read_form(request: Request, max_fields: int) -> dict[str, str]:
    """The posted form's fields (the first value of each); 415 or 422 if it is not one."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    try:
        # Latin-1 maps every byte: no decoding error; the body is ASCII anyway, and
        # percent-escapes are decoded (as UTF-8) by parse_qs.
        fields = parse_qs((await request.body()).decode("latin-1"), max_num_fields=max_fields)
    except ValueError:
        raise HTTPException(422, "more than a few form fields") from None
    return {name: values[0] for name, values in fields.items()}
