"""Drift from stored feature summaries: the same figures as from the feature tables.

The tables here are small: the three references together hold fewer values than a
KLL sketch keeps (k=1000), so even the merged sketch holds every value and the
reference's deciles and shares are exact: the PSI must equal the one computed with
numpy from the full tables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from landfall.config import Settings
from landfall.contracts import EventType
from landfall.lake import MANIFEST_NAME, Lake
from landfall.stage import StageContext
from services.reporter.drift import (
    FEATURE_SUMMARY_NAME,
    feature_drift,
    population_stability_index,
    write_feature_summaries,
)
from services.reporter.service import BatchReporter
from tests.reporting_support import DATASET, write_run

PREVIOUS = ["2026-11-01", "2026-11-02", "2026-11-03"]
PARTITION = "2026-11-04"
# 302 landed rows, 287 valid, 861 in the reference: no decile falls on a whole rank.
ROWS = 302


def _table(lake: Path, partition: str) -> dict[str, np.ndarray]:
    table = pq.read_table(lake / DATASET / "features" / partition / "part-0.parquet")
    return {name: table.column(name).to_numpy() for name in ("f1", "f2", "is_red")}


def _exact_psi(lake: Path, previous: list[str], partition: str) -> dict[str, float]:
    """PSI per feature from the full tables: the reference's exact deciles as bin edges."""
    references = [_table(lake, p) for p in previous]
    current = _table(lake, partition)
    psi = {}
    for column in ("f1", "f2", "is_red"):
        reference = np.sort(np.concatenate([r[column] for r in references]))
        ranks = [math.ceil(i / 10 * len(reference)) - 1 for i in range(1, 10)]
        edges = np.array(sorted({float(reference[r]) for r in ranks}))
        # A value's bin: how many edges it exceeds.
        expected = np.bincount(np.searchsorted(edges, reference), minlength=len(edges) + 1)
        actual = np.bincount(np.searchsorted(edges, current[column]), minlength=len(edges) + 1)
        shares = [counts / counts.sum() for counts in (expected, actual)]
        psi[column] = round(population_stability_index(list(shares[0]), list(shares[1])), 6)
    return psi


def _drift(lake: Lake) -> tuple[dict, dict]:
    return feature_drift(
        lake,
        DATASET,
        PARTITION,
        lake.partition_dir(DATASET, "features", PARTITION),
        references=7,
        threshold=0.2,
        exclude={"id"},
    )


def _store_report(lake: Lake, partition: str, summaries: dict) -> None:
    """A committed report of ``partition`` carrying ``summaries`` (in place, as before)."""
    folder = lake.partition_root(DATASET, "reports", partition)
    folder.mkdir(parents=True, exist_ok=True)
    write_feature_summaries(folder, summaries)
    (folder / MANIFEST_NAME).write_text(json.dumps({"run_id": f"report-{partition}"}))


def test_drift_from_stored_summaries_equals_drift_from_the_tables(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    for seed, partition in enumerate(PREVIOUS):
        write_run(root, partition, rows=ROWS, seed=seed)
    write_run(root, PARTITION, rows=ROWS, shift=2.0, seed=9)
    lake = Lake(root)
    exact = _exact_psi(root, PREVIOUS, PARTITION)
    assert exact["f1"] > 1.0 and exact["f2"] < 0.2  # the data drifts where it should

    # An older lake: no report has a summary, so each reference's is made from its table.
    cold, kept = _drift(lake)
    assert {c: f["psi"] for c, f in cold["features"].items()} == pytest.approx(exact, abs=1e-6)
    assert cold["flagged"] == ["f1"]
    assert sorted(kept) == [*PREVIOUS, PARTITION]
    assert kept[PARTITION]["rows"] == ROWS - ROWS // 20

    # Each reference's own report now carries its summary; their tables are gone, so
    # the drift can only come from the summaries.
    for partition in PREVIOUS:
        _store_report(lake, partition, {partition: kept[partition]})
        for data in (root / DATASET / "features" / partition).glob("*.parquet"):
            data.unlink()
    warm, kept_again = _drift(lake)
    assert warm == cold
    assert list(kept_again) == [PARTITION]  # nothing new to keep for the references


def test_a_summary_of_features_made_again_is_not_used(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    for seed, partition in enumerate(PREVIOUS):
        write_run(root, partition, rows=ROWS, seed=seed)
    write_run(root, PARTITION, rows=ROWS, shift=2.0, seed=9)
    lake = Lake(root)
    _, kept = _drift(lake)
    for partition in PREVIOUS:
        _store_report(lake, partition, {partition: kept[partition]})
    # The first reference is featurized again (new data, new manifest) after its report.
    write_run(root, PREVIOUS[0], rows=ROWS, shift=-3.0, seed=5)
    drift, kept_again = _drift(lake)
    assert sorted(kept_again) == [PREVIOUS[0], PARTITION]
    assert {c: f["psi"] for c, f in drift["features"].items()} == pytest.approx(
        _exact_psi(root, PREVIOUS, PARTITION), abs=1e-6
    )


def test_reports_store_summaries_and_carry_those_of_older_partitions(
    spark, settings: Settings
) -> None:
    for seed, partition in enumerate(PREVIOUS):
        write_run(settings.lake, partition, rows=ROWS, seed=seed)  # no reports: an older lake
    runs = [write_run(settings.lake, p, rows=ROWS, seed=9 + i) for i, p in enumerate(
        [PARTITION, "2026-11-05"]
    )]  # fmt: skip
    reporter = BatchReporter(StageContext(settings, "reporter", spark=spark))
    lake = reporter.context.lake
    stored = []
    try:
        for run in runs:
            reporter.report(EventType.BATCH_PREDICTED, run.predicted, {"stages": {}})
            folder = lake.partition_dir(DATASET, "reports", run.predicted["partition"])
            stored.append(json.loads((folder / FEATURE_SUMMARY_NAME).read_text()))
            report = json.loads((folder / "report.json").read_text())
            assert "feature_summaries" not in report and report["drift"]["features"]
    finally:
        reporter.results.dispose()
    # The first report made the references' summaries from their tables and kept them.
    assert sorted(stored[0]["partitions"]) == [*PREVIOUS, PARTITION]
    # The next one found them all with that report (or its own partition's): it keeps
    # the older ones again, so they stay within reach while the window holds them.
    assert sorted(stored[1]["partitions"]) == [*PREVIOUS, "2026-11-05"]
    assert stored[1]["partitions"]["2026-11-01"] == stored[0]["partitions"]["2026-11-01"]


def test_a_scan_in_spark_tasks_counts_what_one_in_this_process_counts(
    spark, tmp_path: Path
) -> None:
    import pyarrow as pa

    from landfall.stage import spark_job_group
    from services.reporter.feature_scan import ScanTasks, scan_features

    lake = Lake(tmp_path / "lake")
    folder = lake.partition_dir("d", "features", "2026-11-01")
    folder.mkdir(parents=True)
    generator = np.random.default_rng(5)
    everything = []
    for index in range(2):  # two files of three row groups: two tasks
        values = generator.normal(size=3000)
        values[::97] = np.nan
        nulls = np.zeros(3000, dtype=bool)
        nulls[5::89] = True
        everything.append(values[~nulls])
        table = pa.table(
            {
                "id": [f"r{index}-{i}" for i in range(3000)],
                "f": pa.array(values, mask=nulls),
                "g": pa.array(generator.integers(0, 5, 3000), pa.int32()),
            }
        )
        pq.write_table(table, f"{folder}/part-{index}.parquet", row_group_size=1000)
    edges = {"f": [-1.0, 0.0, 1.0], "g": [2.0]}
    alone = scan_features(folder, {"id"}, edges, 200)
    with spark_job_group(spark, "scan") as jobs:
        split = scan_features(folder, {"id"}, edges, 200, ScanTasks(spark, min_rows=1))
        assert jobs() == 1  # the tasks did run
    assert split.rows == alone.rows == 6000
    for column in ("f", "g"):
        one, many = alone.columns[column], split.columns[column]
        assert (many.nulls, many.nans) == (one.nulls, one.nans)
        assert list(many.at_most_edges) == list(one.at_most_edges)
        assert many.sketch.n == one.sketch.n
        assert many.sketch.get_min_value() == one.sketch.get_min_value()
        assert many.sketch.get_max_value() == one.sketch.get_max_value()
    numbers = np.concatenate(everything)  # the values present, NaN among them
    assert alone.columns["f"].nulls == 6000 - len(numbers)
    assert alone.columns["f"].nans == np.count_nonzero(np.isnan(numbers)) > 0
    numbers = numbers[~np.isnan(numbers)]
    assert list(alone.columns["f"].at_most_edges) == [
        np.count_nonzero(numbers <= e) for e in edges["f"]
    ]
    # The merged sketch's median is the data's, within KLL's rank error at k=200.
    median = split.columns["f"].sketch.get_quantile(0.5)
    assert abs(np.mean(numbers <= median) - 0.5) < 0.02
