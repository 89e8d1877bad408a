"""A run's stage outputs written to a lake as the stages would, without Spark or a broker.

The reporter's tests need validated rows, features and predictions with manifests, and
the events announcing them; writing them with pyarrow keeps those tests fast and lets
them choose the data (e.g. a shifted feature to see drift flagged).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from landfall.codec import EventCodec
from landfall.config import REVEAL_SECRETS, Settings
from landfall.contracts import EventType, new_event, partition_key
from landfall.ingress import batch_id_for
from landfall.ports import free_port
from landfall.redact import write_private
from landfall.results import RunKey
from landfall.run_ids import new_run_id

DATASET = "demo"


@dataclass
class RunEvents:
    """The events of one run, in pipeline order."""

    landed: dict[str, Any]
    validated: dict[str, Any]
    featurized: dict[str, Any]
    predicted: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.validated["run_id"])

    @property
    def batch_id(self) -> str:
        return str(self.validated["batch_id"])


def _write(lake: Path, zone: str, partition: str, table: pa.Table, manifest: dict[str, Any]) -> str:
    directory = lake / DATASET / zone / partition
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.parquet"):
        old.unlink()
    pq.write_table(table, directory / "part-0.parquet")
    (directory / "_manifest.json").write_text(json.dumps(manifest))
    return f"{DATASET}/{zone}/{partition}"


def write_run(
    lake: Path,
    partition: str,
    *,
    run_id: str | None = None,
    rows: int = 400,
    shift: float = 0.0,
    seed: int = 0,
    model_version: str = "3",
) -> RunEvents:
    """Write one run's validated, quarantine, features and predictions; return its events."""
    # Long: every stage's output, manifest and event of one run, as the stages write them.
    rng = np.random.default_rng(seed)
    run_id = run_id or new_run_id()
    batch_id = batch_id_for(DATASET, partition)
    bad = rows // 20
    ids = [f"{partition}-{i}" for i in range(rows - bad)]
    f1 = rng.normal(shift, 1.0, len(ids))
    f2 = rng.uniform(0, 10, len(ids))
    colours = rng.choice(["red", "green", None], len(ids))  # type: ignore[arg-type]
    is_red = np.array([1.0 if c == "red" else 0.0 for c in colours])
    prediction = (f1 + 0.1 * f2 + is_red > 1.0).astype(float)
    now = datetime.now(UTC)
    base = {"batch_id": batch_id, "run_id": run_id, "dataset": DATASET, "partition": partition}

    def manifest(stage: str, path: str, extra: dict[str, Any], at: datetime) -> dict[str, Any]:
        return {
            **base,
            "stage": stage,
            "event_id": str(uuid.uuid4()),
            "path": path,
            "inputs": [],
            "rows": extra.pop("rows"),
            "timings_ms": {"total": 1500},
            "committed_at": at.isoformat(),
            **extra,
        }

    landed_rows = {"landed": rows, "valid": rows - bad, "quarantined": bad}
    failures = {"type:feature1": bad // 2, "not_null:feature2": bad - bad // 2}
    nulls = {
        "id": 0.0,
        "feature1": 0.0,
        "feature2": 0.0,
        "feature3": float(np.mean([c is None for c in colours])),
    }
    valid_at, features_at, predicted_at = (now - timedelta(seconds=s) for s in (6, 4, 2))
    validated_path = _write(
        lake,
        "validated",
        partition,
        pa.table({"id": ids, "feature1": f1, "feature2": f2, "feature3": list(colours)}),
        manifest(
            "validation",
            f"{DATASET}/validated/{partition}",
            {"rows": landed_rows, "failures_by_rule": failures, "null_fraction": nulls},
            valid_at,
        ),
    )
    _write(
        lake,
        "quarantine",
        partition,
        pa.table({"line": list(range(bad))}),
        manifest(
            "validation",
            f"{DATASET}/quarantine/{partition}",
            {"rows": landed_rows, "failures_by_rule": failures},
            valid_at,
        ),
    )
    features_path = _write(
        lake,
        "features",
        partition,
        pa.table({"id": ids, "f1": f1, "f2": f2, "is_red": is_red}),
        manifest(
            "featurization",
            f"{DATASET}/features/{partition}",
            {"rows": {"features": len(ids)}},
            features_at,
        ),
    )
    predictions_path = _write(
        lake,
        "predictions",
        partition,
        pa.table(
            {
                "id": ids,
                "prediction": prediction,
                "model_name": ["landfall-demo"] * len(ids),
                "model_version": [model_version] * len(ids),
            }
        ),
        manifest(
            "prediction",
            f"{DATASET}/predictions/{partition}",
            {
                "rows": {"predictions": len(ids)},
                "model": {
                    "name": "landfall-demo",
                    "version": model_version,
                    "uri": "models:/landfall-demo/3",
                },
            },
            predicted_at,
        ),
    )
    landed = new_event(
        EventType.DATA_LANDED,
        producer="tests/0",
        occurred_at=now - timedelta(seconds=8),
        event_id=str(uuid.uuid4()),
        **base,
    )
    common = {"producer": "tests/0", **base}
    validated = new_event(
        EventType.BATCH_VALIDATED,
        causation_id=landed["event_id"],
        occurred_at=valid_at,
        output_path=validated_path,
        quarantine_path=f"{DATASET}/quarantine/{partition}",
        manifest_path=f"{validated_path}/_manifest.json",
        rows_landed=rows,
        rows_valid=rows - bad,
        rows_quarantined=bad,
        duration_ms=1500,
        **_known(EventType.BATCH_VALIDATED, failures_by_rule=failures, null_fraction=nulls),
        **common,
    )
    featurized = new_event(
        EventType.BATCH_FEATURIZED,
        causation_id=validated["event_id"],
        occurred_at=features_at,
        output_path=features_path,
        manifest_path=f"{features_path}/_manifest.json",
        rows=len(ids),
        features=["f1", "f2", "is_red"],
        duration_ms=1500,
        **common,
    )
    predicted = new_event(
        EventType.BATCH_PREDICTED,
        causation_id=featurized["event_id"],
        occurred_at=predicted_at,
        output_path=predictions_path,
        manifest_path=f"{predictions_path}/_manifest.json",
        rows=len(ids),
        model_name="landfall-demo",
        model_version=model_version,
        model_uri="models:/landfall-demo/3",
        duration_ms=1500,
        **common,
    )
    return RunEvents(landed, validated, featurized, predicted)


def _known(event_type: EventType, **fields: Any) -> dict[str, Any]:
    """Only the fields the event's current schema has (other engineers evolve them)."""
    from landfall.contracts import load_schema

    names = {f["name"] for f in load_schema(event_type)["fields"]}
    return {k: v for k, v in fields.items() if k in names}


def failed_event(
    partition: str, *, run_id: str | None = None, stage: str = "validation"
) -> dict[str, Any]:
    """A batch-failed event for a run of ``partition``."""
    return new_event(
        EventType.BATCH_FAILED,
        dataset=DATASET,
        partition=partition,
        batch_id=batch_id_for(DATASET, partition),
        run_id=run_id or str(uuid.uuid4()),
        producer=f"{stage}/0",
        causation_id=str(uuid.uuid4()),
        stage=stage,
        reason="partition not found: demo/raw/" + partition,
        retryable=True,
        failed_event_type=EventType.DATA_LANDED.value,
    )


# ---------------------------------------------------------------------------- live services


def live_settings(home: Path, bootstrap: str, **environ: str) -> tuple[Settings, Path]:
    """Demo settings on ``bootstrap`` with topics and groups of their own, and their file."""
    from tests.conftest import settings_for

    suffix = uuid.uuid4().hex[:8]
    overrides = {
        "LANDFALL_KAFKA_BOOTSTRAP": bootstrap,
        "LANDFALL_KAFKA_GROUP_PREFIX": f"rep-{suffix}",
        **{
            f"LANDFALL_KAFKA__TOPICS__{key.upper()}__NAME": f"rep-{suffix}.{key}"
            for key in ("landed", "validated", "featurized", "predicted", "reported", "failed")
        },
        "LANDFALL_KAFKA__TOPICS__DEAD_LETTER__NAME": f"rep-{suffix}.dead_letter",
        # Several services of several tests run at once: each config its own port.
        "LANDFALL_TELEMETRY__METRICS_PORT": str(free_port()),
        **environ,
    }
    settings = settings_for(home, **overrides)
    config_file = home / "landfall.yaml"
    # As `landfall up` hands its services their settings: secrets in clear, mode 600.
    write_private(
        config_file, yaml.safe_dump(settings.model_dump(mode="json", context=REVEAL_SECRETS))
    )
    return settings, config_file


class LandfallProcess:
    """``python -m landfall serve NAME`` as a child process with its own log."""

    def __init__(
        self, name: str, config_file: Path, log: Path, environ: dict[str, str] | None = None
    ) -> None:
        self.name, self.log = name, log
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANDFALL_")}
        env["LANDFALL_CONFIG"] = str(config_file)
        env.update(environ or {})  # what the settings file cannot say (LANDFALL_LOG_FORMAT)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "landfall", "serve", name],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        """Fail with the end of the log if the process exited."""
        code = self.process.poll()
        if code is not None:
            tail = self.log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"{self.name} exited with {code}:\n{tail}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait, then kill the process group; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def publish_events(settings: Settings, events: list[tuple[EventType, dict[str, Any]]]) -> None:
    """Publish events on their topics as the stages would (Avro, keyed by partition)."""
    from confluent_kafka import Producer

    topics = settings.kafka.topics
    topic_of = {
        EventType.DATA_LANDED: topics.landed.name,
        EventType.BATCH_VALIDATED: topics.validated.name,
        EventType.BATCH_FEATURIZED: topics.featurized.name,
        EventType.BATCH_PREDICTED: topics.predicted.name,
        EventType.BATCH_FAILED: topics.failed.name,
    }
    codec = EventCodec(settings.schema_registry_url)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "acks": "all"})
    for event_type, record in events:
        topic = topic_of[event_type]
        producer.produce(
            topic, key=partition_key(record), value=codec.encode(event_type, record, topic=topic)
        )
    assert producer.flush(30) == 0


def finished_report(
    key: RunKey,
    status: str = "SUCCEEDED",
    *,
    started: datetime,
    failed_stage: str = "prediction",
    reason: str = "model missing",
) -> dict[str, Any]:
    """A run's final report as the reporter writes it: 100 rows landed, 5 quarantined,
    95 scored, each stage 4 s; a failed run has the stages before ``failed_stage``."""
    stages = ["validation", "featurization", "prediction", "reporting"]
    if status == "FAILED":
        stages = stages[: stages.index(failed_stage)]
    report: dict[str, Any] = {
        **key.as_dict(),
        "status": status,
        "reported_at": (started + timedelta(seconds=30)).isoformat(),
        "rows": {"landed": 100, "valid": 95, "quarantined": 5, "scored": 95},
        "failures_by_rule": {"not_null:feature2": 5},
        "null_fractions": {"feature3": 0.25},
        "model": {"name": "m", "version": "4"},
        "timeline": [
            {
                "stage": stage,
                "started_at": (started + timedelta(seconds=i * 5)).isoformat(),
                "finished_at": (started + timedelta(seconds=i * 5 + 4)).isoformat(),
                "duration_ms": 4000,
                "rows": 100,
            }
            for i, stage in enumerate(stages)
        ],
        "stage_durations_ms": {"validation": 4000},
        "predictions": {"rows": 95, "mean": 0.4, "min": 0.0, "max": 1.0, "null_predictions": 0},
        "drift": {"features": {"f1": {"psi": 0.5, "flagged": True}}, "flagged": ["f1"]},
        "report_path": f"{key.dataset}/reports/{key.partition}/report.json",
        "report_html_path": f"{key.dataset}/reports/{key.partition}/report.html",
    }
    if status == "FAILED":
        report |= {"failed_stage": failed_stage, "failure_reason": reason, "retryable": False}
    return report
