"""The end-to-end benchmark's checks and tables: landfall's outputs against one process's.

Valid ids, quarantined ids with their reasons, and predictions (the class, and each
probability within PROBABILITY_TOLERANCE) are compared; the figures become the Markdown
tables bench/README.md keeps.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.e2e_dataset import DATASET, way_dir

PROBABILITY_TOLERANCE = 1e-6
STAGES = ("validation", "featurization", "prediction", "reporting")
HOPS = ("landed>validation", "validation>featurization", "featurization>prediction",
        "prediction>reporting")  # fmt: skip
WAYS = ("landfall", "plain", "seed")


# ---------------------------------------------------------------------- the checks


def _read(directory: Path) -> pa.Table:
    return pq.read_table(str(directory))


def _sorted_by_id(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))


def _quarantine_keys(table: pa.Table) -> Counter[tuple[str | None, tuple[str, ...]]]:
    ids = table.column("id").to_pylist()
    reasons = table.column("_quarantine_reasons").to_pylist()
    return Counter((i, tuple(r)) for i, r in zip(ids, reasons, strict=True))


def compare_outputs(expected: dict[str, Path], actual: dict[str, Path]) -> dict[str, Any]:
    """The valid ids, quarantined ids and reasons, and predictions of ``actual`` vs ``expected``.

    Keys of both: ``validated``, ``quarantine``, ``predictions`` (folders). Quarantined
    rows are compared as a multiset of (id, reasons): a missing or repeated id may
    occur in more than one row there.
    """
    checks: dict[str, Any] = {}
    if "validated" in actual:
        ours = _read(actual["validated"]).column("id").combine_chunks()
        theirs = _read(expected["validated"]).column("id").combine_chunks()
        checks["valid_rows"] = len(ours)
        checks["valid_ids_equal"] = ours.take(pc.sort_indices(ours)).equals(
            theirs.take(pc.sort_indices(theirs))
        )
    if "quarantine" in actual:
        ours_q = _quarantine_keys(_read(actual["quarantine"]))
        theirs_q = _quarantine_keys(_read(expected["quarantine"]))
        checks["quarantined_rows"] = sum(ours_q.values())
        checks["quarantine_equal"] = ours_q == theirs_q
        reasons: Counter[str] = Counter()
        for (_, broken), count in ours_q.items():
            for name in broken:
                reasons[name] += count
        checks["quarantine_reasons"] = dict(sorted(reasons.items()))
    ours_p = _sorted_by_id(_read(actual["predictions"]))
    theirs_p = _sorted_by_id(_read(expected["predictions"]))
    checks["scored_rows"] = ours_p.num_rows
    same_ids = ours_p.column("id").equals(theirs_p.column("id"))
    checks["prediction_ids_equal"] = same_ids
    probabilities = [c for c in theirs_p.column_names if c.startswith("probability_")]
    worst = float("inf")
    if same_ids and all(c in ours_p.column_names for c in probabilities):
        worst = max(
            float(pc.max(pc.abs(pc.subtract(ours_p.column(c), theirs_p.column(c)))).as_py() or 0)
            for c in probabilities
        )
        expected_classes = theirs_p.column("prediction")
        classes = pc.cast(ours_p.column("prediction"), expected_classes.type)
        checks["classes_equal"] = classes.equals(expected_classes)
    else:
        checks["classes_equal"] = False
    checks["max_probability_difference"] = worst
    checks["probabilities_equal"] = worst <= PROBABILITY_TOLERANCE
    checks["match"] = all(
        checks[k]
        for k in ("valid_ids_equal", "quarantine_equal", "prediction_ids_equal",
                  "classes_equal", "probabilities_equal") if k in checks
    )  # fmt: skip
    return checks


def landfall_outputs(settings: Any, partition: str, run_id: str) -> dict[str, Path]:
    """Where the run committed its validated rows, quarantine and predictions."""
    from landfall.lake import Lake

    lake = Lake.from_settings(settings)
    found = {}
    for zone in ("validated", "quarantine", "predictions"):
        path = lake.output_of_run(DATASET, zone, partition, run_id)  # type: ignore[arg-type]
        if path is None:
            raise RuntimeError(f"run {run_id} committed no {zone} output for {partition}")
        found[zone] = Path(str(path))
    return found


def baseline_outputs(workdir: Path, way: str, partition: str) -> dict[str, Path]:
    """Where a baseline wrote one partition's outputs."""
    out = way_dir(workdir, way, partition)
    return {zone: out / zone for zone in ("validated", "quarantine", "predictions")}


# ---------------------------------------------------------------------- reporting


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), None without values."""
    return float(np.percentile(values, q)) if values else None


def summarise_hops(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Hop overhead over every timed run: p50, p99, and each hop's median."""
    every = [run for size in sizes for run in size["landfall"]["hops_ms"]]
    values = [ms for run in every for ms in run.values()]
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
        "median_by_hop_ms": {hop: percentile([run[hop] for run in every], 50) for hop in HOPS},
    }


def markdown(result: dict[str, Any]) -> str:
    """The tables for bench/README.md."""
    lines = [
        "| rows | landfall, event → batch-reported | rows/s | one process | rows/s "
        "| seed's way | rows/s | landfall / one process | seed / landfall | outputs equal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in result["sizes"]:
        lf, plain, seed, ratio = size["landfall"], size["plain"], size["seed"], size["ratios"]
        runs = ", ".join(f"{s:.1f}" for s in lf["runs"])
        lines.append(
            f"| {size['rows']:,} | {lf['seconds']:.1f} s ({runs}) | {lf['rows_per_s']:,.0f} "
            f"| {plain['seconds']:.1f} s | {plain['rows_per_s']:,.0f} "
            f"| {seed['seconds']:.1f} s | {seed['rows_per_s']:,.0f} "
            f"| {ratio['landfall_vs_plain']:.2f}x | {ratio['seed_vs_landfall']:.2f}x "
            f"| {'yes' if size['outputs_match'] else 'NO'} |"
        )
    lines += ["", "| rows | way | " + " | ".join(STAGES) + " |", "|---:|---|" + "---:|" * 4]
    for size in result["sizes"]:
        for way in WAYS:
            stages = size[way]["stages"]
            cells = " | ".join(f"{stages[s]:.2f} s" if s in stages else "—" for s in STAGES)
            lines.append(f"| {size['rows']:,} | {way} | {cells} |")
    hops = result["hops"]
    by_hop = ", ".join(f"{hop} {ms:.0f}" for hop, ms in hops["median_by_hop_ms"].items())
    lines += [
        "",
        f"Hops (a stage's end to the next stage's start, {hops['count']} of them): "
        f"p50 {hops['p50_ms']:.0f} ms, p99 {hops['p99_ms']:.0f} ms; medians: {by_hop} ms.",
        "",
        "| rows | peak RSS MiB: validator | featurizer | predictor | reporter "
        "| one process | seed's way |",
        "|---:|" + "---:|" * 6,
    ]
    services = ("validator", "featurizer", "predictor", "reporter")
    for size in result["sizes"]:
        lf = size["landfall"]
        peaks = " | ".join(f"{lf['peak_rss_mib'].get(s, 0):,.0f}" for s in services)
        lines.append(
            f"| {size['rows']:,} | {peaks} | {size['plain']['peak_rss_mib']:,.0f} "
            f"| {size['seed']['peak_rss_mib']:,.0f} |"
        )
    lines += ["", "| rows | idle RSS MiB, seconds after the last batch | validator | featurizer "
              "| predictor | reporter |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for size in result["sizes"]:
        by_s = size["landfall"].get("idle_rss_mib_by_s") or {"": size["landfall"]["idle_rss_mib"]}
        for settle, idle in by_s.items():
            cells = " | ".join(f"{idle.get(s, 0):,.0f}" for s in services)
            lines.append(f"| {size['rows']:,} | {settle} | {cells} |")
    return "\n".join(lines)
