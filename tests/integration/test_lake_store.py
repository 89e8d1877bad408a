"""The commit protocol on a local lake, an S3-compatible store and HDFS alike."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from landfall.config import Settings
from landfall.errors import PathOutsideLakeError
from landfall.lake import MANIFEST_NAME, Lake, PartitionOutput, StaleCommitError, read_manifest
from landfall.lake_gc import collect_garbage
from landfall.run_ids import new_run_id
from tests.conftest import settings_for
from tests.hdfs import HdfsCluster
from tests.object_store import S3Store

PARTITION = "2026-11-01"


@pytest.fixture(params=["local", "s3", "hdfs"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lake]:
    if request.param == "local":
        yield Lake.from_settings(settings_for(tmp_path))
        return
    if request.param == "hdfs":
        hdfs: HdfsCluster = request.getfixturevalue("hdfs_cluster")
        yield Lake.from_settings(
            settings_for(tmp_path, LANDFALL_LAKE_ROOT=hdfs.lake_root(), **hdfs.environ())
        )
        return
    store: S3Store = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    settings: Settings = settings_for(
        tmp_path, LANDFALL_LAKE_ROOT=f"s3a://{bucket}/lake", **store.environ()
    )
    yield Lake.from_settings(settings)


def _attempt(lake: Lake, run_id: str, text: str, zone: str = "validated") -> PartitionOutput:
    output = lake.stage_output("demo", zone, PARTITION, run_id)  # type: ignore[arg-type]
    output.staging.mkdir(parents=True)
    (output.staging / "part-0.parquet").write_text(text)
    return output


def test_commits_fence_stale_writers_and_keep_history(lake: Lake) -> None:
    older, newer, newest = new_run_id(1_000), new_run_id(2_000), new_run_id(3_000)
    late = _attempt(lake, older, "stale")
    first = lake.commit_partition(_attempt(lake, newer, "newer"), {"run_id": newer})
    with pytest.raises(StaleCommitError):
        lake.commit_partition(late, {"run_id": older})
    assert not late.staging.exists()
    failed = lake.commit_partition(_attempt(lake, newest, "failed"), {}, succeeded=False)

    current = lake.partition_dir("demo", "validated", PARTITION)
    assert current == first and (current / "part-0.parquet").read_text() == "newer"
    assert read_manifest(current)["run_id"] == newer
    assert [(c.run_id, c.succeeded) for c in lake.commits("demo", "validated", PARTITION)] == [
        (newer, True),
        (newest, False),
    ]
    assert failed.exists()
    assert lake.committed_partitions("demo", "validated") == {PARTITION: first}


def test_reads_are_confined_on_every_store(lake: Lake) -> None:
    with pytest.raises(PathOutsideLakeError, match="inside demo/raw/"):
        lake.input_dir("demo/validated/x", dataset="demo", zone="raw", partition=PARTITION)
    with pytest.raises(PathOutsideLakeError, match="outside the lake root"):
        lake.input_dir("../escape", dataset="demo", zone="raw", partition=PARTITION)


def test_gc_on_every_store(lake: Lake) -> None:
    runs = [new_run_id(1_000 * i) for i in range(1, 4)]
    outputs = [lake.commit_partition(_attempt(lake, r, r, "features"), {}) for r in runs]
    plan = collect_garbage(lake, ["demo"], now=time.time() + 30 * 86_400)
    assert sorted(plan.old_runs) == sorted(p.rel for p in outputs[:2])
    assert [p.exists() for p in outputs] == [False, False, True]
    assert [c.run_id for c in lake.commits("demo", "features", PARTITION)] == runs[2:]
    assert (outputs[2] / MANIFEST_NAME).exists()
