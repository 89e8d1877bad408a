"""End to end beyond one machine's defaults: a Spark cluster and the lake on an object store.

The four services' applications share one standalone worker, and every output, manifest,
commit pointer and report lives in an S3-compatible store (moto's server here), as it
would on a cluster whose executors share no disk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from landfall.api import create_app
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.demo import write_sample_partition
from landfall.events import EventWatcher, publish_data_landed
from landfall.lake import Lake
from landfall.operations import plan_backfill
from landfall.ports import LOOPBACK
from landfall.results import RunHistory
from landfall.serve import SERVICE_NAMES
from landfall.stack import LocalStack
from tests.api_support import new_token, write_token_file
from tests.conftest import isolated_settings
from tests.e2e.conftest import wait_reported
from tests.object_store import S3Store
from tests.spark_cluster import SparkCluster

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

PARTITION = "2026-11-03"
EXECUTOR_MEMORY_MB = 512
PREDICTOR_EXECUTOR_MEMORY_MB = 768


@pytest.fixture
def cluster_stack(
    kafka_bootstrap: str,
    registry_home: Path,
    spark_cluster: SparkCluster,
    s3_endpoint: S3Store,
    s3_bucket: str,
    tmp_path: Path,
) -> Iterator[tuple[Settings, LocalStack, float]]:
    """The four stage services, each driving its own application on the cluster."""
    settings = isolated_settings(
        kafka_bootstrap,
        tmp_path,
        "spark-cluster",
        LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{registry_home / 'mlflow.db'}",
        # As an operator configures it: the environment, over the demo's config file.
        LANDFALL_SPARK_MASTER=spark_cluster.master_url,
        LANDFALL_LAKE_ROOT=f"s3a://{s3_bucket}/lake",
        **s3_endpoint.environ(),
        **{
            # One machine: the drivers listen on loopback, as the master and worker do.
            "LANDFALL_SPARK__CONF__SPARK.DRIVER.HOST": LOOPBACK,
            "LANDFALL_SPARK__CONF__SPARK.EXECUTOR.MEMORY": f"{EXECUTOR_MEMORY_MB}m",
            "LANDFALL_SPARK__SERVICES__PREDICTOR__CONF__SPARK.EXECUTOR.MEMORY": (
                f"{PREDICTOR_EXECUTOR_MEMORY_MB}m"
            ),
        },
    )
    started_ms = time.time() * 1000
    local = LocalStack(settings, services=SERVICE_NAMES, log_dir=tmp_path / "logs")
    live = local.start()
    try:
        yield live, local, started_ms
    finally:
        local.stop()


def test_a_batch_runs_with_every_service_on_the_spark_cluster(
    cluster_stack: tuple[Settings, LocalStack, float], spark_cluster: SparkCluster
) -> None:
    # Long: one scenario against one running stack, told in order.
    settings, local, started_ms = cluster_stack
    assert settings.spark.master.startswith("spark://")
    topics = settings.kafka.topics
    watcher = EventWatcher(settings, [t.name for t in topics.all() if t is not topics.landed])
    try:
        lake = Lake.from_settings(settings)
        sample = write_sample_partition(lake, PARTITION, rows=600)
        began = time.monotonic()
        landed = publish_data_landed(settings, "demo", PARTITION)
        reported = wait_reported(watcher, local, landed["run_id"])
        batch_s = time.monotonic() - began
        by_kind = {kind: rec for _t, kind, rec in watcher.seen if rec["run_id"] == landed["run_id"]}
    finally:
        watcher.close()

    validated = by_kind[EventType.BATCH_VALIDATED]
    predicted = by_kind[EventType.BATCH_PREDICTED]
    assert reported["status"] == "SUCCEEDED", reported
    assert validated["rows_landed"] == sample.rows
    assert validated["rows_quarantined"] == sample.bad_rows > 0
    assert validated["rows_valid"] + validated["rows_quarantined"] == sample.rows
    assert by_kind[EventType.BATCH_FEATURIZED]["rows"] == validated["rows_valid"]
    assert reported["rows_scored"] == validated["rows_valid"]
    # Scored by Python workers of the executors on the worker (mlflow and pyarrow: only
    # the services' interpreter has them), into the lake folder the drivers committed.
    assert not lake.is_local and str(lake.root).startswith("s3a://")
    predictions = pq.read_table(
        lake.fs_path(predicted["output_path"]), filesystem=lake.fs, columns=["id"]
    )
    assert predictions.num_rows == validated["rows_valid"]
    # The committed outputs, as readers who follow the pointers find them.
    committed = lake.committed("demo", "predictions", PARTITION)
    assert committed is not None and committed.path.rel == predicted["output_path"]
    report = json.loads(lake.path(reported["report_path"]).read_bytes())
    assert (report["status"], report["run_id"]) == ("SUCCEEDED", landed["run_id"])
    assert lake.committed("demo", "reports", PARTITION).run_id == landed["run_id"]  # type: ignore[union-attr]
    # Backfill's "already scored?" and the job API read the same store.
    plan = plan_backfill(settings, "demo", PARTITION, PARTITION, missing_only=True)
    assert plan.already_scored == [PARTITION]
    reader = new_token("reader")
    token_file = write_token_file(settings.home / "tokens", [f"read {reader} cluster-test"])
    api_config = settings.api.model_copy(update={"token_file": token_file})
    api = TestClient(create_app(settings.model_copy(update={"api": api_config})))
    api.headers["Authorization"] = f"Bearer {reader}"
    page = api.get(f"/reports/demo/{PARTITION}/report.json")
    assert page.status_code == 200 and page.json()["run_id"] == landed["run_id"]
    view = api.get(f"/batch/{landed['run_id']}").json()
    assert view["outputs"]["predictions"] == predicted["output_path"]
    db = RunHistory.open(settings.results_db_url)
    try:
        (run,) = db.runs_of(landed["batch_id"])
        assert (run["status"], run["rows_scored"]) == ("SUCCEEDED", validated["rows_valid"])
    finally:
        db.close()

    # The master ran the four services' applications, each with an executor on the
    # worker; this run's, not an earlier run's of a shared cluster.
    apps = {
        app["name"]: app for app in spark_cluster.applications() if app["starttime"] >= started_ms
    }
    names = {f"landfall-{service}" for service in SERVICE_NAMES}
    assert names <= set(apps), f"applications on the master: {sorted(apps)}"
    executors = spark_cluster.executors_by_app()
    for name in sorted(names):
        app = apps[name]
        assert executors.get(app["id"], 0) >= 1, f"{name} ran no executor on the worker"
        # Alive, each holds the one core the spark:// default grants it, so four fit.
        assert (app["state"], app["cores"]) == ("RUNNING", 1), app
        own_memory = name == "landfall-predictor"
        expected_mb = PREDICTOR_EXECUTOR_MEMORY_MB if own_memory else EXECUTOR_MEMORY_MB
        assert app["memoryperexecutor"] == expected_mb, app
    print(
        f"Spark cluster started in {spark_cluster.started_in_s or 0:.1f}s; "
        f"batch of {sample.rows} rows reported in {batch_s:.1f}s"
    )
