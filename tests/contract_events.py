"""Valid events of every type, for the contract tests: what each stage would publish."""

from __future__ import annotations

import io
import uuid
from typing import Any

import fastavro

from landfall.contracts import (
    EventType,
    load_schema,
    new_event,
)

PRODUCER = "test/0.0"

# Stage-specific fields of each event type; the common ones come from new_event.
PAYLOADS: dict[EventType, dict[str, Any]] = {
    EventType.DATA_LANDED: {"path": "raw/demo/2026-11-01", "format": "csv"},
    EventType.BATCH_VALIDATED: {
        "output_path": "valid/demo/2026-11-01",
        "quarantine_path": "quarantine/demo/2026-11-01",
        "manifest_path": "valid/demo/2026-11-01/_manifest.json",
        "rows_landed": 10,
        "rows_valid": 9,
        "rows_quarantined": 1,
        "duration_ms": 1234,
    },
    EventType.BATCH_FEATURIZED: {
        "output_path": "features/demo/2026-11-01",
        "manifest_path": "features/demo/2026-11-01/_manifest.json",
        "rows": 9,
        "features": ["amount_log", "hour_of_day"],
        "duration_ms": 2000,
    },
    EventType.BATCH_PREDICTED: {
        "output_path": "predictions/demo/2026-11-01",
        "manifest_path": "predictions/demo/2026-11-01/_manifest.json",
        "rows": 9,
        "model_name": "churn",
        "model_version": "3",
        "model_uri": "models:/churn/3",
        "duration_ms": 3000,
    },
    EventType.BATCH_FAILED: {
        "stage": "featurizer",
        "reason": "column amount missing",
        "retryable": False,
        "failed_event_type": EventType.BATCH_VALIDATED.value,
    },
    EventType.BATCH_REPORTED: {
        "status": "SUCCEEDED",
        "report_path": "reports/demo/2026-11-01.json",
        "rows_landed": 10,
        "model_name": "churn",
        "stage_durations_ms": {"validator": 1234, "featurizer": 2000},
    },
}


def make(event_type: EventType, partition: str = "2026-11-01") -> dict[str, Any]:
    """A valid event of ``event_type`` with ids filled in."""
    causation = None if event_type is EventType.DATA_LANDED else str(uuid.uuid4())
    return new_event(
        event_type,
        dataset="demo",
        partition=partition,
        batch_id="batch-1",
        run_id="run-1",
        producer=PRODUCER,
        causation_id=causation,
        **PAYLOADS[event_type],
    )


def avro_body(event_type: EventType, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(event_type), record)
    return buf.getvalue()
