"""The report document of a batch run: counts, quality, model, timeline, figures, drift.

No Kafka here. Given a run's completion (or failure) event and what the reporter saw of
its earlier stages (``progress``), this builds the report document: row counts, data
quality per rule, null fractions, the model, a stage timeline, and, for a scored run,
the prediction distribution and feature drift (population stability index) against the
dataset's previous partitions, read from the lake with pyarrow in this process (the
predictions' one column, services/reporter/stage.py; the feature table once,
services/reporter/feature_scan.py). Spark is left only the null fractions of valid rows
that a validator did not measure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession

if TYPE_CHECKING:
    from landfall.object_store import StoreSettings

from landfall.lake import MANIFEST_NAME, Lake, LakePath
from services.reporter.drift import feature_drift
from services.reporter.feature_scan import ScanTasks
from services.reporter.stage import (
    PIPELINE_STAGES,
    null_fractions,
    prediction_distribution,
    prediction_summary,
    stage_manifests,
)

__all__ = ["build_failure_report", "build_success_report", "timeline"]


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _relative(path: LakePath | None) -> str | None:
    return path.rel if path is not None else None


def _span(
    stage: str,
    status: str,
    started: datetime,
    finished: datetime,
    rows: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "stage": stage,
        "status": status,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        # Exact whole milliseconds (float seconds times 1000 could land just below).
        "duration_ms": (finished - started) // timedelta(milliseconds=1),
        "rows": rows,
        "event_id": event_id,
    }


def _finished_stage(
    stage: str, run_id: str, entry: Mapping[str, Any] | None, manifest: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """A finished stage's span, from its completion event, else its manifest of this run."""
    if entry is not None:
        finished, duration = _time(entry.get("finished_at")), entry.get("duration_ms")
        rows, event_id = entry.get("rows"), entry.get("event_id")
    elif manifest is not None and manifest.get("run_id") == run_id:
        finished = _time(manifest.get("committed_at"))
        duration = int(manifest.get("timings_ms", {}).get("total", 0))
        manifest_rows = manifest.get("rows", {})
        rows = next(iter(manifest_rows.values()), None) if len(manifest_rows) == 1 else None
        if stage == "validation":
            rows = manifest_rows.get("landed")
        event_id = None
    else:
        return None
    if finished is None:
        return None
    began = finished - timedelta(milliseconds=int(duration or 0))
    return _span(stage, "SUCCEEDED", began, finished, rows, event_id)


def timeline(
    run_id: str,
    progress: Mapping[str, Any],
    manifests: Mapping[str, Mapping[str, Any]],
    reporting: tuple[datetime, datetime] | None = None,
    failed: tuple[str, datetime] | None = None,
) -> list[dict[str, Any]]:
    """When each stage of the run started and finished, from its events or its manifest.

    A failed stage (name, when it failed) spans from the end of the stage before it,
    or from the submission, to its failure.
    """
    seen = progress.get("stages", {})
    spans = [
        span
        for stage in PIPELINE_STAGES
        if (span := _finished_stage(stage, run_id, seen.get(stage), manifests.get(stage)))
    ]
    if failed is not None and failed[0] not in {s["stage"] for s in spans} | {"reporting"}:
        stage, failed_at = failed
        previous = _time(spans[-1]["finished_at"]) if spans else _time(progress.get("submitted_at"))
        began = min(previous or failed_at, failed_at)
        spans.append(_span(stage, "FAILED", began, failed_at))
    if reporting is not None:
        spans.append(_span("reporting", "SUCCEEDED", *reporting))
    return spans


# ---------------------------------------------------------------------------- reports


def _quality(validation: Mapping[str, Any], progress: Mapping[str, Any]) -> dict[str, Any]:
    seen = progress.get("stages", {}).get("validation", {})
    failures = (
        validation.get("failures_by_rule")
        or validation.get("failures_by_check")
        or seen.get("failures_by_rule")
        or {}
    )
    return {
        "failures_by_rule": {str(k): int(v) for k, v in failures.items()},
        "rule_severities": validation.get("severities", {}),
        "threshold_breaches": validation.get("threshold_breaches", []),
        "null_fractions": validation.get("null_fraction") or seen.get("null_fraction") or {},
    }


def _null_fractions_of_run(
    spark: SparkSession, lake: Lake, predicted: Mapping[str, Any], from_validator: Any
) -> dict[str, Any]:
    """Null fractions as the validator measured them, else computed over the valid rows."""
    if from_validator:
        return {"null_fractions_of": "landed rows (from the validator)"}
    validated = lake.output_of_run(
        predicted["dataset"], "validated", predicted["partition"], predicted["run_id"]
    )
    if validated is None or not (validated / MANIFEST_NAME).exists():
        return {}
    return {
        "null_fractions": null_fractions(spark, validated),
        "null_fractions_of": "valid rows (computed by the reporter)",
    }


def build_success_report(
    spark: SparkSession,
    lake: Lake,
    predicted: Mapping[str, Any],
    *,
    progress: Mapping[str, Any],
    psi_threshold: float,
    reference_partitions: int,
    id_column: str = "id",
    drift_thresholds: Mapping[str, float | None] | None = None,
    store: StoreSettings | None = None,
) -> dict[str, Any]:
    """The report of a batch run whose predictions are committed.

    ``drift_thresholds``: each feature column's own PSI threshold, None for one not
    watched (``DatasetConfig.drift_thresholds``); others take ``psi_threshold``.
    ``store``: the lake's object store (or HDFS) settings, for the scan's Spark tasks.
    """
    # Long: most of its lines are the report document itself, one key per line.
    dataset, partition, run_id = predicted["dataset"], predicted["partition"], predicted["run_id"]
    manifests = stage_manifests(lake, dataset, partition, run_id)
    # A newer run of the same partition may have replaced an earlier stage's output
    # while this one was scoring; the report says so rather than mixing runs silently.
    foreign = sorted(s for s, m in manifests.items() if m.get("run_id") != run_id)
    validation = manifests.get("validation", {})
    rows = validation.get("rows", {})
    quality = _quality(validation, progress)
    quality |= _null_fractions_of_run(spark, lake, predicted, quality["null_fractions"])
    # Only the predictions zone of the run's own dataset, and no symlinks.
    predictions_path = lake.input_dir(
        predicted["output_path"], dataset=dataset, zone="predictions", partition=partition
    )
    features_path = lake.output_of_run(dataset, "features", partition, run_id)
    drift: dict[str, Any] = {"threshold": psi_threshold, "features": {}, "flagged": []}
    summaries: dict[str, Any] = {}
    if features_path is not None:
        drift, summaries = feature_drift(
            lake, dataset, partition, features_path,
            references=reference_partitions, threshold=psi_threshold,
            exclude={id_column}, thresholds=drift_thresholds,
            tasks=ScanTasks(spark, store) if spark is not None else None,
        )  # fmt: skip
    return {
        "status": "SUCCEEDED",
        "dataset": dataset,
        "partition": partition,
        "batch_id": predicted["batch_id"],
        "run_id": run_id,
        "requested_model_version": progress.get("requested_model_version"),
        "rows": {
            "landed": rows.get("landed"),
            "valid": rows.get("valid"),
            "quarantined": rows.get("quarantined"),
            "scored": predicted["rows"],
        },
        **quality,
        "model": {
            "name": predicted["model_name"],
            "version": predicted["model_version"],
            "uri": predicted["model_uri"],
        },
        "outputs": {stage: m.get("path") for stage, m in manifests.items()}
        | {"quarantine": _relative(lake.output_of_run(dataset, "quarantine", partition, run_id))},
        "predictions": prediction_summary(predictions_path),
        "prediction_distribution": prediction_distribution(
            lake, dataset, partition, predictions_path, references=reference_partitions
        ),
        "drift": drift,
        "stages_from_other_runs": foreign,
        "manifests": manifests,
        # Not part of the report: what the reporter stores beside it (drift summaries).
        "feature_summaries": summaries,
    }


def build_failure_report(
    lake: Lake, failed: Mapping[str, Any], *, progress: Mapping[str, Any]
) -> dict[str, Any]:
    """The report of a batch run that a stage failed."""
    run_id = failed["run_id"]
    found = stage_manifests(lake, failed["dataset"], failed["partition"], run_id)
    manifests = {stage: m for stage, m in found.items() if m.get("run_id") == run_id}
    validation = manifests.get("validation", {})
    rows = validation.get("rows", {})
    model = {}
    if "prediction" in manifests:
        model = dict(manifests["prediction"].get("model", {}))
    return {
        "status": "FAILED",
        "dataset": failed["dataset"],
        "partition": failed["partition"],
        "batch_id": failed["batch_id"],
        "run_id": run_id,
        "requested_model_version": progress.get("requested_model_version"),
        "failed_stage": failed["stage"],
        "failure_reason": failed["reason"],
        "failure_details": dict(failed.get("details") or {}),
        "retryable": failed["retryable"],
        "failed_at": _iso(_time(failed.get("occurred_at"))),
        "failure_event_id": failed.get("event_id"),
        "rows": {
            "landed": rows.get("landed"),
            "valid": rows.get("valid"),
            "quarantined": rows.get("quarantined"),
            "scored": None,
        },
        **_quality(validation, progress),
        "model": {k: model.get(k) for k in ("name", "version", "uri")},
        "outputs": {stage: m.get("path") for stage, m in manifests.items()},
        "manifests": manifests,
    }
