"""Stages read only their own zone of a configured dataset, and follow no symlink.

Driven like the other stage tests: the real services on a local Spark session, with a
lake of their own, no broker. Each failure must come before Spark reads anything and
before any output is staged, so each test also checks that nothing was left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from landfall.config import Settings
from landfall.contracts import EventType, new_event
from landfall.demo import write_sample_partition
from landfall.errors import ConfigError, PathOutsideLakeError
from landfall.ingress import batch_id_for, complete_landed_event
from landfall.lake import Lake
from landfall.results import RunHistory
from landfall.stage import StageContext
from services.featurizer.service import FeaturizerService
from services.reporter.service import BatchReporter
from services.validator.service import ValidatorService

PARTITION = "2026-11-05"


def _landed(dataset: str = "demo", **fields: Any) -> dict[str, Any]:
    return complete_landed_event({"dataset": dataset, "partition": PARTITION, **fields})


def _tree(root: Path) -> list[str]:
    """Every path under ``root``, lake-relative, links included but not followed."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def validator(spark, settings: Settings) -> ValidatorService:  # type: ignore[no-untyped-def]
    return ValidatorService(StageContext(settings, "validator", spark=spark))


def test_a_raw_partition_folder_linked_out_of_the_lake_fails_the_batch(
    validator: ValidatorService, tmp_path: Path
) -> None:
    lake = validator.context.lake
    # The partition really lands outside the lake; a link in the raw zone points there.
    outside = Lake(tmp_path / "outside")
    write_sample_partition(outside, PARTITION, rows=50)
    (Path(lake.uri) / "demo" / "raw").mkdir(parents=True)
    (Path(lake.uri) / "demo" / "raw" / PARTITION).symlink_to(
        Path(str(outside.partition_dir("demo", "raw", PARTITION)))
    )
    before = _tree(Path(lake.uri))

    with pytest.raises(PathOutsideLakeError) as caught:
        validator.handle(EventType.DATA_LANDED, _landed())

    # A StageFailedError: the runner publishes it as batch-failed, reason verbatim.
    assert caught.value.retryable is False
    assert caught.value.reason.startswith(
        f"raw input 'demo/raw/{PARTITION}' is refused: it is a symbolic link"
    )
    assert str(tmp_path) not in caught.value.reason  # no server path, no link target
    assert _tree(Path(lake.uri)) == before  # no validated/ or quarantine/ staging left


def test_a_file_linked_into_a_raw_partition_fails_the_batch(
    validator: ValidatorService, tmp_path: Path
) -> None:
    lake = validator.context.lake
    landed = write_sample_partition(lake, PARTITION, rows=50)
    secret = tmp_path / "secret.csv"
    secret.write_text(landed.path.read_text())
    (Path(str(landed.path)).parent / "part-00001.csv").symlink_to(secret)
    before = _tree(Path(lake.uri))

    with pytest.raises(PathOutsideLakeError) as caught:
        validator.handle(EventType.DATA_LANDED, _landed())

    assert f"'demo/raw/{PARTITION}/part-00001.csv' is a symbolic link" in caught.value.reason
    assert _tree(Path(lake.uri)) == before


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        (".", "must be a folder inside demo/raw/"),  # the whole lake
        (f"demo/validated/{PARTITION}", "must be a folder inside demo/raw/"),
        (f"other/raw/{PARTITION}", "must be a folder inside demo/raw/"),
        ("../../../etc", "outside the lake root"),
        ("/etc", "never absolute"),
    ],
)
def test_an_event_path_outside_the_dataset_s_raw_zone_fails_the_batch(
    validator: ValidatorService, path: str, rule: str
) -> None:
    lake = validator.context.lake
    # Each place holds readable data, so only the confinement can stop the read.
    write_sample_partition(lake, PARTITION, rows=50)
    write_sample_partition(lake, PARTITION, rows=50, dataset="other")
    (Path(lake.uri) / "demo" / "validated").mkdir()
    Path(str(lake.partition_dir("demo", "raw", PARTITION))).rename(
        Path(str(lake.partition_dir("demo", "validated", PARTITION)))
    )
    before = _tree(Path(lake.uri))

    with pytest.raises(PathOutsideLakeError) as caught:
        validator.handle(EventType.DATA_LANDED, _landed(path=path))

    assert rule in caught.value.reason and repr(path) in caught.value.reason
    assert _tree(Path(lake.uri)) == before


def test_an_event_path_inside_the_raw_zone_is_read(validator: ValidatorService) -> None:
    lake = validator.context.lake
    sample = write_sample_partition(lake, PARTITION, rows=50)
    upstream = Path(lake.uri) / "demo" / "raw" / "upstream" / "drop-7"
    upstream.parent.mkdir()
    Path(str(sample.path)).parent.rename(upstream)

    (outgoing,) = validator.handle(EventType.DATA_LANDED, _landed(path="demo/raw/upstream/drop-7/"))

    assert outgoing.record["rows_landed"] == 50


def test_an_event_for_an_unknown_dataset_fails_and_makes_no_folder(
    validator: ValidatorService,
) -> None:
    lake = validator.context.lake
    Path(lake.uri).mkdir(parents=True, exist_ok=True)

    with pytest.raises(ConfigError, match=r"unknown dataset 'nosuch' \(configured: demo\)"):
        validator.handle(EventType.DATA_LANDED, _landed("nosuch"))

    assert _tree(Path(lake.uri)) == []


def test_a_validated_input_from_another_zone_fails_featurization(spark, settings: Settings) -> None:
    service = FeaturizerService(StageContext(settings, "featurizer", spark=spark))
    lake = service.context.lake
    write_sample_partition(lake, PARTITION, rows=50)
    landed = _landed()
    validated = new_event(
        EventType.BATCH_VALIDATED,
        dataset="demo",
        partition=PARTITION,
        batch_id=landed["batch_id"],
        run_id=landed["run_id"],
        producer="tests/0",
        causation_id=landed["event_id"],
        # Raw files, not a committed validated output: the featurizer must not take them.
        output_path=f"demo/raw/{PARTITION}",
        quarantine_path=f"demo/quarantine/{PARTITION}",
        manifest_path=f"demo/raw/{PARTITION}/_manifest.json",
        rows_landed=50,
        rows_valid=50,
        rows_quarantined=0,
        duration_ms=1,
    )
    before = _tree(Path(lake.uri))

    with pytest.raises(PathOutsideLakeError, match="must be a folder inside demo/validated/"):
        service.handle(EventType.BATCH_VALIDATED, validated)

    assert _tree(Path(lake.uri)) == before


def test_a_failure_of_an_unknown_dataset_is_recorded_but_writes_nothing_in_the_lake(
    spark, settings: Settings
) -> None:
    failed = new_event(
        EventType.BATCH_FAILED,
        dataset="nosuch",
        partition=PARTITION,
        batch_id=batch_id_for("nosuch", PARTITION),
        run_id="run-of-an-unknown-dataset",
        producer="validator/0",
        causation_id="landed-1",
        stage="validation",
        reason="ConfigError: unknown dataset 'nosuch' (configured: demo)",
        retryable=False,
        failed_event_type=EventType.DATA_LANDED.value,
    )
    lake_root = Path(settings.lake)
    lake_root.mkdir(parents=True, exist_ok=True)
    reporter = BatchReporter(StageContext(settings, "reporter", spark=spark))
    try:
        _, reported = reporter.follow(EventType.BATCH_FAILED, failed, None)
    finally:
        reporter.close()

    assert reported is not None

    assert not (lake_root / "nosuch").exists()
    event = reported.record
    assert (event["status"], event["report_path"], event["report_html_path"]) == (
        "FAILED",
        "",
        None,
    )
    assert "unknown dataset 'nosuch'" in event["failure_reason"]
    db = RunHistory.open(settings.results_db_url)
    try:
        stored = db.run(failed["run_id"])
        assert stored is not None
        assert (stored["status"], stored["dataset"], stored["report_path"]) == (
            "FAILED",
            "nosuch",
            None,
        )
        (error,) = stored["errors"]
        assert "unknown dataset 'nosuch'" in error["reason"]
    finally:
        db.close()
