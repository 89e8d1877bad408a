"""The validator service around its stage: manifests, the event, threshold failures."""

from __future__ import annotations

import uuid

import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.datasets import Thresholds
from landfall.deliveries import replaying
from landfall.demo import write_sample_partition
from landfall.errors import StageFailedError
from landfall.ingress import complete_landed_event
from landfall.lake import StaleCommitError, read_manifest
from landfall.stage import StageContext
from services.validator.service import ValidatorService

PARTITION = "2026-11-03"


def _landed() -> dict:
    return complete_landed_event({"dataset": "demo", "partition": PARTITION})


def test_batch_validated_carries_the_quality_figures(spark, settings: Settings) -> None:
    service = ValidatorService(StageContext(settings, "validator", spark=spark))
    sample = write_sample_partition(service.context.lake, PARTITION, rows=370)

    (outgoing,) = service.handle(EventType.DATA_LANDED, _landed())

    event = outgoing.record
    assert outgoing.event_type is EventType.BATCH_VALIDATED
    assert event["rows_landed"] == 370
    assert event["rows_quarantined"] == sample.bad_rows
    assert event["failures_by_rule"]["type:feature1:double"] == 10
    assert event["failures_by_rule"]["id_unique"] == 0
    assert event["null_fraction"]["feature2"] == pytest.approx(10 / 370)
    manifest = read_manifest(service.context.lake.resolve(event["output_path"]))
    assert manifest["profile"]["feature3"]["approx_distinct"] == 3
    assert manifest["rows"]["valid"] == event["rows_valid"]
    assert manifest["spark_jobs"] >= 1


def test_over_a_threshold_the_batch_fails_and_only_quarantine_is_committed(
    spark, settings: Settings
) -> None:
    strict = settings.dataset("demo").model_copy(
        update={"thresholds": Thresholds(max_invalid_fraction=0.01)}
    )
    strict_settings = settings.model_copy(update={"datasets": {"demo": strict}})
    service = ValidatorService(StageContext(strict_settings, "validator", spark=spark))
    lake = service.context.lake
    write_sample_partition(lake, PARTITION, rows=370)

    with pytest.raises(StageFailedError, match="over the limit of 1.0%") as caught:
        service.handle(EventType.DATA_LANDED, _landed())

    assert caught.value.retryable is False
    assert caught.value.details["rule:not_null:id"] == "10"
    assert lake.committed("demo", "validated", PARTITION) is None
    quarantine = read_manifest(lake.partition_dir("demo", "quarantine", PARTITION))
    assert quarantine["threshold_breaches"]
    # The valid rows' attempt was removed, not left for gc.
    assert list((lake.partition_root("demo", "validated", PARTITION) / "_runs").iterdir()) == []


def test_a_second_delivery_repeats_the_announcement_and_a_replay_redoes_the_work(
    spark, settings: Settings
) -> None:
    """The same event twice in one run: the output stands and the same event goes out.

    Downstream may be reading the committed output when the copy arrives; redoing the
    work would swap it under that reader and announce a second completion.
    """
    # Long: one scenario against one running stack, told in order.
    service = ValidatorService(StageContext(settings, "validator", spark=spark))
    lake = service.context.lake
    write_sample_partition(lake, PARTITION, rows=50)
    landed = _landed()

    (first,) = service.handle(EventType.DATA_LANDED, landed)
    committed = read_manifest(lake.partition_dir("demo", "validated", PARTITION))
    (again,) = service.handle(EventType.DATA_LANDED, dict(landed))
    assert (again.topic, again.event_type, again.record) == (
        first.topic,
        first.event_type,
        first.record,
    )
    assert read_manifest(lake.partition_dir("demo", "validated", PARTITION)) == committed

    # Another run of the batch is not a copy: it is validated anew.
    (other,) = service.handle(EventType.DATA_LANDED, _landed())
    assert other.record["run_id"] != first.record["run_id"]
    assert (
        read_manifest(lake.partition_dir("demo", "validated", PARTITION))["run_id"]
        == (other.record["run_id"])
    )

    # The first event once more, a newer run committed meanwhile: its own run's output
    # is still in the lake, so it is repeated, and the newer run's output stays current.
    (late,) = service.handle(EventType.DATA_LANDED, dict(landed))
    assert late.record == first.record
    assert (
        read_manifest(lake.partition_dir("demo", "validated", PARTITION))["run_id"]
        == (other.record["run_id"])
    )

    # A replay of the newest run redoes the work although its output stands, under a new
    # event id, and its output replaces the run's own.
    newest = read_manifest(lake.partition_dir("demo", "validated", PARTITION))
    other_landed = {
        **landed,
        "run_id": other.record["run_id"],
        "event_id": other.record["causation_id"],
    }
    with replaying(uuid.uuid4().hex):
        (replayed,) = service.handle(EventType.DATA_LANDED, other_landed)
    assert replayed.record["event_id"] != other.record["event_id"]
    manifest = read_manifest(lake.partition_dir("demo", "validated", PARTITION))
    assert manifest["committed_at"] > newest["committed_at"]
    assert manifest["run_id"] == other.record["run_id"]

    # A replay of the older run may not replace the newer run's output (fencing).
    with replaying(uuid.uuid4().hex), pytest.raises(StaleCommitError, match="started later"):
        service.handle(EventType.DATA_LANDED, dict(landed))
    assert (
        read_manifest(lake.partition_dir("demo", "validated", PARTITION))["run_id"]
        == (other.record["run_id"])
    )


def test_a_missing_partition_is_named_by_its_lake_path_not_the_server_s(
    spark, settings: Settings
) -> None:
    service = ValidatorService(StageContext(settings, "validator", spark=spark))
    with pytest.raises(StageFailedError) as caught:
        service.handle(EventType.DATA_LANDED, complete_landed_event(
            {"dataset": "demo", "partition": "2026-01-01"}
        ))  # fmt: skip
    assert caught.value.reason == (
        "partition not found: demo/raw/2026-01-01 does not exist (has it landed yet?)"
    )
    assert caught.value.retryable
