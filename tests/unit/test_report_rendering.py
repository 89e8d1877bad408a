"""Report pieces without Spark: the drift figure, the SVG charts and the HTML page."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from services.reporter.charts import bar_chart, grouped_bar_chart, timeline_chart
from services.reporter.drift import population_stability_index
from services.reporter.html import render_report_html

SVG = "{http://www.w3.org/2000/svg}"


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    even = [0.25, 0.25, 0.25, 0.25]
    assert population_stability_index(even, even) == 0.0
    slight = population_stability_index(even, [0.27, 0.23, 0.25, 0.25])
    strong = population_stability_index(even, [0.7, 0.1, 0.1, 0.1])
    assert 0 < slight < 0.01 < 0.2 < strong
    # An empty bin is floored, not infinite.
    assert population_stability_index([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) < 10


def test_charts_are_well_formed_svg_with_escaped_labels() -> None:
    bars = ET.fromstring(bar_chart("rules", ["a<b & c", "d"], [3, 1], threshold=2))
    assert bars.tag == f"{SVG}svg"
    assert "a<b & c" in "".join(bars.itertext())
    flagged = [r for r in bars.iter(f"{SVG}rect") if "flagged" in r.get("class", "")]
    assert len(flagged) == 1
    grouped = ET.fromstring(
        grouped_bar_chart(
            "p", ["0", "1"], [("now", [0.4, 0.6], "#000"), ("then", [0.5, 0.5], "#999")]
        )
    )
    assert len([r for r in grouped.iter(f"{SVG}rect") if r.get("class") == "bar"]) == 4
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    spans = [
        ("validation", t0, t0 + timedelta(seconds=3)),
        ("reporting", t0, t0 + timedelta(seconds=5)),
    ]
    timeline = ET.fromstring(timeline_chart("t", spans, failed={"validation"}))
    fills = [r.get("fill") for r in timeline.iter(f"{SVG}rect")]
    assert fills[0] != fills[1]
    assert ET.fromstring(bar_chart("none", [], []))  # an empty chart still renders


@pytest.mark.parametrize("status", ["SUCCEEDED", "FAILED"])
def test_the_page_is_self_contained(status: str) -> None:
    report = {
        "status": status,
        "dataset": "demo",
        "partition": "2026-11-01",
        "batch_id": "b",
        "run_id": "r",
        "rows": {"landed": 10, "valid": 9, "quarantined": 1, "scored": 9},
        "failures_by_rule": {"not_null:x": 1},
        "null_fractions": {"x": 0.1},
        "failed_stage": "featurization",
        "failure_reason": "bad <expr>",
        "timeline": [],
    }
    html = render_report_html(report)
    assert "<script" not in html and "src=" not in html and "stylesheet" not in html
    assert ("bad &lt;expr&gt;" in html) == (status == "FAILED")
    assert html.count("<svg ") >= 3


def test_the_progress_table_forgets_only_old_runs_of_the_swept_partition() -> None:
    from datetime import UTC, datetime, timedelta

    from services.reporter.app import expired_runs

    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    cutoff = now - timedelta(days=7)

    def entry(days_ago: float, partition: int | None) -> dict:
        touched = (now - timedelta(days=days_ago)).isoformat()
        return {"table_touched_at": touched, "table_partition": partition, "stages": {}}

    entries = [
        ("old-here", entry(8, 0)),
        ("new-here", entry(1, 0)),
        ("old-elsewhere", entry(30, 1)),  # its tombstone belongs to another partition
        ("unstamped", {"table_partition": 0}),  # written before the table kept a time
        ("not-a-run", None),
    ]
    assert expired_runs(entries, 0, cutoff) == ["old-here"]
    assert expired_runs(entries, 1, cutoff) == ["old-elsewhere"]
