"""The demo: a sample dataset, a small registered model, and one batch end to end.

``make demo`` runs :func:`run_demo`: it lands a partition with some deliberately bad
rows, trains and registers a scikit-learn model, starts the local stack, publishes
one data-landed event, waits for the batch-reported event, prints what happened and
stops everything it started.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landfall.config import Settings
from landfall.errors import ConfigError
from landfall.lake import Lake, LakePath, read_manifest

__all__ = [
    "DEMO_CONFIG",
    "SampleStats",
    "demo_feature_frame",
    "register_demo_model",
    "run_demo",
    "write_sample_partition",
]

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).with_name("landfall.yaml")
DEMO_DATASET = "demo"
DEMO_MODEL = "landfall-demo"
COLORS = ("red", "green", "blue")


@dataclass(frozen=True)
class SampleStats:
    """What a written sample partition holds."""

    path: LakePath
    rows: int
    bad_rows: int


def _sample_rows(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, rows), rng.normal(0, 1, rows), rng.choice(COLORS, rows)


def write_sample_partition(
    lake: Lake, partition: str, *, rows: int = 5000, seed: int = 7, dataset: str = DEMO_DATASET
) -> SampleStats:
    """Land a CSV partition in the seed's schema, with some deliberately bad rows."""
    feature1, feature2, feature3 = _sample_rows(rows, seed)
    directory = lake.partition_dir(dataset, "raw", partition)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "part-00000.csv"
    bad = 0
    # Built in memory and written whole: one PUT when the lake is an object store.
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(["id", "feature1", "feature2", "feature3"])
    for i in range(rows):
        row = [f"r{i:07d}", f"{feature1[i]:.6f}", f"{feature2[i]:.6f}", feature3[i]]
        # Every 37th row is broken in one of three ways a real feed breaks.
        if i % 37 == 5:
            row[1], bad = "n/a", bad + 1  # not a number
        elif i % 37 == 17:
            row[2], bad = "", bad + 1  # missing a required value
        elif i % 37 == 29:
            row[0], bad = "", bad + 1  # no id
        writer.writerow(row)
    path.write_text(handle.getvalue())
    return SampleStats(path=path, rows=rows, bad_rows=bad)


def demo_feature_frame(rows: int, seed: int) -> Any:
    """Training features computed as the demo config's feature expressions compute them."""
    import pandas as pd

    feature1, feature2, feature3 = _sample_rows(rows, seed)
    # Mirrors landfall.yaml's features; the featurizer computes the same in Spark SQL.
    return pd.DataFrame(
        {
            "f1": feature1,
            "f2": feature2,
            "f1_times_f2": feature1 * feature2,
            "is_red": (feature3 == "red").astype(float),
        }
    )


def _predict_latency_ms(model: Any, rows: Any) -> float:
    """Milliseconds to predict one batch of ``rows``: the best of a few tries."""
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        model.predict(rows)
        timings.append((time.perf_counter() - started) * 1000)
    return min(timings)


def register_demo_model(settings: Settings, *, alias: str = "champion", seed: int = 11) -> str:
    """Train a small classifier and register it as ``landfall-demo`` under an alias."""
    from sklearn.linear_model import LogisticRegression

    from landfall.training import register_sklearn_model

    features = demo_feature_frame(4000, seed)
    noise = np.random.default_rng(seed + 1).normal(0, 0.5, len(features))
    score = 1.2 * features.f1 - 0.8 * features.f2 + 0.5 * features.f1_times_f2 + features.is_red
    labels = (score + noise > 0.3).astype(int)
    # Held-out rows give the registered accuracy: the quality gate should see the
    # model's accuracy on data it did not learn from.
    train, held_out = slice(0, 3000), slice(3000, None)
    model = LogisticRegression(max_iter=500).fit(features[train], labels[train])
    accuracy = float(model.score(features[held_out], labels[held_out]))
    latency_ms = _predict_latency_ms(model, features[held_out])
    version = register_sklearn_model(
        settings, model, features, DEMO_MODEL,
        alias=alias, experiment="landfall-demo", run_name="demo-train",
        metrics={"accuracy": accuracy, "latency_ms": latency_ms},
    )  # fmt: skip
    log.info(
        "registered %s version %s (accuracy %.3f) as @%s", DEMO_MODEL, version, accuracy, alias
    )
    return version


def _summary(lake: Lake, reported: dict[str, Any], sample: SampleStats) -> str:
    dataset, partition = reported["dataset"], reported["partition"]
    lines = [
        "",
        f"landfall demo: batch {reported['batch_id']} run {reported['run_id']}",
        f"  dataset {dataset}, partition {partition}: {reported['status']}",
    ]
    if reported["status"] != "SUCCEEDED":
        lines.append(f"  failed in {reported['failed_stage']}: {reported['failure_reason']}")
    lines += [
        f"  rows landed      {reported['rows_landed']}  (written: {sample.rows}, "
        f"{sample.bad_rows} deliberately bad)",
        f"  rows valid       {reported['rows_valid']}",
        f"  rows quarantined {reported['rows_quarantined']}",
        f"  rows scored      {reported['rows_scored']}",
        f"  model            {reported['model_name']} version {reported['model_version']}",
        "  stage timings (ms): "
        + ", ".join(f"{k} {v}" for k, v in reported["stage_durations_ms"].items()),
        "  outputs:",
    ]
    for zone in ("raw", "validated", "quarantine", "features", "predictions", "reports"):
        directory = lake.partition_dir(dataset, zone, partition)  # type: ignore[arg-type]
        if directory.exists():
            lines.append(f"    {zone:<12} {directory}")
    lines.append(f"  report           {lake.root / reported['report_path']}")
    if (lake.partition_dir(dataset, "validated", partition) / "_manifest.json").exists():
        manifest = read_manifest(lake.partition_dir(dataset, "validated", partition))
        lines.append(f"  failures by rule: {manifest.get('failures_by_rule')}")
    return "\n".join(lines)


def _publish_and_wait(
    live: Settings, partition: str, timeout: float, alive: Callable[[], None] | None
) -> dict[str, Any]:
    """Publish the demo partition's data-landed event; wait for its batch-reported."""
    from landfall.contracts import EventType
    from landfall.events import EventWatcher, publish_data_landed
    from landfall.telemetry import init_telemetry

    init_telemetry(live, "demo", metrics=False)  # the run's trace starts here
    watcher = EventWatcher(live, [live.kafka.topics.reported.name])
    try:
        landed = publish_data_landed(live, DEMO_DATASET, partition)
        print(
            f"published data-landed for {DEMO_DATASET}/{partition} (run {landed['run_id']})",
            flush=True,
        )
        _, _, reported = watcher.wait_for(
            lambda _t, kind, rec: (
                kind is EventType.BATCH_REPORTED and rec["run_id"] == landed["run_id"]
            ),
            timeout,
            alive=alive,
        )
    finally:
        watcher.close()
    return reported


def run_demo(
    settings: Settings,
    *,
    partition: str = "2026-11-01",
    timeout: float = 600.0,
    on_running_stack: bool = False,
) -> dict[str, Any]:
    """Run one batch through the whole pipeline on the local stack; return batch-reported.

    ``on_running_stack``: the services already run on the configured broker (compose's
    seed service, or `landfall up` in another terminal): land, register and publish
    there, and wait for the report, starting and stopping nothing.
    """
    from landfall.stack import LocalStack

    started = time.monotonic()
    settings.home.mkdir(parents=True, exist_ok=True)
    lake = Lake.from_settings(settings)
    sample = write_sample_partition(lake, partition)
    print(f"landed {sample.rows} rows ({sample.bad_rows} bad) at {sample.path}", flush=True)
    version = register_demo_model(settings)
    print(f"registered model {DEMO_MODEL} version {version} as @champion", flush=True)

    if on_running_stack:
        if not settings.kafka.bootstrap:
            raise ConfigError("a demo on a running stack needs its broker: set kafka.bootstrap")
        reported = _publish_and_wait(settings, partition, timeout, None)
    else:
        stack = LocalStack(settings)
        try:
            live = stack.start()
            print(
                f"broker at {live.kafka.bootstrap}; services: {', '.join(stack.processes)}",
                flush=True,
            )
            for name, url in stack.metrics_urls().items():
                print(f"  metrics of {name}: {url}", flush=True)
            reported = _publish_and_wait(live, partition, timeout, stack.check_alive)
        finally:
            stack.stop()
    print(_summary(lake, reported, sample))
    if settings.telemetry.trace_dir is not None:
        print(f"  trace of the run: {settings.telemetry.trace_dir}/<service>.jsonl")
    stopped = "" if on_running_stack else "; everything it started is stopped"
    print(f"  demo took {time.monotonic() - started:.0f}s{stopped}")
    return reported
