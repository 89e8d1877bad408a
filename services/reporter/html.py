"""``report.html``: one self-contained page per batch run (inline CSS and SVG, no scripts).

The page is ``landfall/templates/report.html``, styled by the stylesheet the job API's
status page uses too; this module turns a report into what the template shows: the SVG
charts (markup, their labels escaped by :mod:`services.reporter.charts`) and the rows
of each table. The template escapes every other value.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from markupsafe import Markup

from landfall.rendering import render
from services.reporter.charts import (
    CURRENT,
    REFERENCE,
    bar_chart,
    grouped_bar_chart,
    timeline_chart,
)

__all__ = ["render_report_html"]


def _timeline(report: Mapping[str, Any]) -> dict[str, Any]:
    entries = report.get("timeline", [])
    spans = [
        (
            str(entry["stage"]),
            datetime.fromisoformat(entry["started_at"]),
            datetime.fromisoformat(entry["finished_at"]),
        )
        for entry in entries
        if entry.get("started_at") and entry.get("finished_at")
    ]
    failed = {e["stage"] for e in entries if e.get("status") == "FAILED"}
    return {
        "chart": Markup(timeline_chart("Stage timeline", spans, failed=failed)),
        "rows": [(str(e["stage"]), f"{e.get('duration_ms', 0) / 1000:.2f} s") for e in entries],
    }


def _predictions(report: Mapping[str, Any]) -> dict[str, Any] | None:
    summary = report.get("predictions") or {}
    if not summary:
        return None
    distribution = report.get("prediction_distribution") or {}
    categories = distribution.get("categories") or []
    reference = distribution.get("reference_partitions") or []
    chart = ""
    if categories:
        series = [(f"this partition ({report['partition']})", distribution["current"], CURRENT)]
        if distribution.get("reference"):
            label = f"previous {len(reference)} partition{'s' if len(reference) != 1 else ''}"
            series.append((label, distribution["reference"], REFERENCE))
        kind = "value" if distribution.get("kind") == "categorical" else "bin (lower edge)"
        chart = grouped_bar_chart(f"Share of predictions per {kind}", categories, series)
    return {
        "chart": Markup(chart),
        "no_reference": bool(categories) and not reference,
        "by_partition": distribution.get("by_partition") or [],
        "summary": [
            ("rows", summary.get("rows")),
            ("mean", summary.get("mean")),
            ("min", summary.get("min")),
            ("max", summary.get("max")),
            ("null predictions", summary.get("null_predictions")),
        ],
    }


def _quality(report: Mapping[str, Any]) -> dict[str, Any]:
    failures = report.get("failures_by_rule") or {}
    severities = report.get("rule_severities") or {}
    landed = (report.get("rows") or {}).get("landed") or 0
    labels = list(failures)
    return {
        "chart": Markup(
            bar_chart("Rows failing each rule", labels, [failures[k] for k in labels])
            if failures
            else ""
        ),
        "rules": [
            {
                "name": name,
                "severity": str(severities.get(name, "")),
                "rows": count,
                "share": count / landed if landed else 0.0,
            }
            for name, count in failures.items()
        ],
        "breaches": [str(b) for b in report.get("threshold_breaches") or []],
    }


def _nulls(report: Mapping[str, Any]) -> dict[str, Any]:
    fractions = report.get("null_fractions") or {}
    labels = list(fractions)
    chart = (
        bar_chart("Null fraction per column", labels, [fractions[k] for k in labels], percent=True)
        if fractions
        else ""
    )
    return {"chart": Markup(chart), "of": report.get("null_fractions_of")}


def _drift(report: Mapping[str, Any]) -> dict[str, Any]:
    drift = report.get("drift") or {}
    features = drift.get("features") or {}
    threshold = drift.get("threshold")
    if not features:
        return {"chart": "", "note": drift.get("note") or "no drift figures"}
    labels = sorted(features)
    # The dataset's drift settings may give features their own threshold, or none.
    own = [
        f"{name} {features[name]['threshold']}"
        for name in labels
        if features[name].get("threshold", threshold) != threshold
    ]
    notes = f"Threshold {threshold}" + (f"; own thresholds: {', '.join(own)}" if own else "")
    if drift.get("not_watched"):
        notes += f"; not watched: {', '.join(drift['not_watched'])}"
    return {
        "chart": Markup(
            bar_chart(
                "Population stability index per feature",
                labels,
                [features[k]["psi"] for k in labels],
                threshold=threshold,
            )
        ),
        "flagged": drift.get("flagged") or [],
        "notes": notes,
        "reference": drift.get("reference_partitions") or [],
    }


def render_report_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML page whose plots are inline SVG."""
    status = str(report.get("status", "UNKNOWN"))
    rows = report.get("rows") or {}
    model = report.get("model") or {}
    failure = None
    if status == "FAILED":
        failure = {
            "stage": str(report.get("failed_stage")),
            "reason": str(report.get("failure_reason")),
            "retryable": bool(report.get("retryable")),
            "details": {str(k): str(v) for k, v in (report.get("failure_details") or {}).items()},
        }
    return render(
        "report.html",
        title=f"{report['dataset']} {report['partition']}",
        status=status,
        batch_id=report["batch_id"],
        run_id=report["run_id"],
        reported_at=str(report.get("reported_at", "")),
        summary=[
            ("rows landed", rows.get("landed")),
            ("rows valid", rows.get("valid")),
            ("rows quarantined", rows.get("quarantined")),
            ("rows scored", rows.get("scored")),
            ("model", model.get("name")),
            ("model version", model.get("version")),
            ("requested model version", report.get("requested_model_version")),
        ],
        failure=failure,
        timeline=_timeline(report),
        predictions=_predictions(report),
        quality=_quality(report),
        nulls=_nulls(report),
        drift=_drift(report) if status == "SUCCEEDED" else None,
        outputs={str(k): str(v) for k, v in (report.get("outputs") or {}).items()},
    )
