"""Reaching the lake's store: the filesystem and Spark conf each lake root gets.

The store itself is exercised in tests/integration/test_object_store.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow import fs as pafs

from landfall.config import HdfsSettings, ObjectStoreSettings, load_settings
from landfall.errors import ConfigError, RetryableError, StageFailedError
from landfall.object_store import (
    S3A_JARS_ENV,
    arrow_filesystem,
    check_reachable,
    lake_spark_conf,
    s3a_jars,
    spark_conf,
    store_failure,
)

STORE = ObjectStoreSettings(
    endpoint="http://127.0.0.1:9000",
    access_key_id="AKIAEXAMPLE0000",
    secret_access_key="secret-example-0000",
)
JARS = [Path("/jars/hadoop-aws-3.5.0.jar"), Path("/jars/bundle-2.35.4.jar")]


@pytest.mark.parametrize(
    ("uri", "root"),
    [
        ("s3a://lake-bucket/prod/lake/", "lake-bucket/prod/lake"),
        ("s3://lake-bucket", "lake-bucket"),
        ("S3A://lake-bucket/x", "lake-bucket/x"),
    ],
)
def test_an_object_store_root_is_a_bucket_and_prefix_on_s3(uri: str, root: str) -> None:
    filesystem, path = arrow_filesystem(uri, STORE)

    assert isinstance(filesystem, pafs.S3FileSystem)
    assert path == root


def test_a_local_root_is_an_absolute_path(tmp_path: Path) -> None:
    for uri in (str(tmp_path), f"file://{tmp_path}", f"file://localhost{tmp_path}"):
        filesystem, path = arrow_filesystem(uri, STORE)
        assert isinstance(filesystem, pafs.LocalFileSystem)
        assert path == str(tmp_path)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("hdfs:///lake", "names no NameNode"),
        ("hdfs://namenode:8020", "names no folder"),
        ("hdfs://namenode:8020/", "names no folder"),
        ("gs://bucket/lake", "the scheme gs:// is not supported"),
        ("s3a:///lake", "names no bucket"),
        ("file://otherhost/lake", "names host 'otherhost'"),
    ],
)
def test_unsupported_roots_are_config_errors_naming_lake_root(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        arrow_filesystem(uri, STORE)
    assert "lake_root" in str(caught.value)


def test_an_hdfs_root_is_a_path_on_the_namenodes_webhdfs() -> None:
    from landfall.webhdfs import handler_of

    filesystem, path = arrow_filesystem("hdfs://namenode.example:8020/data/lake/", STORE)
    handler = handler_of(filesystem)
    assert handler is not None and path == "/data/lake"
    # Hadoop 3's default HTTP port on the NameNode's host, unless configured.
    assert handler.client.base_url == "http://namenode.example:9870"

    configured = HdfsSettings(webhdfs="https://nn-http.example:50470", user="etl")
    handler = handler_of(arrow_filesystem("hdfs://nn:8020/lake", STORE, configured)[0])
    assert handler is not None
    assert handler.client.base_url == "https://nn-http.example:50470"
    assert handler.client.user == "etl"


def test_hdfs_settings_come_from_the_environment_and_are_checked() -> None:
    settings = load_settings(
        environ={
            "LANDFALL_LAKE_ROOT": "hdfs://nn:8020/lake/",
            "LANDFALL_HDFS__WEBHDFS": "http://nn:9870/",
            "LANDFALL_HDFS__USER": "0123",  # verbatim: a user name is never YAML
        }
    )
    assert settings.lake_uri == "hdfs://nn:8020/lake"
    assert (settings.hdfs.webhdfs, settings.hdfs.user) == ("http://nn:9870", "0123")
    with pytest.raises(ConfigError, match=r"hdfs\.webhdfs must look like http://namenode:9870"):
        load_settings(environ={"LANDFALL_HDFS__WEBHDFS": "nn:9870/webhdfs/v1"})
    with pytest.raises(ConfigError, match="names no NameNode"):
        load_settings(environ={"LANDFALL_LAKE_ROOT": "hdfs:///lake"})


def test_spark_acts_as_the_configured_hdfs_user() -> None:
    assert lake_spark_conf("hdfs://nn:8020/lake", STORE, HdfsSettings()) == {}
    conf = lake_spark_conf("hdfs://nn:8020/lake", STORE, HdfsSettings(user="etl"))
    assert conf == {"spark.driver.extraJavaOptions": "-DHADOOP_USER_NAME=etl"}


def test_spark_reaches_the_same_store_through_s3a() -> None:
    conf = spark_conf(STORE, JARS)

    hadoop = {k.removeprefix("spark.hadoop."): v for k, v in conf.items()}
    assert hadoop["fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert hadoop["fs.s3a.connection.ssl.enabled"] == "false"
    assert hadoop["fs.s3a.path.style.access"] == "true"
    assert hadoop["fs.s3a.endpoint.region"] == "us-east-1"
    assert hadoop["fs.s3a.access.key"] == "AKIAEXAMPLE0000"
    assert hadoop["fs.s3a.secret.key"] == "secret-example-0000"
    assert hadoop["fs.s3a.aws.credentials.provider"].endswith("SimpleAWSCredentialsProvider")
    assert hadoop["fs.s3.impl"] == hadoop["fs.s3a.impl"]
    class_path = ":".join(str(jar) for jar in JARS)
    assert conf["spark.driver.extraClassPath"] == class_path
    assert conf["spark.executor.extraClassPath"] == class_path
    assert "spark.jars" not in conf  # Spark would copy 650 MB into every application


def test_without_keys_spark_uses_the_default_credential_chain() -> None:
    aws = ObjectStoreSettings(region="eu-west-1", path_style_access=False)

    conf = spark_conf(aws, JARS)

    assert "spark.hadoop.fs.s3a.endpoint" not in conf
    assert "spark.hadoop.fs.s3a.access.key" not in conf
    assert "spark.hadoop.fs.s3a.aws.credentials.provider" not in conf
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "false"


def test_a_session_token_selects_the_temporary_credentials_provider() -> None:
    temporary = STORE.model_copy(update={"endpoint": "https://s3.example.test"})
    temporary = ObjectStoreSettings.model_validate(
        {**temporary.model_dump(), "session_token": "token-example-0000"}
    )

    conf = spark_conf(temporary, JARS)

    assert conf["spark.hadoop.fs.s3a.session.token"] == "token-example-0000"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith(
        "TemporaryAWSCredentialsProvider"
    )
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"


def test_only_an_object_store_lake_adds_spark_conf(tmp_path: Path) -> None:
    assert lake_spark_conf(str(tmp_path), STORE) == {}
    assert lake_spark_conf(f"file://{tmp_path}", STORE) == {}


def test_missing_s3a_jars_say_how_to_fetch_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(S3A_JARS_ENV, str(tmp_path))

    with pytest.raises(ConfigError, match=r"make spark-jars"):
        s3a_jars()
    with pytest.raises(ConfigError, match=r"make spark-jars"):
        lake_spark_conf("s3a://bucket/lake", STORE)


def test_a_local_root_that_is_a_file_is_named(tmp_path: Path) -> None:
    file = tmp_path / "lake"
    file.write_text("not a folder")
    filesystem, root = arrow_filesystem(str(file), STORE)

    with pytest.raises(StageFailedError, match="is a file, not a folder"):
        check_reachable(filesystem, root, str(file))
    check_reachable(*arrow_filesystem(str(tmp_path / "new"), STORE))


def test_store_errors_are_told_apart() -> None:
    uri = "s3a://bucket/lake"
    down = OSError("AWS Error NETWORK_CONNECTION during HeadBucket operation: curlCode: 7")
    denied = OSError("AWS Error ACCESS_DENIED during HeadBucket operation: No response body.")
    missing = OSError("AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation")

    assert isinstance(store_failure(down, uri, STORE), RetryableError)
    refused = store_failure(denied, uri, STORE)
    assert isinstance(refused, StageFailedError) and not refused.retryable
    assert "object_store.secret_access_key" in str(refused)
    assert "does not exist" in str(store_failure(missing, uri, STORE))
    assert store_failure(ValueError("not a store error"), uri, STORE) is None


def test_the_lake_s_class_path_is_joined_with_the_configured_one() -> None:
    from landfall.spark import _with_extra

    lake = spark_conf(STORE, JARS)
    configured = {
        "spark.driver.extraClassPath": "/opt/extra.jar",
        "spark.hadoop.fs.s3a.path.style.access": "false",
    }

    merged = _with_extra(configured, lake)

    assert merged["spark.driver.extraClassPath"] == ":".join([*map(str, JARS), "/opt/extra.jar"])
    assert merged["spark.executor.extraClassPath"] == ":".join(map(str, JARS))
    assert merged["spark.hadoop.fs.s3a.path.style.access"] == "false"  # the config wins


def test_hdfs_failures_name_the_hdfs_settings() -> None:
    uri = "hdfs://nn:8020/lake"
    down = store_failure(ConnectionError("WebHDFS at http://nn:9870 is unreachable"), uri, STORE)
    denied = store_failure(PermissionError("WebHDFS MKDIRS /lake: AccessControlException"), uri)

    assert isinstance(down, RetryableError) and "hdfs.webhdfs" in str(down)
    assert isinstance(denied, StageFailedError) and not denied.retryable
    assert "hdfs.user" in str(denied)
    assert store_failure(FileNotFoundError("/lake/x"), uri) is None


def test_the_hdfs_user_joins_the_configured_driver_options() -> None:
    from landfall.spark import _with_extra

    lake = lake_spark_conf("hdfs://nn:8020/lake", STORE, HdfsSettings(user="etl"))

    merged = _with_extra({"spark.driver.extraJavaOptions": "-Dx=1"}, lake)
    assert merged["spark.driver.extraJavaOptions"] == "-DHADOOP_USER_NAME=etl -Dx=1"
    assert _with_extra({}, lake) == lake
