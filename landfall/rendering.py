"""The HTML landfall writes, from the Jinja2 templates in ``landfall/templates/``.

One environment for the job API's pages (status page, login form) and the reporter's
``report.html``, so they share one stylesheet (``landfall.css``, included inline: a
report is a single file that must open anywhere, without the API). Autoescaping is on
for every ``.html`` template: a value reaches a page escaped unless the code marks it
as already-safe markup (the SVG charts, which escape their own labels).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

__all__ = ["render"]


def _when(value: datetime | str | None) -> str:
    """A timestamp as the pages show it: to the second, no zone (they are all UTC)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def _number(value: Any) -> str:
    """Figures as the report shows them: thousands separated, floats to 4 digits."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("landfall", "templates"),
        autoescape=select_autoescape(["html"]),
        # A misspelt variable is an error in the tests, not an empty cell in production.
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["number"] = _number
    return environment


def render(template: str, **context: Any) -> str:
    """``template`` (a name under landfall/templates/) rendered with ``context``."""
    return _environment().get_template(template).render(**context)
