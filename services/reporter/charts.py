"""Small inline SVG charts for reports: no JavaScript, no external files, no fonts to fetch.

Each function returns one ``<svg>`` element as a string, sized in CSS pixels and
readable without styles; text is escaped, numbers are formatted for people.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import datetime
from html import escape

__all__ = ["bar_chart", "grouped_bar_chart", "timeline_chart"]

CURRENT = "#2f6fb0"
REFERENCE = "#b7c4d3"
WARN = "#c0392b"
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _svg(width: int, height: int, title: str, body: list[str], kind: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{kind}" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {_FONT}>'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    threshold: float | None = None,
    percent: bool = False,
    width: int = 640,
) -> str:
    """Horizontal bars, one per label; bars over ``threshold`` (drawn as a line) in red."""
    row, label_w, pad = 22, 190, 12
    height = pad * 2 + row * max(len(labels), 1) + 16
    top = max([*values, threshold or 0.0, 1e-12])
    plot_w = width - label_w - 90
    body = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = pad + i * row
        bar = 0 if top == 0 else plot_w * max(value, 0.0) / top
        over = threshold is not None and value > threshold
        shown = f"{value:.1%}" if percent else _number(value)
        body.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(label[:32])}</text>'
            f'<rect class="bar{" flagged" if over else ""}" x="{label_w}" y="{y + 3}" '
            f'width="{bar:.1f}" height="{row - 6}" fill="{WARN if over else CURRENT}">'
            f"<title>{escape(label)}: {shown}</title></rect>"
            f'<text x="{label_w + bar + 4:.1f}" y="{y + 14}">{shown}</text>'
        )
    if threshold is not None:
        x = label_w + plot_w * threshold / top
        y_end = pad + row * len(labels)
        body.append(
            f'<line x1="{x:.1f}" y1="{pad - 4}" x2="{x:.1f}" y2="{y_end + 2}" stroke="{WARN}" '
            f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{y_end + 14}" fill="{WARN}" '
            f'text-anchor="middle">threshold {_number(threshold)}</text>'
        )
    if not labels:
        body.append(f'<text x="{pad}" y="{pad + 14}">nothing to show</text>')
    return _svg(width, height, title, body, "bar")


def grouped_bar_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    width: int = 640,
    height: int = 240,
    percent: bool = True,
) -> str:
    """Vertical bars per category, one per series (name, values, colour), with a legend."""
    left, right, top_pad, bottom = 48, 12, 26, 46
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = max([v for _, values, _ in series for v in values] + [1e-12])
    body = [
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - right}" '
        f'y2="{top_pad + plot_h}" stroke="#666"/>'
    ]
    for tick in (0.0, 0.5, 1.0):
        y = top_pad + plot_h * (1 - tick)
        shown = f"{top * tick:.0%}" if percent else _number(top * tick)
        body.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{shown}</text>'
        )
    slot = plot_w / max(len(categories), 1)
    bar_w = max(slot * 0.8 / max(len(series), 1), 1.0)
    label_every = max(1, math.ceil(len(categories) / 12))
    for c, category in enumerate(categories):
        x0 = left + c * slot + slot * 0.1
        for s, (name, values, colour) in enumerate(series):
            value = values[c] if c < len(values) else 0.0
            h = plot_h * max(value, 0.0) / top
            shown = f"{value:.1%}" if percent else _number(value)
            body.append(
                f'<rect class="bar" x="{x0 + s * bar_w:.1f}" y="{top_pad + plot_h - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(name)} {escape(category)}: {shown}</title></rect>"
            )
        if c % label_every == 0:
            body.append(
                f'<text x="{x0 + slot * 0.4:.1f}" y="{top_pad + plot_h + 14}" '
                f'text-anchor="middle">{escape(category[:12])}</text>'
            )
    for s, (name, _, colour) in enumerate(series):
        x = left + s * 190
        body.append(
            f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{height - 7}">{escape(name[:28])}</text>'
        )
    return _svg(width, height, title, body, "grouped")


def timeline_chart(
    title: str,
    spans: Sequence[tuple[str, datetime, datetime]],
    *,
    failed: Collection[str] = (),
    width: int = 640,
) -> str:
    """One horizontal span per stage (name, start, end) on a time axis; ``failed`` in red."""
    row, label_w, pad = 24, 110, 12
    height = pad * 2 + row * max(len(spans), 1) + 18
    if not spans:
        return _svg(
            width, height, title, [f'<text x="{pad}" y="{pad + 14}">no timings</text>'], "timeline"
        )
    origin = min(start for _, start, _ in spans)
    total = max((end - origin).total_seconds() for _, _, end in spans) or 1e-3
    plot_w = width - label_w - 70
    body = []
    for i, (name, start, end) in enumerate(spans):
        y = pad + i * row
        x = label_w + plot_w * (start - origin).total_seconds() / total
        w = max(plot_w * (end - start).total_seconds() / total, 2.0)
        seconds = (end - start).total_seconds()
        body.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(name)}</text>'
            f'<rect class="span" x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{WARN if name in failed else CURRENT}">'
            f"<title>{escape(name)}: {seconds:.2f} s</title></rect>"
            f'<text x="{x + w + 4:.1f}" y="{y + 15}">{seconds:.1f} s</text>'
        )
    y_axis = pad + row * len(spans) + 4
    body.append(
        f'<line x1="{label_w}" y1="{y_axis}" x2="{label_w + plot_w}" y2="{y_axis}" stroke="#666"/>'
        f'<text x="{label_w}" y="{y_axis + 13}">0 s</text>'
        f'<text x="{label_w + plot_w}" y="{y_axis + 13}" text-anchor="end">{total:.1f} s</text>'
    )
    return _svg(width, height, title, body, "timeline")
