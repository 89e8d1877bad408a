"""The job API's status page: recent batches, their state and their reports, as HTML.

No scripts (the API's content security policy allows none); every value is escaped.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

__all__ = ["report_links", "status_page_html"]


def report_links(row: dict[str, Any], *, own_run: bool = False) -> dict[str, str]:
    """Where a batch row's reports are, if the reporter wrote them.

    ``own_run``: the run's own report; otherwise the partition's current one (its newest
    successful run's).
    """
    if not row.get("report_path"):
        return {}
    if own_run and row.get("run_id"):
        base = f"/batch/{row['run_id']}"
    else:
        base = f"/reports/{row['dataset']}/{row['partition']}"
    return {"report_html": f"{base}/report.html", "report_json": f"{base}/report.json"}


_LOGOUT = "<form method='post' action='/logout'><button type='submit'>log out</button></form>"
_PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .6rem;text-align:left;
border-bottom:1px solid #eee}th{background:#f5f5f5}.num{text-align:right}
.status{display:inline-block;padding:.05rem .5rem;border-radius:.7rem;color:#fff;
font-size:.85em;font-weight:600}.SUCCEEDED{background:#2e7d32}.FAILED{background:#c62828}
.RUNNING,.SUBMITTED{background:#f9a825}.muted{color:#666}.summary span{margin-right:1.5rem}
"""


def status_page_html(rows: list[dict[str, Any]], metrics: dict[str, Any], *, session: bool) -> str:
    """The page; ``session``: the browser is logged in, so it gets a log-out button."""

    def cell(value: Any) -> str:
        if value is None:
            return '<span class="muted">-</span>'
        if isinstance(value, datetime):
            return escape(value.strftime("%Y-%m-%d %H:%M:%S"))
        return escape(str(value))

    lines = []
    for row in rows:
        links = report_links(row)
        reports = (
            f'<a href="{links["report_html"]}">report</a> · '
            f'<a href="{links["report_json"]}">json</a>'
            if links
            else '<span class="muted">none yet</span>'
        )
        status = escape(row["last_status"])
        lines.append(
            f'<tr class="batch" data-batch-id="{escape(row["batch_id"])}" '
            f'data-status="{status}"><td>{cell(row["dataset"])}</td>'
            f"<td>{cell(row['partition'])}</td>"
            f'<td><span class="status {status}">{status}</span></td>'
            f"<td>{cell(row['current_stage'])}</td><td class='num'>{cell(row['run_count'])}</td>"
            f"<td class='num'>{cell(row['rows_scored'])}</td><td>{cell(row['model_version'])}</td>"
            f"<td>{cell(row['updated_at'])}</td>"
            f'<td><a href="/batch/{escape(row["batch_id"])}">details</a> · {reports}</td></tr>'
        )
    by_status = metrics["batches"]["by_status"]
    summary = "".join(
        f"<span>{escape(s.lower())}: <b>{n}</b></span>" for s, n in sorted(by_status.items())
    )
    body = "".join(lines) or '<tr><td colspan="9" class="muted">no batches yet</td></tr>'
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='15'><title>landfall: batches</title>"
        f"<style>{_PAGE_CSS}</style></head><body><h1>landfall batches</h1>"
        f"<p class='summary'><span>batches: <b>{metrics['batches']['total']}</b></span>"
        f"<span>rows scored: <b>{metrics['rows']['scored']:,}</b></span>{summary}</p>"
        "<table><thead><tr><th>dataset</th><th>partition</th><th>status</th><th>stage</th>"
        "<th>runs</th><th>rows scored</th><th>model</th><th>updated (UTC)</th><th></th></tr>"
        f"</thead><tbody>{body}</tbody></table>"
        "<p class='muted'><a href='/docs'>API</a> · <a href='/openapi.json'>OpenAPI</a> · "
        "<a href='/batch/metrics'>metrics</a></p>" + (_LOGOUT if session else "") + "</body></html>"
        # A form, not a link: a link could be followed by another site's page.
    )
