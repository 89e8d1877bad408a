"""The operator's console of the job API (``landfall serve api``) on a real broker.

Backfill and re-run from the status page, the dead-letter page; who may post the
console's forms (an operator's session with its CSRF token, from the API's own origin).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
from confluent_kafka import Producer

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.dead_letters import DEAD_LETTER_REASON, DEAD_LETTER_SERVICE, DEAD_LETTER_SOURCE
from landfall.events import EventWatcher, data_landed_event
from landfall.ingress import batch_id_for
from landfall.kafka_clients import event_codec, kafka_client_config
from landfall.lake import Lake
from landfall.results import RunKey, RunRecorder
from tests.api_support import ApiServer, api_settings, new_token, start_api
from tests.browser_support import DrivenChromium
from tests.conftest import topic_messages
from tests.reporting_support import finished_report

pytestmark = [pytest.mark.broker]

OPERATOR = new_token("operator")
READER = new_token("reader")
LANDED = ("2026-10-01", "2026-10-02", "2026-10-04")  # raw files in the lake
FAILED = "2026-09-01"  # its latest run failed
HOSTILE = "<script>alert(1)</script>"
SECRET_URL = "postgresql://reporter:hunter2-secret@db.internal/results"


@dataclass
class Console:
    settings: Settings
    server: ApiServer

    @contextmanager
    def session(self, token: str) -> Iterator[httpx2.Client]:
        """A browser logged in with ``token``: it carries the session cookie."""
        with self.server.client(follow_redirects=False) as browser:
            assert browser.post("/login", data={"token": token}).status_code == 303
            yield browser

    def landed_count(self) -> int:
        return len(topic_messages(self.settings, self.settings.kafka.topics.landed.name))


def _seed(settings: Settings) -> None:
    """Landed raw partitions, and a partition whose only run failed."""
    lake = Lake.from_settings(settings)
    for partition in LANDED:
        raw = lake.partition_dir("demo", "raw", partition)
        raw.mkdir(parents=True)
        (raw / "part-0.csv").write_text("id,x\n1,2\n")
    db = RunRecorder.open(settings.results_db_url)
    try:
        key = RunKey(batch_id_for("demo", FAILED), "failed-run-1", "demo", FAILED)
        started = datetime(2026, 11, 10, 8, tzinfo=UTC)
        db.record_submission(key, submitted_at=started)
        db.record_report(finished_report(key, "FAILED", started=started))
    finally:
        db.close()


@pytest.fixture(scope="module")
def console(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    home = tmp_path_factory.mktemp("console")
    settings, config_file = api_settings(
        home, kafka_bootstrap, [f"operator {OPERATOR} ops-alice", f"read {READER} dashboards"]
    )
    _seed(settings)
    server = start_api(settings, config_file, home / "api.log")
    try:
        yield Console(settings, server)
    finally:
        server.stop()


def _form_token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, page[:2000]
    return found.group(1)


def _run_ids(page: str) -> dict[str, str]:
    """The result page's published partitions, each with its run's id."""
    links = re.findall(r'<a href="/batch/([^"]+)">([0-9T-]+): run ', page)
    return {partition: run_id for run_id, partition in links}


def test_an_operator_backfills_from_the_page(console: Console) -> None:
    with console.session(OPERATOR) as browser:
        token = _form_token(browser.get("/").text)
        result = browser.post(
            "/console/backfill",
            data={"csrf_token": token, "dataset": "demo", "first": "2026-10-01",
                  "last": "2026-10-03"},
        )  # fmt: skip
    # Reads the topic from its beginning: what the form published is there.
    watcher = EventWatcher(console.settings, [console.settings.kafka.topics.landed.name])
    try:
        assert result.status_code == 200, result.text
        runs = _run_ids(result.text)
        assert set(runs) == {"2026-10-01", "2026-10-02"}
        assert re.search(r'data-heading="skipped: not landed">\s*<li>2026-10-03</li>', result.text)
        for partition, run_id in runs.items():
            _, kind, event = watcher.wait_for(
                lambda _t, _k, r, run_id=run_id: r["run_id"] == run_id, timeout=60
            )
            assert kind is EventType.DATA_LANDED
            assert (event["partition"], event["batch_id"]) == (
                partition,
                batch_id_for("demo", partition),
            )
    finally:
        watcher.close()
    assert "ops-alice backfilled demo 2026-10-01..2026-10-03: 2 published" in console.server.log


def test_a_failed_partition_is_re_run_with_a_pinned_model(console: Console) -> None:
    with console.session(OPERATOR) as browser:
        page = browser.get("/").text
        assert f'class="console rerun" data-partition="{FAILED}"' in page
        assert page.count('class="console rerun"') == 1  # only the failed partition
        form = {"csrf_token": _form_token(page), "dataset": "demo", "partition": FAILED}
        result = browser.post("/console/rerun", data={**form, "model_version": "7"})
        assert result.status_code == 200, result.text
        (run_id,) = _run_ids(result.text).values()
        assert run_id != "failed-run-1" and "with model version 7" in result.text
        # The run is recorded at once: its page answers, with the pinned version.
        job = browser.get(f"/batch/{run_id}").json()
    assert job["batch_id"] == batch_id_for("demo", FAILED)
    assert job["model"]["requested_version"] == "7"
    watcher = EventWatcher(console.settings, [console.settings.kafka.topics.landed.name])
    try:
        _, _, event = watcher.wait_for(lambda _t, _k, r: r["run_id"] == run_id, timeout=60)
    finally:
        watcher.close()
    assert event["model_version"] == "7" and event["batch_id"] == batch_id_for("demo", FAILED)


def test_only_an_operator_session_with_its_token_from_this_origin_may_post(
    console: Console,
) -> None:
    before = console.landed_count()
    backfill = {"dataset": "demo", "first": "2026-10-01", "last": "2026-10-01"}
    with console.session(READER) as reader:
        page = reader.get("/").text
        assert "csrf_token" not in page and "/console/" not in page  # no buttons
        assert reader.get("/dead-letters").status_code == 200
        refused = reader.post("/console/backfill", data={**backfill, "csrf_token": "x"})
        assert refused.status_code == 403
    with console.session(OPERATOR) as operator:
        token = _form_token(operator.get("/").text)
        assert operator.post("/console/backfill", data=backfill).status_code == 403
        stale = operator.post("/console/backfill", data={**backfill, "csrf_token": token[:-1]})
        assert stale.status_code == 403
        cross = operator.post(
            "/console/backfill",
            data={**backfill, "csrf_token": token},
            headers={"Origin": "http://evil.example"},
        )
        assert cross.status_code == 403
        # A sandboxed page posts as "null" from another site; the API's own pages post
        # as "null" from the same origin (its Referrer-Policy), which the browser says.
        sandboxed = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
        forged = {**backfill, "csrf_token": token}
        assert operator.post("/console/backfill", data=forged, headers=sandboxed).status_code == 403
    # A bearer token is for the JSON API: the console takes a session only.
    with console.server.client(OPERATOR) as bearer:
        with_bearer = bearer.post("/console/backfill", data={**backfill, "csrf_token": token})
        assert with_bearer.status_code == 401
    assert console.landed_count() == before


@pytest.mark.parametrize(
    ("path", "fields", "field", "says"),
    [
        ("/console/backfill", {"dataset": HOSTILE}, "dataset", "unknown dataset"),
        ("/console/backfill", {"first": "2026-13-01"}, "first", "YYYY-MM-DD"),
        ("/console/backfill", {"last": "2027-12-31"}, "last", "at most 100"),
        ("/console/backfill", {"last": "2026-09-01"}, "last", "before it starts"),
        ("/console/rerun", {"partition": "2026-10-01"}, "partition", "not a failure"),
        ("/console/rerun", {"partition": FAILED, "model_version": "v2"}, "model_version", "v2"),
    ],
)
def test_bad_console_input_is_a_400_page_naming_the_field(
    console: Console, path: str, fields: dict[str, str], field: str, says: str
) -> None:
    with console.session(OPERATOR) as browser:
        token = _form_token(browser.get("/").text)
        base = {"dataset": "demo", "first": "2026-10-01", "last": "2026-10-02"}
        response = browser.post(path, data={**base, "csrf_token": token, **fields})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert f'data-field="{field}"' in response.text and says in response.text
    assert HOSTILE not in response.text  # escaped where it is echoed


def _dead_letter(settings: Settings, value: bytes, reason: str, source_offset: int) -> None:
    producer = Producer({**kafka_client_config(settings), "acks": "all"})
    landed = settings.kafka.topics.landed.name
    producer.produce(
        settings.kafka.topics.dead_letter.name,
        key=b"demo/2026-10-01",
        value=value,
        headers=[
            (DEAD_LETTER_REASON, reason.encode()),
            (DEAD_LETTER_SOURCE, f"{landed}/0@{source_offset}".encode()),
            (DEAD_LETTER_SERVICE, b"validator"),
        ],
    )
    assert producer.flush(30) == 0


def test_the_dead_letter_page_shows_reasons_sources_and_escaped_previews(
    console: Console,
) -> None:
    settings = console.settings
    landed = settings.kafka.topics.landed.name
    event = data_landed_event("demo", "2026-10-04")
    encoded = event_codec(settings).encode(EventType.DATA_LANDED, event, topic=landed)
    _dead_letter(settings, encoded, "schema too new", 41)
    _dead_letter(settings, f"{HOSTILE} via {SECRET_URL}".encode(), f"bad {HOSTILE}", 42)
    with console.session(READER) as reader:
        page = reader.get("/dead-letters")
        assert page.status_code == 200
        assert "/dead-letters" in reader.get("/").text  # linked from the status page
    text = page.text
    assert text.count('<tr class="dead-letter"') == 2
    assert f"{landed}/0@41" in text and f"{landed}/0@42" in text
    assert "schema too new" in text and "validator" in text
    # Decoded where the codec can: the event's fields.
    assert "DataLanded" in text and event["run_id"] in text
    # Anything else escaped, and no secret shown.
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "hunter2-secret" not in text
    assert "/console/redrive" not in text  # a reader has no buttons

    with console.session(OPERATOR) as operator:
        page = operator.get("/dead-letters").text
        ref = re.search(r'data-ref="([0-9]+@[0-9]+)">\s*<td>[^<]*</td>\s*<td>[^<]*</td>\s*'
                        rf"<td>{re.escape(landed)}/0@41", page)  # fmt: skip
        assert ref is not None, page[:3000]
        redriven = operator.post(
            "/console/redrive", data={"csrf_token": _form_token(page), "ref": ref.group(1)}
        )
    assert redriven.status_code == 200, redriven.text
    assert f"from {landed}/0@41 to {landed}/0@" in redriven.text
    assert "redrove dead letter" in console.server.log


def test_a_browser_logs_in_and_backfills_from_the_page(console: Console, tmp_path: Path) -> None:
    with DrivenChromium(tmp_path / "profile") as browser:
        browser.open(f"{console.server.base}/")
        browser.wait_for("!!document.querySelector('#token')")
        browser.evaluate(
            f"document.querySelector('#token').value = {OPERATOR!r};"
            "document.querySelector('form[action=\"/login\"] button').click()"
        )
        browser.wait_for("!!document.querySelector('form.backfill')")
        browser.evaluate(
            "const form = document.querySelector('form.backfill');"
            "form.querySelector('[name=first]').value = '2026-10-04';"
            "form.querySelector('[name=last]').value = '2026-10-04';"
            "form.querySelector('button').click()"
        )
        title = browser.wait_for("document.title.includes('backfill of') && document.title")
        page = browser.html()
    assert title == "landfall: backfill of demo 2026-10-04..2026-10-04"
    assert set(_run_ids(page)) == {"2026-10-04"}
