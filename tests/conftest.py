"""Shared fixtures: one Spark session, one broker and one model registry per test run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from landfall.config import Settings, load_settings
from landfall.demo import DEMO_CONFIG
from landfall.ports import free_port

if TYPE_CHECKING:
    from tests.hdfs import HdfsCluster
    from tests.object_store import S3Store
    from tests.spark_cluster import SparkCluster

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _secrets_stay_with_their_test() -> Iterator[None]:
    """Loading settings registers their secrets for the whole process (landfall.redact):
    a test's password "null" would mask every later test's "not_null". Each test starts
    with the secrets registered before it."""
    from landfall import redact

    before = redact._registered
    yield
    redact._registered = before


def settings_for(home: Path, **environ: str) -> Settings:
    """The demo config with its state under ``home`` (and any other overrides)."""
    return load_settings(DEMO_CONFIG, environ={"LANDFALL_HOME": str(home), **environ})


def isolated_settings(bootstrap: str, home: Path, prefix: str, **environ: str) -> Settings:
    """Settings on the test broker with topics and consumer groups of their own, created."""
    import uuid

    from landfall.serve import ensure_all_topics

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    overrides = {
        "LANDFALL_KAFKA_BOOTSTRAP": bootstrap,
        "LANDFALL_KAFKA_GROUP_PREFIX": name,
        "LANDFALL_RUNNER__POLL_TIMEOUT_S": "0.2",
    }
    for key in ("landed", "validated", "featurized", "predicted", "reported", "failed",
                "dead_letter"):  # fmt: skip
        overrides[f"LANDFALL_KAFKA__TOPICS__{key.upper()}__NAME"] = f"{name}.{key}"
    settings = settings_for(home, **overrides, **environ)
    ensure_all_topics(settings)
    return settings


@pytest.fixture(scope="session")
def spark(s3_endpoint: S3Store):  # type: ignore[no-untyped-def]
    """One local SparkSession for every stage test, able to use the test object store.

    Jars and Hadoop settings count only when a process's first session starts, so the
    one session has the s3a connector and the store's settings from the start.
    """
    from landfall.config import SparkSettings
    from landfall.object_store import spark_conf
    from landfall.spark import create_spark_session

    session = create_spark_session(
        SparkSettings(master="local[2]"), "landfall-tests", spark_conf(s3_endpoint.settings())
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Store]:
    """An S3-compatible store: $LANDFALL_TEST_S3_ENDPOINT, else moto's server started here."""
    from tests.object_store import configured_store, moto_server

    configured = configured_store()
    if configured is not None:
        yield configured
        return
    with moto_server() as store:
        yield store


@pytest.fixture(scope="session")
def hdfs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HdfsCluster]:
    """An HDFS: $LANDFALL_TEST_HDFS, else a MiniDFSCluster started here (`make hdfs`)."""
    from tests.hdfs import MiniHdfs, configured_hdfs

    configured = configured_hdfs()
    if configured is not None:
        yield configured
        return
    with MiniHdfs(tmp_path_factory.mktemp("hdfs")) as hdfs:
        assert hdfs.cluster is not None
        yield hdfs.cluster


@pytest.fixture
def s3_bucket(s3_endpoint: S3Store) -> str:
    """A new, empty bucket on the test store, for one test."""
    from tests.object_store import new_bucket

    return new_bucket(s3_endpoint)


@pytest.fixture(scope="session")
def registry_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose MLflow registry holds the demo model at @champion."""
    from landfall.demo import register_demo_model

    home = tmp_path_factory.mktemp("registry")
    register_demo_model(settings_for(home))
    return home


@pytest.fixture
def settings(tmp_path: Path, registry_home: Path) -> Settings:
    """Demo settings with a fresh lake per test and the shared model registry."""
    return settings_for(
        tmp_path,
        LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{registry_home / 'mlflow.db'}",
    )


def _docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Apache Kafka: $LANDFALL_KAFKA_BOOTSTRAP, else in Docker, else a local KRaft broker."""
    configured = os.environ.get("LANDFALL_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    if _docker_reachable():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from landfall.broker import LocalKafka

    with LocalKafka(tmp_path_factory.mktemp("broker") / "kafka", port=free_port()) as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """A Spark standalone cluster: $LANDFALL_TEST_SPARK_MASTER, else a master and worker here."""
    from tests.spark_cluster import configured_cluster, start_local_cluster

    configured = configured_cluster()
    if configured is not None:
        yield configured
        return
    cluster = start_local_cluster(tmp_path_factory.mktemp("spark-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


def _watermarks(consumer: Any, partition: Any) -> tuple[int, int]:
    """A partition's low and high offsets. A topic created a moment ago may have no
    leader elected or known yet: asked again for a while (librdkafka does not flag these
    errors retriable here)."""
    import time

    from confluent_kafka import KafkaError, KafkaException

    no_leader_yet = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
    deadline = time.monotonic() + 30
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=30)
        except KafkaException as exc:
            error = exc.args[0]
            waiting = error.code() in no_leader_yet or error.retriable()
            if not waiting or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def topic_messages(settings: Settings, topic: str) -> list:  # type: ignore[type-arg]
    """Every message on ``topic`` right now, undecoded, each partition read to its end."""
    import time
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    from landfall.kafka_clients import kafka_client_config

    consumer = Consumer(
        {**kafka_client_config(settings), "group.id": f"read-{uuid.uuid4().hex[:8]}"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {}
        for number in partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, number))
            if high > low:
                ends[number] = high
        consumer.assign([TopicPartition(topic, number, 0) for number in ends])
        found = []
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            found.append(message)
            if (message.offset() or 0) + 1 >= ends[message.partition() or 0]:
                del ends[message.partition() or 0]
        assert not ends, f"could not read {topic} to its end"
        return found
    finally:
        consumer.close()
