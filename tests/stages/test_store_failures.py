"""A lake store that cannot be used fails the batch with one clear error; nothing crashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from landfall.contracts import EventType, new_event
from landfall.errors import LandfallError, RetryableError, StageFailedError
from landfall.ingress import batch_id_for
from landfall.lake import Lake
from landfall.processing import failure_of
from landfall.run_ids import new_run_id
from landfall.stage import StageContext
from services.validator.service import ValidatorService
from tests.conftest import settings_for
from tests.object_store import S3Store

PARTITION = "2026-11-01"


def _landed() -> dict:  # type: ignore[type-arg]
    return new_event(
        EventType.DATA_LANDED,
        dataset="demo",
        partition=PARTITION,
        batch_id=batch_id_for("demo", PARTITION),
        run_id=new_run_id(),
        producer="test",
    )


def _failure(spark, tmp_path: Path, **environ: str) -> LandfallError:  # type: ignore[no-untyped-def]
    """What the runner makes of the validator's failure on a lake with these settings."""
    settings = settings_for(tmp_path, **environ)
    service = ValidatorService(StageContext(settings, "validator", spark=spark))
    with pytest.raises(Exception) as caught:
        service.handle(EventType.DATA_LANDED, _landed())
    error = caught.value
    if not isinstance(error, LandfallError):
        translated = failure_of(error, settings)
        assert translated is not None, f"untranslated: {error!r}"
        error = translated
    return error


def test_a_missing_bucket_names_lake_root(spark, s3_endpoint: S3Store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    error = _failure(
        spark, tmp_path, LANDFALL_LAKE_ROOT="s3a://no-such-bucket/lake", **s3_endpoint.environ()
    )
    assert isinstance(error, StageFailedError) and not error.retryable
    assert "no-such-bucket" in error.reason and "lake_root" in error.reason


def test_refused_credentials_name_the_settings(
    spark, s3_endpoint: S3Store, s3_bucket: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    environ = {**s3_endpoint.environ(), "LANDFALL_OBJECT_STORE__SECRET_ACCESS_KEY": "wrong-secret"}
    error = _failure(spark, tmp_path, LANDFALL_LAKE_ROOT=f"s3a://{s3_bucket}/lake", **environ)
    assert isinstance(error, StageFailedError) and not error.retryable
    assert "object_store.secret_access_key" in error.reason
    assert "wrong-secret" not in error.reason


def test_an_unreachable_store_is_retryable(
    spark, s3_bucket: str, tmp_path: Path, s3_endpoint: S3Store
) -> None:  # type: ignore[no-untyped-def]
    environ = {**s3_endpoint.environ(), "LANDFALL_OBJECT_STORE__ENDPOINT": "http://127.0.0.1:9"}
    error = _failure(spark, tmp_path, LANDFALL_LAKE_ROOT=f"s3a://{s3_bucket}/lake", **environ)
    assert isinstance(error, RetryableError)
    assert "unreachable" in str(error) and "lake_root" in str(error)


def test_a_partition_not_landed_on_a_usable_store_is_said_so(
    spark, s3_endpoint: S3Store, s3_bucket: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    error = _failure(
        spark, tmp_path, LANDFALL_LAKE_ROOT=f"s3a://{s3_bucket}/lake", **s3_endpoint.environ()
    )
    assert isinstance(error, StageFailedError) and error.retryable
    assert "has it landed yet" in error.reason
    assert (
        Lake.from_settings(
            settings_for(
                tmp_path, LANDFALL_LAKE_ROOT=f"s3a://{s3_bucket}/lake", **s3_endpoint.environ()
            )
        ).committed("demo", "validated", PARTITION)
        is None
    )
