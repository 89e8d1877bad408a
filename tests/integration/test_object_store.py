"""The lake on an S3-compatible object store, against a real server (tests/object_store.py).

Spark writes and reads through hadoop-aws's s3a connector, the arrow side through
pyarrow's S3 filesystem, both configured from one ObjectStoreSettings; bad settings
(an unreachable endpoint, wrong credentials, a missing bucket, a root that is a file)
each give one clear error naming what to fix.
"""

from __future__ import annotations

import json

import pyarrow.dataset as ds
import pytest
from pyarrow import fs as pafs

from landfall.config import load_settings
from landfall.errors import RetryableError, StageFailedError
from landfall.object_store import arrow_filesystem, check_reachable
from landfall.ports import free_port
from tests.object_store import S3Store


def test_spark_writes_parquet_that_spark_and_arrow_read_back(
    spark, s3_endpoint: S3Store, s3_bucket: str
) -> None:
    uri = f"s3a://{s3_bucket}/lake/scores"
    frame = spark.range(0, 5000, numPartitions=3).selectExpr("id", "id * 0.5 AS score")

    frame.write.mode("overwrite").parquet(uri)

    back = spark.read.parquet(uri)
    assert back.count() == 5000
    assert back.selectExpr("sum(score)").first()[0] == pytest.approx(0.5 * sum(range(5000)))
    filesystem, root = arrow_filesystem(uri, s3_endpoint.settings())
    assert isinstance(filesystem, pafs.S3FileSystem) and root == f"{s3_bucket}/lake/scores"
    table = ds.dataset(root, filesystem=filesystem, format="parquet").to_table()
    assert table.num_rows == 5000
    assert sorted(table.column("id").to_pylist()) == list(range(5000))


def test_spark_reads_what_arrow_wrote(spark, s3_endpoint: S3Store, s3_bucket: str) -> None:
    import pyarrow as pa

    filesystem, root = arrow_filesystem(f"s3://{s3_bucket}/arrow", s3_endpoint.settings())
    ds.write_dataset(
        pa.table({"id": list(range(100)), "label": ["a", "b"] * 50}),
        root,
        filesystem=filesystem,
        format="parquet",
    )

    back = spark.read.parquet(f"s3a://{s3_bucket}/arrow")

    assert back.count() == 100
    assert back.where("label = 'b'").count() == 50


def test_a_small_object_is_written_by_one_put(s3_endpoint: S3Store, s3_bucket: str) -> None:
    filesystem, root = arrow_filesystem(f"s3a://{s3_bucket}/lake", s3_endpoint.settings())
    pointer = {"run_id": "run-1", "path": "runs/run-1"}

    with filesystem.open_output_stream(f"{root}/_pointer.json") as out:
        out.write(json.dumps(pointer).encode())

    with filesystem.open_input_stream(f"{root}/_pointer.json") as stream:
        assert json.loads(stream.read()) == pointer
    # A multipart upload's ETag ends in -<parts>; one PUT's is the body's MD5.
    head = s3_endpoint.client().head_object(Bucket=s3_bucket, Key="lake/_pointer.json")
    assert "-" not in head["ETag"].strip('"')


def test_settings_from_the_environment_reach_the_store(
    s3_endpoint: S3Store, s3_bucket: str
) -> None:
    settings = load_settings(
        environ={"LANDFALL_LAKE_ROOT": f"s3a://{s3_bucket}/lake", **s3_endpoint.environ()}
    )

    filesystem, root = arrow_filesystem(settings.lake_uri, settings.object_store)
    check_reachable(filesystem, root, settings.lake_uri, settings.object_store)

    filesystem.create_dir(f"{root}/sensors")
    assert filesystem.get_file_info(f"{root}/sensors").type == pafs.FileType.Directory


def _check(uri: str, store: S3Store, **overrides: object) -> None:
    settings = store.settings(**overrides)
    filesystem, root = arrow_filesystem(uri, settings)
    check_reachable(filesystem, root, uri, settings)


def test_an_unreachable_endpoint_is_retryable_and_names_it(
    s3_endpoint: S3Store, s3_bucket: str
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(RetryableError) as caught:
        _check(f"s3a://{s3_bucket}/lake", s3_endpoint, endpoint=nowhere)

    message = str(caught.value)
    assert "unreachable" in message and nowhere in message
    assert "object_store.endpoint" in message and "\n" not in message


@pytest.mark.parametrize("wrong", ["access_key_id", "secret_access_key"])
def test_wrong_credentials_name_the_settings(
    s3_endpoint: S3Store, s3_bucket: str, wrong: str
) -> None:
    if not s3_endpoint.access_key_id:
        pytest.skip("the configured test store takes no credentials")
    bad = "AKIAWRONGWRONGWRONG0" if wrong == "access_key_id" else "not-the-secret-at-all"

    with pytest.raises(StageFailedError) as caught:
        _check(f"s3a://{s3_bucket}/lake", s3_endpoint, **{wrong: bad})

    message = str(caught.value)
    assert "refused the credentials" in message
    assert "object_store.access_key_id" in message
    assert "object_store.secret_access_key" in message
    assert bad not in message and s3_endpoint.secret_access_key not in message
    assert not caught.value.retryable


def test_a_missing_bucket_is_named(s3_endpoint: S3Store) -> None:
    with pytest.raises(StageFailedError) as caught:
        _check("s3a://landfall-no-such-bucket/lake", s3_endpoint)

    message = str(caught.value)
    assert "'landfall-no-such-bucket'" in message and "does not exist" in message
    assert "lake_root" in message and "\n" not in message


def test_a_root_that_is_a_file_is_named(s3_endpoint: S3Store, s3_bucket: str) -> None:
    s3_endpoint.client().put_object(Bucket=s3_bucket, Key="lake", Body=b"not a folder")

    with pytest.raises(StageFailedError, match="lake_root s3a://.*/lake is a file, not a folder"):
        _check(f"s3a://{s3_bucket}/lake", s3_endpoint)


def test_a_root_not_yet_written_is_fine(s3_endpoint: S3Store, s3_bucket: str) -> None:
    _check(f"s3a://{s3_bucket}/lake/not/yet", s3_endpoint)
