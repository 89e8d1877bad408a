"""``report.html``: one self-contained page per batch run (inline CSS and SVG, no scripts)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from html import escape
from typing import Any

from services.reporter.charts import (
    CURRENT,
    REFERENCE,
    bar_chart,
    grouped_bar_chart,
    timeline_chart,
)

__all__ = ["render_report_html"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.2rem .8rem;text-align:left;
border-bottom:1px solid #eee}th{font-weight:600}.num{text-align:right}
.status{display:inline-block;padding:.1rem .6rem;border-radius:.8rem;color:#fff;
font-weight:600}.SUCCEEDED{background:#2e7d32}.FAILED{background:#c62828}
.RUNNING,.SUBMITTED{background:#f9a825}.muted{color:#666}.flag{color:#c0392b;font-weight:600}
.failure{border-left:4px solid #c62828;background:#fdecea;padding:.5rem 1rem}
code{font-size:.9em}
"""


def _cell(value: Any) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f'<tr><th>{escape(k)}</th><td class="num">{_cell(v)}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def _section(title: str, anchor: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{content}</section>'


def _timeline(report: Mapping[str, Any]) -> str:
    spans = []
    for entry in report.get("timeline", []):
        if entry.get("started_at") and entry.get("finished_at"):
            spans.append(
                (
                    str(entry["stage"]),
                    datetime.fromisoformat(entry["started_at"]),
                    datetime.fromisoformat(entry["finished_at"]),
                )
            )
    rows = [
        (str(e["stage"]), f"{e.get('duration_ms', 0) / 1000:.2f} s")
        for e in report.get("timeline", [])
    ]
    failed = {e["stage"] for e in report.get("timeline", []) if e.get("status") == "FAILED"}
    return timeline_chart("Stage timeline", spans, failed=failed) + _table(rows)


def _predictions(report: Mapping[str, Any]) -> str:
    distribution = report.get("prediction_distribution") or {}
    summary = report.get("predictions") or {}
    parts = []
    categories = distribution.get("categories") or []
    if categories:
        series = [(f"this partition ({report['partition']})", distribution["current"], CURRENT)]
        reference = distribution.get("reference_partitions") or []
        if distribution.get("reference"):
            label = f"previous {len(reference)} partition{'s' if len(reference) != 1 else ''}"
            series.append((label, distribution["reference"], REFERENCE))
        kind = "value" if distribution.get("kind") == "categorical" else "bin (lower edge)"
        parts.append(grouped_bar_chart(f"Share of predictions per {kind}", categories, series))
        if not reference:
            parts.append('<p class="muted">No previous partitions to compare with.</p>')
    by_partition = distribution.get("by_partition") or []
    if by_partition:
        rows = "".join(
            f"<tr><td>{escape(p['partition'])}</td><td class='num'>{_cell(p['rows'])}</td>"
            f"<td class='num'>{_cell(p['mean'])}</td></tr>"
            for p in by_partition
        )
        parts.append(
            f"<table><tr><th>partition</th><th>rows</th><th>mean prediction</th></tr>{rows}</table>"
        )
    parts.append(
        _table(
            [
                ("rows", summary.get("rows")),
                ("mean", summary.get("mean")),
                ("min", summary.get("min")),
                ("max", summary.get("max")),
                ("null predictions", summary.get("null_predictions")),
            ]
        )
    )
    return "".join(parts)


def _quality(report: Mapping[str, Any]) -> str:
    failures = report.get("failures_by_rule") or {}
    severities = report.get("rule_severities") or {}
    landed = (report.get("rows") or {}).get("landed") or 0
    parts = []
    if failures:
        labels = list(failures)
        parts.append(bar_chart("Rows failing each rule", labels, [failures[k] for k in labels]))
        rows = "".join(
            f"<tr><td><code>{escape(name)}</code></td><td>{escape(str(severities.get(name, '')))}"
            f"</td><td class='num'>{_cell(count)}</td>"
            f"<td class='num'>{(count / landed if landed else 0):.2%}</td></tr>"
            for name, count in failures.items()
        )
        parts.append(
            "<table><tr><th>rule</th><th>severity</th><th>rows</th><th>of landed</th></tr>"
            f"{rows}</table>"
        )
    else:
        parts.append('<p class="muted">No rule figures were recorded.</p>')
    breaches = report.get("threshold_breaches") or []
    if breaches:
        items = "".join(f"<li>{escape(str(b))}</li>" for b in breaches)
        parts.append(f'<p class="flag">Thresholds breached:</p><ul>{items}</ul>')
    return "".join(parts)


def _nulls(report: Mapping[str, Any]) -> str:
    fractions = report.get("null_fractions") or {}
    if not fractions:
        return '<p class="muted">No null figures.</p>'
    labels = list(fractions)
    chart = bar_chart(
        "Null fraction per column", labels, [fractions[k] for k in labels], percent=True
    )
    source = report.get("null_fractions_of")
    return chart + (f'<p class="muted">Share of {escape(source)}.</p>' if source else "")


def _drift(report: Mapping[str, Any]) -> str:
    drift = report.get("drift") or {}
    features = drift.get("features") or {}
    threshold = drift.get("threshold")
    if not features:
        note = drift.get("note") or "no drift figures"
        return f'<p class="muted">{escape(note)}.</p>'
    labels = sorted(features)
    chart = bar_chart(
        "Population stability index per feature",
        labels,
        [features[k]["psi"] for k in labels],
        threshold=threshold,
    )
    flagged = drift.get("flagged") or []
    verdict = (
        f'<p class="flag">Drifted (PSI over its threshold): {escape(", ".join(flagged))}</p>'
        if flagged
        else "<p>No feature over its threshold.</p>"
    )
    # The dataset's drift settings may give features their own threshold, or none.
    own = [
        f"{name} {features[name]['threshold']}"
        for name in labels
        if features[name].get("threshold", threshold) != threshold
    ]
    notes = f"Threshold {threshold}" + (f"; own thresholds: {', '.join(own)}" if own else "")
    if drift.get("not_watched"):
        notes += f"; not watched: {', '.join(drift['not_watched'])}"
    reference = ", ".join(drift.get("reference_partitions") or [])
    return (
        chart
        + verdict
        + f'<p class="muted">{escape(notes)}. Compared with: {escape(reference)}.</p>'
    )


def render_report_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML page whose plots are inline SVG."""
    status = str(report.get("status", "UNKNOWN"))
    rows = report.get("rows") or {}
    model = report.get("model") or {}
    title = f"{report['dataset']} {report['partition']}"
    head = (
        f"<h1>{escape(title)} <span class='status {escape(status)}'>{escape(status)}</span></h1>"
        f"<p class='muted'>batch <code>{escape(report['batch_id'])}</code> · run "
        f"<code>{escape(report['run_id'])}</code> · reported "
        f"{escape(str(report.get('reported_at', '')))}"
        " · <a href='report.json'>report.json</a></p>"
    )
    figures = _table(
        [
            ("rows landed", rows.get("landed")),
            ("rows valid", rows.get("valid")),
            ("rows quarantined", rows.get("quarantined")),
            ("rows scored", rows.get("scored")),
            ("model", model.get("name")),
            ("model version", model.get("version")),
            ("requested model version", report.get("requested_model_version")),
        ]
    )
    sections = [head, _section("Figures", "figures", figures)]
    if status == "FAILED":
        details = report.get("failure_details") or {}
        detail_rows = "".join(
            f"<li><code>{escape(k)}</code>: {escape(str(v))}</li>" for k, v in details.items()
        )
        sections.append(
            _section(
                "Failure",
                "failure",
                f"<div class='failure'><p><b>{escape(str(report.get('failed_stage')))}</b>: "
                f"{escape(str(report.get('failure_reason')))}</p>"
                f"<p>A retry {'may' if report.get('retryable') else 'will not'} help.</p>"
                f"{'<ul>' + detail_rows + '</ul>' if detail_rows else ''}</div>",
            )
        )
    sections.append(_section("Stage timeline", "timeline", _timeline(report)))
    if report.get("predictions"):
        sections.append(_section("Predictions", "predictions", _predictions(report)))
    sections.append(_section("Data quality per rule", "quality", _quality(report)))
    sections.append(_section("Null fractions", "nulls", _nulls(report)))
    if status == "SUCCEEDED":
        sections.append(_section("Feature drift", "drift", _drift(report)))
    outputs = report.get("outputs") or {}
    if outputs:
        items = "".join(
            f"<li>{escape(k)}: <code>{escape(str(v))}</code></li>" for k, v in outputs.items()
        )
        sections.append(_section("Outputs (lake-relative)", "outputs", f"<ul>{items}</ul>"))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>landfall report: {escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(sections)}</body></html>"
    )
