"""Failed Spark jobs, told apart: a crashed worker may succeed on retry, bad data will not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from landfall.errors import RetryableError, StageFailedError
from landfall.spark import spark_failure


def _crash(rows):  # type: ignore[no-untyped-def]
    os._exit(3)  # what the kernel's OOM killer or a segfault leaves Spark to see
    yield from rows


def test_a_crashed_python_worker_is_a_transient_failure(spark) -> None:
    with pytest.raises(Exception) as caught:
        spark.sparkContext.parallelize([1, 2], 2).mapPartitions(_crash).collect()

    failure = spark_failure(caught.value)

    assert isinstance(failure, RetryableError)
    assert "Python worker exited unexpectedly" in str(failure)
    assert "\n" not in str(failure) and "\tat " not in str(failure)


def test_a_corrupt_file_is_a_failed_batch_naming_it(spark, tmp_path: Path) -> None:
    table = tmp_path / "table"
    spark.range(10).write.parquet(str(table))
    victim = next(table.glob("part-*.parquet"))
    victim.write_bytes(b"this is not parquet at all" * 10)

    with pytest.raises(Exception) as caught:
        spark.read.schema("id long").parquet(str(table)).collect()
    failure = spark_failure(caught.value)

    assert isinstance(failure, StageFailedError) and not failure.retryable
    assert victim.name in failure.reason
    assert "\n" not in failure.reason and len(failure.reason) <= 640


def test_errors_from_elsewhere_are_not_spark_failures() -> None:
    assert spark_failure(ValueError("bad value")) is None
    assert spark_failure(OSError("disk full")) is None
