"""The faust reporter as a process against a real broker; then its API and a browser.

Stage outputs are written to the lake directly (tests/reporting_support.py) and their
events published as the stages would, so the reporter is the only Spark process here.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from landfall.api.views import STAGES
from landfall.config import ApiSettings, Settings
from landfall.contracts import EventType
from landfall.events import EventWatcher
from landfall.ports import free_port
from landfall.results import RunHistory
from landfall.serve import ensure_all_topics
from tests.api_support import new_token, start_api, write_config, write_token_file
from tests.browser_support import dump_dom
from tests.conftest import topic_messages
from tests.reporting_support import (
    LandfallProcess,
    failed_event,
    live_settings,
    publish_events,
    write_run,
)

pytestmark = [pytest.mark.broker]

PARTITION = "2026-11-03"
TIMEOUT = 300


@dataclass
class Live:
    settings: Settings
    config_file: Path
    home: Path
    reporter: LandfallProcess
    watcher: EventWatcher

    def reported(self, run_id: str, timeout: float = TIMEOUT) -> dict:
        _, _, record = self.watcher.wait_for(
            lambda _t, kind, rec: kind is EventType.BATCH_REPORTED and rec["run_id"] == run_id,
            timeout=timeout,
            alive=self.reporter.check_alive,
        )
        return record

    def reports_of(self, run_id: str) -> int:
        return sum(
            1
            for _t, kind, rec in self.watcher.seen
            if kind is EventType.BATCH_REPORTED and rec["run_id"] == run_id
        )


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("faust-reporter")
    settings, config_file = live_settings(
        home, kafka_bootstrap, LANDFALL_REPORTING__API_PORT=str(free_port())
    )
    ensure_all_topics(settings)
    reporter = LandfallProcess("reporter", config_file, home / "reporter.log")
    watcher = EventWatcher(settings, [settings.kafka.topics.reported.name])
    live = Live(settings, config_file, home, reporter, watcher)
    try:
        yield live
    finally:
        watcher.close()
        live.reporter.stop()  # the one running now: a test restarts it


def _run_events(run) -> list[tuple[EventType, dict]]:  # type: ignore[no-untyped-def]
    return [
        (EventType.DATA_LANDED, run.landed),
        (EventType.BATCH_VALIDATED, run.validated),
        (EventType.BATCH_FEATURIZED, run.featurized),
        (EventType.BATCH_PREDICTED, run.predicted),
    ]


@pytest.fixture(scope="module")
def first_run(live: Live):  # type: ignore[no-untyped-def]
    lake = live.settings.lake
    for seed, previous in enumerate(["2026-11-01", "2026-11-02"]):
        write_run(lake, previous, seed=seed)
    run = write_run(lake, PARTITION, shift=2.0, seed=7)
    # One stage at a time, as the pipeline would: events on different topics have no
    # order between them, and the run's progress is seen in the results database.
    db = RunHistory.open(live.settings.results_db_url)
    try:
        for (event_type, record), expected in zip(
            _run_events(run)[:3], ["SUBMITTED", "validation", "featurization"], strict=True
        ):
            publish_events(live.settings, [(event_type, record)])
            _wait_for_progress(live, db, run.run_id, expected)
    finally:
        db.close()
    publish_events(live.settings, _run_events(run)[3:])
    return run, live.reported(run.run_id)


def _wait_for_progress(live: Live, db: RunHistory, run_id: str, expected: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        live.reporter.check_alive()
        run = db.run(run_id)
        if run is not None and expected in (run["status"], run["current_stage"]):
            return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reached {expected}")


def test_the_faust_reporter_follows_a_run_and_reports_it(live: Live, first_run) -> None:  # type: ignore[no-untyped-def]
    run, reported = first_run
    assert "reporter ready (faust)" in live.reporter.log.read_text()
    assert (reported["status"], reported["rows_scored"]) == ("SUCCEEDED", 380)
    assert reported["drifted_features"] == ["f1"]
    report = json.loads((live.settings.lake / reported["report_path"]).read_text())
    # Stage timings come from the events the faust table collected.
    assert [(s["stage"], s["event_id"]) for s in report["timeline"][:3]] == [
        ("validation", run.validated["event_id"]),
        ("featurization", run.featurized["event_id"]),
        ("prediction", run.predicted["event_id"]),
    ]
    assert report["submitted_at"] is not None
    assert report["prediction_distribution"]["reference_partitions"] == ["2026-11-01", "2026-11-02"]
    html = (live.settings.lake / reported["report_html_path"]).read_text()
    assert len(re.findall(r"<svg ", html)) >= 5
    db = RunHistory.open(live.settings.results_db_url)
    try:
        stored = db.run(run.run_id)
        assert stored is not None
        assert stored["status"] == "SUCCEEDED"
        assert [s["stage"] for s in stored["stages"]] == [
            "validation",
            "featurization",
            "prediction",
            "reporting",
        ]
    finally:
        db.close()


def test_a_redelivery_is_reported_once_and_a_replay_is_one_more_run(
    live: Live,
    first_run,  # type: ignore[no-untyped-def]
) -> None:
    run, _ = first_run
    publish_events(live.settings, [(EventType.BATCH_PREDICTED, run.predicted)])
    replay = write_run(live.settings.lake, PARTITION, seed=8)
    publish_events(live.settings, _run_events(replay)[1:])
    # The replay's events follow the redelivered one on the same partition's key.
    live.reported(replay.run_id)
    assert live.reports_of(run.run_id) == 1
    db = RunHistory.open(live.settings.results_db_url)
    try:
        page = db.list_batches(dataset="demo", partition_from=PARTITION, partition_to=PARTITION)
        assert page.total == 1
        assert (page.items[0]["run_count"], page.items[0]["last_run_id"]) == (2, replay.run_id)
    finally:
        db.close()


def test_a_failed_run_is_reported(live: Live) -> None:
    failed = failed_event("2026-11-20")
    publish_events(live.settings, [(EventType.BATCH_FAILED, failed)])
    reported = live.reported(failed["run_id"])
    assert (reported["status"], reported["failed_stage"]) == ("FAILED", "validation")


def test_after_a_restart_the_table_still_knows_what_was_reported(
    live: Live,
    first_run,  # type: ignore[no-untyped-def]
) -> None:
    run, _ = first_run
    assert live.reporter.stop() == 0
    live.reporter = LandfallProcess("reporter", live.config_file, live.home / "reporter.log")
    # A marker on the same topic and partition: reported means the redelivery was seen.
    marker = write_run(live.settings.lake, "2026-11-22", seed=5)
    publish_events(
        live.settings,
        [(EventType.BATCH_PREDICTED, run.predicted), (EventType.BATCH_PREDICTED, marker.predicted)],
    )
    live.reported(marker.run_id)
    assert live.reports_of(run.run_id) == 1


# ---------------------------------------------------------------------------- API and browser


API_READER = new_token("faust-reader")


@pytest.fixture(scope="module")
def api(live: Live) -> Iterator[str]:
    # Reads open to all (api.public_reads), as a team may run the status page for its
    # dashboards: the browser below needs no login (tests/integration/test_api.py logs
    # in); the API's clients still send their token.
    token_file = write_token_file(live.home / "api-tokens", [f"read {API_READER} faust-tests"])
    settings = live.settings.model_copy(
        update={"api": ApiSettings(token_file=token_file, public_reads=True)}
    )
    config_file = write_config(settings, live.home / "api.yaml")
    server = start_api(settings, config_file, live.home / "api.log")
    try:
        yield server.base
    finally:
        server.stop()


def test_a_browser_sees_the_batch_on_the_status_page_and_its_report_plots(
    live: Live,
    first_run,  # type: ignore[no-untyped-def]
    api: str,
    tmp_path: Path,
) -> None:
    run, _ = first_run
    page = dump_dom(f"{api}/", tmp_path / "profile")
    row = re.search(rf'<tr class="batch" data-batch-id="{run.batch_id}"[^>]*>', page)
    assert row is not None, page[:2000]
    assert 'data-status="SUCCEEDED"' in row.group(0)
    link = f"/reports/demo/{PARTITION}/report.html"
    assert link in page

    report = dump_dom(f"{api}{link}", tmp_path / "profile")
    assert "SUCCEEDED" in report
    assert len(re.findall(r"<svg ", report)) >= 5
    for chart in ("chart-timeline", "chart-grouped", "chart-bar"):
        assert chart in report
    # The drawn bars made it into the DOM too, not just empty frames.
    assert len(re.findall(r'<rect class="bar', report)) >= 4


def test_a_browser_sees_the_partition_grid_and_follows_a_cell_to_the_report(
    live: Live,
    first_run,  # type: ignore[no-untyped-def]
    api: str,
    tmp_path: Path,
) -> None:
    page = dump_dom(f"{api}/", tmp_path / "profile")
    assert '<section class="grid" data-dataset="demo">' in page, page[:2000]
    cells = re.findall(
        rf'<td class="cell \w+" data-partition="{PARTITION}" data-stage="(\w+)" '
        r'data-state="(\w+)"><a href="([^"]+)"',
        page,
    )
    # The partition's latest run (a replay's, if one ran) reached every stage.
    assert {stage: state for stage, state, _ in cells} == dict.fromkeys(STAGES, "SUCCEEDED")
    links = {link for _, _, link in cells}
    assert len(links) == 1 and re.fullmatch(r"/batch/[^/]+/report\.html", next(iter(links)))
    report = dump_dom(f"{api}{links.pop()}", tmp_path / "profile")
    assert PARTITION in report and "SUCCEEDED" in report and "<svg " in report


def test_the_api_shows_the_runs_of_the_reported_batch(
    live: Live,
    first_run,  # type: ignore[no-untyped-def]
    api: str,
) -> None:
    run, _ = first_run
    auth = {"Authorization": f"Bearer {API_READER}"}
    with httpx2.Client(base_url=api, timeout=30, headers=auth) as client:
        job = client.get(f"/batch/{run.run_id}").json()
        assert job["status"] == "SUCCEEDED"
        assert [s["status"] for s in job["stages"]] == ["SUCCEEDED"] * 4
        assert job["figures"]["drifted_features"] == ["f1"]
        batch = client.get(f"/batch/{run.batch_id}").json()
        assert batch["job_kind"] == "batch"
        assert run.run_id in {r["run_id"] for r in batch["runs"]}
        assert client.get(batch["links"]["report_html"]).status_code == 200


# ------------------------------------------------------------------ forgetting old runs


def test_runs_untouched_for_the_retention_are_forgotten(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # 1.8 s of retention: the progress table forgets a run almost at once.
    settings, config_file = live_settings(
        tmp_path, kafka_bootstrap, LANDFALL_REPORTING__PROGRESS_RETENTION_HOURS="0.0005"
    )
    ensure_all_topics(settings)
    reporter = LandfallProcess("reporter", config_file, tmp_path / "reporter.log")
    watcher = EventWatcher(settings, [settings.kafka.topics.reported.name])
    live = Live(settings, config_file, tmp_path, reporter, watcher)
    try:
        old = failed_event("2026-11-10")
        publish_events(settings, [(EventType.BATCH_FAILED, old)])
        live.reported(old["run_id"])
        time.sleep(2.5)
        # The next event of the same partition sweeps the table; the old run is gone, so
        # a redelivery of its event is news again (a kept run would be skipped, as the
        # restart test shows).
        new = failed_event("2026-11-11")
        publish_events(settings, [(EventType.BATCH_FAILED, new)])
        live.reported(new["run_id"])
        publish_events(settings, [(EventType.BATCH_FAILED, old)])
        watcher.wait_for(
            lambda *_: live.reports_of(old["run_id"]) == 2, timeout=60, alive=reporter.check_alive
        )
        assert "forgot the progress of 1 runs" in reporter.log.read_text()
    finally:
        watcher.close()
        reporter.stop()


def test_malformed_messages_on_the_reporter_s_own_topics_are_dead_lettered_once(
    live: Live,
) -> None:
    """batch-predicted and batch-failed have no other reader: the reporter dead-letters
    what it cannot decode there (original bytes, reason, source) and goes on; on a
    topic a stage also reads, that stage does it, so the reporter only skips."""
    from confluent_kafka import Producer

    from landfall.dead_letters import DEAD_LETTER_REASON, DEAD_LETTER_SERVICE, DEAD_LETTER_SOURCE

    topics = live.settings.kafka.topics
    key = b"demo/2026-11-25"
    bad = {
        topics.predicted.name: b"\xc3\x01not an event at all",
        topics.failed.name: b"\x00\x00\x00\x00\x07truncated",
        topics.validated.name: b"{}",
    }
    producer = Producer({"bootstrap.servers": live.settings.kafka.bootstrap, "acks": "all"})
    for topic, value in bad.items():
        producer.produce(topic, key=key, value=value, headers=[("origin", b"fuzz")])
    assert producer.flush(30) == 0
    # A good event after them on the same key: reported means the bad ones were passed.
    failed = failed_event("2026-11-25")
    publish_events(live.settings, [(EventType.BATCH_FAILED, failed)])
    live.reported(failed["run_id"])
    live.reporter.check_alive()

    letters = [
        m
        for m in topic_messages(live.settings, topics.dead_letter.name)
        if dict(m.headers() or []).get(DEAD_LETTER_SERVICE) == b"reporter"
    ]
    by_topic = {
        dict(m.headers())[DEAD_LETTER_SOURCE].decode().rsplit("/", 1)[0]: m for m in letters
    }
    assert len(letters) == 2 and set(by_topic) == {topics.predicted.name, topics.failed.name}
    for topic, letter in by_topic.items():
        headers = dict(letter.headers())
        assert letter.value() == bad[topic] and letter.key() == key
        assert headers["origin"] == b"fuzz"
        assert headers[DEAD_LETTER_REASON].decode().startswith(f"message on topic {topic!r}")
