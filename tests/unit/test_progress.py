"""How long operator commands show their steps: a bar, plain lines, or JSON Lines."""

from __future__ import annotations

import io
import json
import os

from landfall.progress import Progress, progress_mode


def test_the_mode_follows_the_terminal_unless_json_is_asked() -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe:
        assert progress_mode(False, pipe) == "lines"
        assert progress_mode(True, pipe) == "json"
    os.close(read)


def test_each_step_is_written_as_it_happens_then_the_summary() -> None:
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe, os.fdopen(read) as reader:
        shown = Progress("lines", pipe)
        shown.step("published", "published demo/2026-11-01", partition="2026-11-01")
        # Flushed at once: a reader of the pipe sees the first partition before the next.
        assert reader.readline() == "published demo/2026-11-01\n"
        shown.step("failed", "failed demo/2026-11-02: no broker", partition="2026-11-02")
        shown.summary("published 1, failed 1")
        assert reader.readline() == "failed demo/2026-11-02: no broker\n"
        assert reader.readline() == "summary: published 1, failed 1\n"
    assert dict(shown.counts) == {"published": 1, "failed": 1}


def test_json_lines_carry_the_fields_and_a_bar_prints_each_step_above_it() -> None:
    out = io.StringIO()
    shown = Progress("json", out)
    shown.note("not landed: 2026-11-03", event="skipped", partitions=["2026-11-03"])
    shown.step("published", "ignored in JSON", partition="2026-11-01", run_id="r1")
    shown.summary("ignored", published=1, skipped=1)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"event": "skipped", "partitions": ["2026-11-03"]},
        {"event": "published", "partition": "2026-11-01", "run_id": "r1"},
        {"event": "summary", "published": 1, "skipped": 1},
    ]
    bar_out = io.StringIO()
    bar = Progress("bar", bar_out)
    with bar.running(2, "backfill demo"):
        bar.step("published", "published demo/2026-11-01")
        bar.step("published", "published demo/2026-11-02")
    text = bar_out.getvalue()
    assert "published demo/2026-11-01" in text and "2/2" in text
