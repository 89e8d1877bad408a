"""A service run with ``LANDFALL_LOG_FORMAT=json`` writes JSON lines naming its batch.

The faust reporter runs as its own process (``landfall serve reporter``) on the
session's broker: faust would configure logging its own way, so it is the service
where ours is most easily lost. One run's stage outputs are written to the lake and
its events published as the stages would (tests/reporting_support.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from landfall.contracts import EventType
from landfall.events import EventWatcher
from landfall.serve import ensure_all_topics
from tests.reporting_support import LandfallProcess, live_settings, publish_events, write_run

pytestmark = [pytest.mark.broker]

PARTITION = "2026-11-03"
# Lines the process writes without Python's logging: the JVM under Spark (log4j's
# lines, the notes of Spark, Arrow and the JDK at start, a Java stack trace) and
# librdkafka's own log lines.
_NOT_FROM_PYTHON = re.compile(
    r"^(\d\d/\d\d/\d\d \d\d:\d\d:\d\d [A-Z]+ |WARNING: Using incubator modules|"
    r"Warning: Java versions|Using Spark's default log4j profile|Setting default log level|"
    r"To adjust logging level|\s|Caused by: |%\d\|)"
)


def test_the_reporters_json_lines_name_the_run_and_its_trace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings, config_file = live_settings(tmp_path, kafka_bootstrap)
    ensure_all_topics(settings)
    run = write_run(settings.lake, PARTITION)
    log = tmp_path / "reporter.log"
    reporter = LandfallProcess("reporter", config_file, log, {"LANDFALL_LOG_FORMAT": "json"})
    watcher = EventWatcher(settings, [settings.kafka.topics.reported.name])
    try:
        publish_events(
            settings,
            [
                (EventType.DATA_LANDED, run.landed),
                (EventType.BATCH_VALIDATED, run.validated),
                (EventType.BATCH_FEATURIZED, run.featurized),
                (EventType.BATCH_PREDICTED, run.predicted),
            ],
        )
        watcher.wait_for(
            lambda _topic, kind, record: (
                kind is EventType.BATCH_REPORTED and record["run_id"] == run.run_id
            ),
            timeout=300,
            alive=reporter.check_alive,
        )
    finally:
        watcher.close()
        stopped = reporter.stop()
    assert stopped == 0, log.read_text()[-3000:]

    lines = [line for line in log.read_text().splitlines() if not _NOT_FROM_PYTHON.match(line)]
    logged = [json.loads(line) for line in lines if line]  # each one JSON, faust's included
    assert {line["service"] for line in logged} == {"reporter"}
    assert any(line["logger"].startswith("faust") for line in logged)
    done = f"run {run.run_id} reported SUCCEEDED"
    reported = [line for line in logged if line["message"] == done]
    assert len(reported) == 1
    for line in [line for line in logged if line.get("run_id")]:
        assert line["run_id"] == run.run_id
        assert (line["batch_id"], line["dataset"], line["partition"]) == (
            run.landed["batch_id"],
            run.landed["dataset"],
            PARTITION,
        )
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]), line
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"]), line
    assert reported[0].get("run_id") == run.run_id
