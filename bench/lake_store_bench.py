"""Spark writing a partition to a local folder beside an S3-compatible store.

    python bench/lake_store_bench.py --rows 1000000

Times ``DataFrame.write.parquet`` (tasks, then Spark's own job commit) of ``--rows``
rows (an id and 20 doubles, cached first so only the write is timed) into a stage's
attempt folder, then landfall's commit of it (lake.py: manifest, then pointer), in a
local lake and in an ``s3a://`` lake on moto's S3 server started here (or the store named by
``LANDFALL_TEST_S3_ENDPOINT`` and its keys, as for the tests). Each write goes to a new
path; ``--repeat`` writes per target, and the table gives each one's seconds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from landfall.config import SparkSettings
from landfall.lake import Lake
from landfall.object_store import arrow_filesystem, spark_conf
from landfall.run_ids import new_run_id
from landfall.spark import create_spark_session
from tests.object_store import S3Store, configured_store, moto_server, new_bucket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with ExitStack() as stack:
        store = configured_store() or stack.enter_context(moto_server())
        bucket = new_bucket(store, "bench")
        spark = create_spark_session(
            SparkSettings(master="local[2]"), "landfall-bench", spark_conf(store.settings())
        )
        frame = spark.range(0, args.rows, numPartitions=2).selectExpr(
            "id", *[f"rand({seed}) AS x{seed}" for seed in range(20)]
        )
        frame.cache().count()
        local = Path(tempfile.mkdtemp(prefix="landfall-bench-"))
        stack.callback(shutil.rmtree, local, ignore_errors=True)
        # One write of each first: the JVM's and the connector's warm-up is not timed.
        frame.write.parquet(str(local / "warm"))
        frame.write.parquet(f"s3a://{bucket}/warm")
        lakes = {
            "local folder": Lake(local / "lake"),
            "s3a (object store)": _store_lake(store, bucket),
        }
        timings: dict[str, list[float]] = {target: [] for target in lakes}
        commits: dict[str, list[float]] = {target: [] for target in lakes}
        for _attempt in range(args.repeat):
            for target, lake in lakes.items():
                # As a stage does it: write into a fresh attempt, then commit it (manifest
                # and pointer, two small PUTs, and one listing of the partition's pointers).
                output = lake.stage_output("bench", "features", "2026-11-01", new_run_id())
                started = time.perf_counter()
                frame.write.parquet(str(output.staging))
                timings[target].append(time.perf_counter() - started)
                started = time.perf_counter()
                lake.commit_partition(output, {"rows": args.rows})
                commits[target].append(time.perf_counter() - started)
        spark.stop()
    print(f"| target | rows | write s (each of {args.repeat}) | median | commit (median) |")
    print("|---|---:|---|---:|---:|")
    for target, seconds in timings.items():
        each = ", ".join(f"{s:.1f}" for s in seconds)
        print(
            f"| {target} | {args.rows:,} | {each} | {statistics.median(seconds):.1f} "
            f"| {statistics.median(commits[target]) * 1000:.0f} ms |"
        )


def _store_lake(store: S3Store, bucket: str) -> Lake:
    fs, root = arrow_filesystem(f"s3a://{bucket}/lake", store.settings())
    return Lake(f"s3a://{bucket}/lake", fs=fs, fs_root=root)


if __name__ == "__main__":
    main()
