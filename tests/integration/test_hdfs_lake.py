"""The lake on HDFS, against a real NameNode and DataNode (tests/hdfs.py).

Spark writes and reads ``hdfs://`` with the Hadoop client pyspark bundles; landfall's
own files and the arrow side go through WebHDFS (landfall/webhdfs.py). Both must see
the same files, every file landfall writes must appear whole, and a commit pointer
must be created once: of two writers racing for it, exactly one wins.
The commit protocol itself runs on HDFS in tests/integration/test_lake_store.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from pyarrow import fs as pafs

from landfall.config import Settings
from landfall.contracts import EventType, new_event
from landfall.errors import RetryableError, StageFailedError
from landfall.ingress import batch_id_for
from landfall.lake import COMMITS_DIR, Lake
from landfall.ports import free_port
from landfall.run_ids import new_run_id
from landfall.webhdfs import handler_of
from tests.conftest import settings_for
from tests.hdfs import HdfsCluster

PARTITION = "2026-11-01"


def _settings(tmp_path: Path, hdfs: HdfsCluster, **environ: str) -> Settings:
    return settings_for(
        tmp_path, LANDFALL_LAKE_ROOT=hdfs.lake_root(), **{**hdfs.environ(), **environ}
    )


@pytest.fixture
def hdfs_lake(tmp_path: Path, hdfs_cluster: HdfsCluster) -> Lake:
    return Lake.from_settings(_settings(tmp_path, hdfs_cluster))


def _hidden(lake: Lake, folder: str) -> list[str]:
    return [p.name for p in lake.path(folder).iterdir() if p.name.startswith(".")]


def test_spark_and_arrow_see_the_same_files(spark, hdfs_lake: Lake) -> None:  # type: ignore[no-untyped-def]
    by_spark = hdfs_lake.path("scores/spark")
    assert str(by_spark).startswith("hdfs://")
    spark.range(0, 3000, numPartitions=3).selectExpr("id", "id * 0.5 AS score").write.parquet(
        str(by_spark)
    )
    table = ds.dataset(by_spark._fs_path, filesystem=hdfs_lake.fs, format="parquet").to_table()
    assert table.num_rows == 3000
    assert sorted(table.column("id").to_pylist()) == list(range(3000))

    by_arrow = hdfs_lake.path("scores/arrow")
    ds.write_dataset(
        pa.table({"id": list(range(100)), "label": ["a", "b"] * 50}),
        by_arrow._fs_path,
        filesystem=hdfs_lake.fs,
        format="parquet",
    )
    back = spark.read.parquet(str(by_arrow))
    assert back.count() == 100 and back.where("label = 'b'").count() == 50
    # Written under a hidden name and renamed into place: nothing else is left.
    assert [p.name for p in by_arrow.iterdir()] == ["part-0.parquet"]


def test_a_file_is_replaced_whole_and_a_pointer_created_once(hdfs_lake: Lake) -> None:
    report = hdfs_lake.path("demo/reports/x/report.json")
    report.write_text('{"status": "RUNNING"}')
    report.write_text('{"status": "SUCCEEDED"}')
    assert json.loads(report.read_text()) == {"status": "SUCCEEDED"}

    pointer = f"demo/validated/{PARTITION}/{COMMITS_DIR}/0001.json"
    hdfs_lake.create_new(pointer, b'{"run_id": "first"}')
    with pytest.raises(FileExistsError, match="exists already"):
        hdfs_lake.create_new(pointer, b'{"run_id": "second"}')

    assert hdfs_lake.path(pointer).read_bytes() == b'{"run_id": "first"}'
    assert _hidden(hdfs_lake, f"demo/validated/{PARTITION}/{COMMITS_DIR}") == []
    assert _hidden(hdfs_lake, "demo/reports/x") == []


def test_of_two_writers_of_one_run_the_first_pointer_stands(
    hdfs_lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = new_run_id()
    outputs = []
    for text in ("first", "second"):
        output = hdfs_lake.stage_output("demo", "validated", PARTITION, run_id)
        (output.staging / "part-0.parquet").write_text(text)
        outputs.append(output)
    first, second = outputs
    committed = hdfs_lake.commit_partition(first, {"run_id": run_id})
    # The second writer looked at the partition's commits before the first's pointer
    # landed: only the create of its own pointer can tell it that it lost.
    real_commits, looks = hdfs_lake.commits, []

    def first_look_too_early(*args: str) -> list:  # type: ignore[type-arg]
        looks.append(args)
        return [] if len(looks) == 1 else real_commits(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(hdfs_lake, "commits", first_look_too_early)
    lost = hdfs_lake.commit_partition(second, {"run_id": run_id})
    monkeypatch.undo()

    assert lost == committed == first.staging
    assert not second.staging.exists()
    (only,) = hdfs_lake.commits("demo", "validated", PARTITION)
    assert only.path == first.staging
    assert (only.path / "part-0.parquet").read_text() == "first"


def test_an_unreachable_webhdfs_is_retryable_and_names_the_setting(
    tmp_path: Path, hdfs_cluster: HdfsCluster
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    lake = Lake.from_settings(_settings(tmp_path, hdfs_cluster, LANDFALL_HDFS__WEBHDFS=nowhere))

    with pytest.raises(RetryableError) as caught:
        lake.check_usable()

    message = str(caught.value)
    assert "unreachable" in message and nowhere in message
    assert "hdfs.webhdfs" in message and "lake_root hdfs://" in message


def test_a_root_that_is_a_file_is_named(hdfs_lake: Lake) -> None:
    handler = handler_of(hdfs_lake.fs)
    assert handler is not None
    handler.put(hdfs_lake.fs_path(""), b"not a folder", overwrite=False)

    with pytest.raises(StageFailedError, match=r"lake_root hdfs://\S+/lake is a file"):
        hdfs_lake.check_usable()
    assert hdfs_lake.fs.get_file_info(hdfs_lake.fs_path("")).type == pafs.FileType.File


def test_the_validator_stage_commits_its_output_on_hdfs(  # type: ignore[no-untyped-def]
    spark, tmp_path: Path, hdfs_cluster: HdfsCluster
) -> None:
    from landfall.demo import write_sample_partition
    from landfall.stage import StageContext
    from services.validator.service import ValidatorService

    settings = _settings(tmp_path, hdfs_cluster)
    context = StageContext(settings, "validator", spark=spark)
    sample = write_sample_partition(context.lake, PARTITION, rows=2000)
    event = new_event(
        EventType.DATA_LANDED,
        dataset="demo",
        partition=PARTITION,
        batch_id=batch_id_for("demo", PARTITION),
        run_id=new_run_id(),
        producer="test",
    )

    ValidatorService(context).handle(EventType.DATA_LANDED, event)

    lake = Lake.from_settings(settings)
    valid = lake.committed("demo", "validated", PARTITION)
    quarantined = lake.committed("demo", "quarantine", PARTITION)
    assert valid is not None and quarantined is not None
    assert valid.run_id == event["run_id"] and "/_runs/" in valid.path.rel
    rows = spark.read.parquet(str(valid.path)).count()
    bad = spark.read.parquet(str(quarantined.path)).count()
    assert (rows, bad) == (sample.rows - sample.bad_rows, sample.bad_rows)
    # Nothing of the attempt is left in flight, and no temporary file anywhere.
    assert not lake.path("_landfall/inflight/validator").files()
    assert not [p.rel for p in lake.root.files() if p.name.startswith(".")]


def test_the_arrow_engine_scores_a_partition_on_hdfs(  # type: ignore[no-untyped-def]
    spark, tmp_path: Path, hdfs_cluster: HdfsCluster, registry_home: Path
) -> None:
    from landfall.config import ScoringSettings
    from landfall.demo import demo_feature_frame
    from landfall.object_store import lake_store_settings
    from landfall.registry import configure_mlflow, resolve_model_version
    from services.predictor.stage import score_partition

    settings = _settings(
        tmp_path,
        hdfs_cluster,
        LANDFALL_MLFLOW__TRACKING_URI=f"sqlite:///{registry_home / 'mlflow.db'}",
    )
    configure_mlflow(settings)
    lake, dataset = Lake.from_settings(settings), settings.dataset("demo")
    frame = demo_feature_frame(600, seed=4)
    frame.insert(0, "id", [f"r{i:05d}" for i in range(len(frame))])
    features, predictions = lake.path("scoring/features"), lake.path("scoring/predictions")
    spark.createDataFrame(frame).repartition(2).write.parquet(str(features))

    result = score_partition(
        spark,
        dataset,
        resolve_model_version(settings, dataset.model),
        features,
        predictions,
        scoring=ScoringSettings(engine="arrow", rows_per_task=200),
        store=lake_store_settings(settings.lake_uri, settings.object_store, settings.hdfs),
    )

    # Every task wrote its part file through WebHDFS; Spark reads them all from hdfs://.
    written = spark.read.parquet(str(predictions))
    assert result.rows == written.count() == 600
    assert sorted(r.id for r in written.select("id").collect()) == sorted(frame.id)
    names = [p.name for p in predictions.iterdir()]
    assert names and all(n.startswith("part-") and n.endswith(".parquet") for n in names)
