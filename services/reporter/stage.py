"""Reporting: one report per batch run, from the stage manifests and the predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from landfall.lake import MANIFEST_NAME, Lake, read_manifest

__all__ = ["build_failure_report", "build_success_report", "prediction_summary"]

# Stage name in manifests -> the zone its output lives in.
STAGE_ZONES = {"validation": "validated", "featurization": "features", "prediction": "predictions"}


def prediction_summary(spark: SparkSession, predictions_path: Path) -> dict[str, Any]:
    """Count, mean, min, max and the most frequent predicted values, in one Spark job."""
    frame = spark.read.parquet(str(predictions_path))
    grouped = frame.groupBy("prediction").count().orderBy(F.desc("count")).collect()
    total = sum(int(r["count"]) for r in grouped)
    values = [
        (float(r["prediction"]), int(r["count"])) for r in grouped if r["prediction"] is not None
    ]
    nulls = sum(int(r["count"]) for r in grouped if r["prediction"] is None)
    summary: dict[str, Any] = {"rows": total, "null_predictions": nulls}
    if values:
        summary.update(
            mean=sum(v * c for v, c in values) / sum(c for _, c in values),
            min=min(v for v, _ in values),
            max=max(v for v, _ in values),
            distinct_values=len(values),
            # A classifier has few distinct values; a regressor's would be noise here.
            counts_by_value={str(v): c for v, c in values[:20]},
        )
    return summary


def _stage_manifests(lake: Lake, dataset: str, partition: str) -> dict[str, dict[str, Any]]:
    manifests = {}
    for stage, zone in STAGE_ZONES.items():
        directory = lake.partition_dir(dataset, zone, partition)  # type: ignore[arg-type]
        if (directory / MANIFEST_NAME).exists():
            manifests[stage] = read_manifest(directory)
    return manifests


def build_success_report(
    spark: SparkSession, lake: Lake, predicted: dict[str, Any]
) -> dict[str, Any]:
    """The report of a batch run whose predictions are committed."""
    dataset, partition, run_id = predicted["dataset"], predicted["partition"], predicted["run_id"]
    manifests = _stage_manifests(lake, dataset, partition)
    # A newer run of the same partition may have replaced an earlier stage's output
    # while this one was scoring; the report says so rather than mixing runs silently.
    foreign = sorted(s for s, m in manifests.items() if m.get("run_id") != run_id)
    validation = manifests.get("validation", {})
    rows = validation.get("rows", {})
    return {
        "status": "SUCCEEDED",
        "dataset": dataset,
        "partition": partition,
        "batch_id": predicted["batch_id"],
        "run_id": run_id,
        "rows": {
            "landed": rows.get("landed"),
            "valid": rows.get("valid"),
            "quarantined": rows.get("quarantined"),
            "scored": predicted["rows"],
        },
        "failures_by_rule": validation.get("failures_by_rule", {}),
        "model": {
            "name": predicted["model_name"],
            "version": predicted["model_version"],
            "uri": predicted["model_uri"],
        },
        "stage_durations_ms": {
            stage: int(m.get("timings_ms", {}).get("total", 0)) for stage, m in manifests.items()
        },
        "outputs": {stage: m.get("path") for stage, m in manifests.items()}
        | {"quarantine": lake.relative(lake.partition_dir(dataset, "quarantine", partition))},
        "predictions": prediction_summary(spark, lake.resolve(predicted["output_path"])),
        "stages_from_other_runs": foreign,
    }


def build_failure_report(lake: Lake, failed: dict[str, Any]) -> dict[str, Any]:
    """The report of a batch run that a stage failed."""
    manifests = _stage_manifests(lake, failed["dataset"], failed["partition"])
    return {
        "status": "FAILED",
        "dataset": failed["dataset"],
        "partition": failed["partition"],
        "batch_id": failed["batch_id"],
        "run_id": failed["run_id"],
        "failed_stage": failed["stage"],
        "failure_reason": failed["reason"],
        "retryable": failed["retryable"],
        "stage_durations_ms": {
            stage: int(m.get("timings_ms", {}).get("total", 0))
            for stage, m in manifests.items()
            if m.get("run_id") == failed["run_id"]
        },
    }
