"""The end-to-end benchmark (bench/e2e_bench.py) in small, so it cannot rot.

One 1k-row partition through the real stack (the session's Kafka, the four services
as processes, a registered HistGradientBoosting model), the single process and the
seed's way: the JSON must carry every figure and the outputs must match.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench import e2e_checks, e2e_dataset
from tests.conftest import REPO

SERVICES = {"validator", "featurizer", "predictor", "reporter"}


@pytest.mark.broker
@pytest.mark.e2e
def test_the_e2e_bench_reports_every_figure_and_matching_outputs(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Long: one run of the bench, then each figure it must report.
    results = tmp_path / "e2e.json"
    command = [sys.executable, str(REPO / "bench" / "e2e_bench.py"), "--rows", "1000"]
    command += ["--idle-settle-s", "1", "2", "--repeat", "1", "--warmup-rows", "0"]
    command += ["--timeout", "600"]
    command += ["--bootstrap", kafka_bootstrap, "--workdir", str(tmp_path / "work")]
    command += ["--json", str(results)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| rows | landfall, event → batch-reported |" in done.stdout

    result = json.loads(results.read_text())
    assert result["outputs_match"] is True
    assert result["stack"]["start_seconds"] > 0
    (size,) = result["sizes"]
    # 7 of every 500 rows are bad: 14 of 1000, each bad in its own known way.
    assert (size["rows"], size["bad_rows"]) == (1000, 14)
    for way in e2e_checks.WAYS:
        figures = size[way]
        assert figures["seconds"] > 0 and figures["rows_per_s"] > 0
        assert len(figures["runs"]) == 1
    for way in ("plain", "seed"):  # their time is their stages'
        assert size[way]["seconds"] == pytest.approx(sum(size[way]["stages"].values()))
    assert set(size["landfall"]["stages"]) == set(e2e_checks.STAGES)
    assert set(size["plain"]["stages"]) == set(size["seed"]["stages"]) == set(e2e_checks.STAGES[:3])
    landfall = size["landfall"]
    # The stages and the hops between them fill the time from data-landed to reported.
    inside = sum(landfall["stages"].values()) + sum(landfall["hops_ms"][0].values()) / 1000
    assert inside <= landfall["seconds"] + 0.01
    assert landfall["rows_landed"] == 1000 and landfall["rows_scored"] == 986
    assert set(landfall["peak_rss_mib"]) == set(landfall["idle_rss_mib"]) == SERVICES
    # Idle is read at each settle point; the last is the size's idle figure.
    assert list(landfall["idle_rss_mib_by_s"]) == ["1", "2"]
    assert landfall["idle_rss_mib_by_s"]["2"] == landfall["idle_rss_mib"]
    assert "| 1,000 | 1 | " in done.stdout and "| 1,000 | 2 | " in done.stdout
    # A service tree holds at least a Python interpreter and a Spark JVM.
    assert all(mib > 100 for mib in landfall["peak_rss_mib"].values())
    assert size["plain"]["peak_rss_mib"] > 0 and size["seed"]["peak_rss_mib"] > 0
    (hops,) = landfall["hops_ms"]
    assert set(hops) == set(e2e_checks.HOPS)
    assert result["hops"]["count"] == 4
    assert result["hops"]["p50_ms"] <= result["hops"]["p99_ms"] <= result["hops"]["max_ms"]
    ratios = size["ratios"]
    assert ratios["landfall_vs_plain"] == pytest.approx(
        landfall["seconds"] / size["plain"]["seconds"]
    )
    assert ratios["seed_vs_landfall"] == pytest.approx(1 / ratios["landfall_vs_seed"])
    for way in ("landfall", "seed"):
        checks = size["outputs"][way]
        assert checks["match"] is True, checks
        assert (checks["valid_rows"], checks["quarantined_rows"], checks["scored_rows"]) == (
            986,
            14,
            986,
        )
        assert checks["quarantine_reasons"] == {
            "cat_a_known": 2,
            "id_format": 2,
            "id_unique": 4,
            "not_null:id": 2,
            "not_null:x1": 2,
            "x0_range": 2,
        }
        assert checks["max_probability_difference"] <= e2e_checks.PROBABILITY_TOLERANCE


def _write_outputs(root: Path, valid: pa.Table, quarantined: pa.Table, scored: pa.Table) -> dict:
    found = {}
    for zone, table in (("validated", valid), ("quarantine", quarantined),
                        ("predictions", scored)):  # fmt: skip
        (root / zone).mkdir(parents=True)
        pq.write_table(table, root / zone / "part-00000.parquet")
        found[zone] = root / zone
    return found


def test_the_bench_check_catches_a_probability_off_by_more_than_the_tolerance(
    tmp_path: Path,
) -> None:
    valid, quarantined = e2e_dataset.plain_validate(e2e_dataset.synthetic_rows(1000, seed=1))
    ids = valid.column("id")
    probability = pa.array([0.25] * len(ids))
    scored = pa.table(
        {"id": ids, "prediction": pa.array([0] * len(ids)), "probability_0": probability}
    )
    expected = _write_outputs(tmp_path / "expected", valid, quarantined, scored)
    same = _write_outputs(tmp_path / "same", valid, quarantined, scored)
    assert e2e_checks.compare_outputs(expected, same)["match"] is True

    nudged = scored.set_column(2, "probability_0", pc.add(probability, 1e-5))
    off = _write_outputs(tmp_path / "off", valid, quarantined, nudged)
    checks = e2e_checks.compare_outputs(expected, off)
    assert checks["match"] is False and checks["probabilities_equal"] is False
    assert checks["max_probability_difference"] == pytest.approx(1e-5)

    reasons = quarantined.column("_quarantine_reasons").to_pylist()
    reasons[0] = ["x0_range"]
    relabelled = quarantined.set_column(
        quarantined.num_columns - 1, "_quarantine_reasons", pa.array(reasons)
    )
    wrong = _write_outputs(tmp_path / "wrong", valid, relabelled, scored)
    assert e2e_checks.compare_outputs(expected, wrong)["quarantine_equal"] is False
