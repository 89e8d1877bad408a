"""`landfall reconcile` against a real broker, results database and lake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType, new_event
from landfall.demo import write_sample_partition
from landfall.ingress import batch_id_for
from landfall.lake import ANNOUNCED_NAME, Lake
from landfall.reconcile import plan_reconcile, reconcile
from landfall.results import RunKey, RunRecorder
from landfall.run_ids import new_run_id
from tests.conftest import isolated_settings, topic_messages

pytestmark = pytest.mark.broker

LONG_AGO = datetime.now(UTC) - timedelta(hours=3)


@pytest.fixture
def recon_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, tmp_path, "recon")


def _key(partition: str, run_id: str) -> RunKey:
    return RunKey(batch_id_for("demo", partition), run_id, "demo", partition)


def _committed_predictions(lake: Lake, partition: str, run_id: str) -> dict:  # type: ignore[type-arg]
    """What the predictor leaves when it dies after its commit, before its event is acked."""
    announced = new_event(
        EventType.BATCH_PREDICTED,
        dataset="demo",
        partition=partition,
        batch_id=batch_id_for("demo", partition),
        run_id=run_id,
        producer="predictor/test",
        causation_id=new_run_id(),
        output_path=f"demo/predictions/{partition}",
        manifest_path=f"demo/predictions/{partition}/_manifest.json",
        rows=10,
        model_name="m",
        model_version="1",
        model_uri="models:/m/1",
        duration_ms=5,
    )
    output = lake.stage_output("demo", "predictions", partition, run_id)
    output.staging.mkdir(parents=True)
    (output.staging / "part-0.parquet").write_text("rows")
    committed = lake.commit_partition(output, {"run_id": run_id})
    (committed / ANNOUNCED_NAME).write_bytes(
        EventCodec().encode(EventType.BATCH_PREDICTED, announced, topic="predicted")
    )
    return announced


def test_reconcile_re_drives_what_never_finished_and_leaves_the_rest(
    recon_settings: Settings,
) -> None:
    lake = Lake.from_settings(recon_settings)
    days = [f"2026-11-0{d}" for d in range(1, 7)]
    for day in days:
        if day != "2026-11-06":  # not landed: nothing to do
            write_sample_partition(lake, day, rows=10)
    db = RunRecorder.open(recon_settings.results_db_url)
    # 11-01: never started. 11-02: scored, then the predictor died before its event.
    stuck = new_run_id()
    db.record_stage(_key("2026-11-02", stuck), stage="validation", finished_at=LONG_AGO,
                    duration_ms=1000)  # fmt: skip
    announced = _committed_predictions(lake, "2026-11-02", stuck)
    # 11-03: running, nothing committed, silent for hours: the run starts over.
    silent = new_run_id()
    db.record_submission(_key("2026-11-03", silent), submitted_at=LONG_AGO)
    # 11-04: running and recent: in progress. 11-05: finished.
    db.record_stage(_key("2026-11-04", new_run_id()), stage="validation",
                    finished_at=datetime.now(UTC), duration_ms=10)  # fmt: skip
    done = new_run_id()
    db.record_submission(_key("2026-11-05", done), submitted_at=LONG_AGO)
    db.record_report({"run_id": done, "batch_id": batch_id_for("demo", "2026-11-05"),
                      "dataset": "demo", "partition": "2026-11-05", "status": "FAILED",
                      "reported_at": LONG_AGO.isoformat()})  # fmt: skip
    db.close()

    repairs = plan_reconcile(recon_settings, "demo", days[0], days[-1])
    assert [(r.partition, r.event_type) for r in repairs] == [
        ("2026-11-01", EventType.DATA_LANDED),
        ("2026-11-02", EventType.BATCH_PREDICTED),
        ("2026-11-03", EventType.DATA_LANDED),
    ]
    assert "never started" in repairs[0].found
    assert "scored, not reported" in repairs[1].found
    assert repairs[1].record["event_id"] == announced["event_id"]  # word for word
    assert repairs[2].record["run_id"] == silent  # the same run, started over

    reconcile(recon_settings, repairs)
    codec = EventCodec()
    topics = recon_settings.kafka.topics
    landed = [codec.decode(m.value(), topic=topics.landed.name)[1]
              for m in topic_messages(recon_settings, topics.landed.name)]  # fmt: skip
    predicted = [codec.decode(m.value(), topic=topics.predicted.name)[1]
                 for m in topic_messages(recon_settings, topics.predicted.name)]  # fmt: skip
    assert sorted(r["partition"] for r in landed) == ["2026-11-01", "2026-11-03"]
    assert [r["event_id"] for r in predicted] == [announced["event_id"]]
