"""The reporter: follows each batch run through its stages, then reports and announces it.

:class:`BatchReporter` is the reporter's logic whatever drives it: ``observe`` folds one
event into the run's *progress* (a JSON-able dict: stages reached, their timings and
figures) and records it in the results database; ``report`` builds the run's
``report.json`` and ``report.html`` once its predictions are committed or a stage
failed, records the run and returns the batch-reported event. The faust app
(:mod:`services.reporter.app`) drives it and keeps each run's progress in its
``batch-progress`` table; the results database is the record the job API reads.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from landfall.config import Settings, Topics
from landfall.contracts import EventType, follow_up
from landfall.lake import write_json_atomically
from landfall.object_store import lake_store_settings
from landfall.redact import redact_tree
from landfall.results import RunHistory, RunKey, RunRecorder, open_results_db
from landfall.runner import Outgoing
from landfall.stage import StageContext, Stopwatch
from landfall.telemetry import LAST_SUCCESS, RUNS_STUCK
from services.reporter.drift import write_feature_summaries
from services.reporter.html import render_report_html
from services.reporter.report import build_failure_report, build_success_report, timeline

__all__ = [
    "FINISHING_EVENTS",
    "STAGE_EVENTS",
    "BatchReporter",
    "new_progress",
    "reporter_only_topics",
]

log = logging.getLogger(__name__)

# The completion event of each stage before reporting, and the stage it completes.
STAGE_EVENTS = {
    EventType.BATCH_VALIDATED: "validation",
    EventType.BATCH_FEATURIZED: "featurization",
    EventType.BATCH_PREDICTED: "prediction",
}
# The events after which a run is reported.
FINISHING_EVENTS = frozenset({EventType.BATCH_PREDICTED, EventType.BATCH_FAILED})


def reporter_only_topics(topics: Topics) -> frozenset[str]:
    """The topics only the reporter reads: it dead-letters their malformed messages.

    A malformed message on the other topics it reads is dead-lettered by the stage
    that consumes that topic; the reporter skipping it keeps it one dead letter.
    """
    return frozenset({topics.predicted.name, topics.failed.name})


# Figures a stage's event carries that the results database keeps on the run.
_RUN_FIGURES = {
    "validation": ("rows_landed", "rows_valid", "rows_quarantined"),
    "prediction": ("model_name", "model_version"),
}


def _iso(moment: Any) -> str:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat()
    return datetime.now(UTC).isoformat()


def new_progress(record: dict[str, Any]) -> dict[str, Any]:
    """The progress of a run nothing is known about yet."""
    return {
        "batch_id": record["batch_id"],
        "run_id": record["run_id"],
        "dataset": record["dataset"],
        "partition": record["partition"],
        "submitted_at": None,
        "requested_model_version": None,
        "stages": {},
        "failed": None,
        "reported_for": None,
        "status": "RUNNING",
    }


def _stage_rows(event_type: EventType, record: dict[str, Any]) -> int | None:
    if event_type is EventType.BATCH_VALIDATED:
        return record.get("rows_landed")
    rows = record.get("rows")
    return int(rows) if rows is not None else None


class StuckRunsGauge:
    """Keeps ``landfall_batch_runs_stuck`` current: unfinished runs quiet for ``stuck_after_s``.

    A batch stopped between stages (a service killed after its commit, a lost event)
    makes no noise of its own; this gauge, counted from the results database every
    ``interval_s``, is what the LandfallRunsStuck alert reads.
    """

    def __init__(self, history: RunHistory, settings: Settings, interval_s: float = 30.0) -> None:
        self.history = history
        self.after = timedelta(seconds=settings.reporting.stuck_after_s)
        self.datasets = list(settings.datasets)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stuck-runs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def refresh(self) -> dict[str, int]:
        """Count now; every configured dataset gets a value (0 when none is stuck)."""
        counts = self.history.stuck_runs(datetime.now(UTC) - self.after)
        for dataset in {*self.datasets, *counts}:
            RUNS_STUCK.labels(dataset).set(counts.get(dataset, 0))
        return counts

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not stop reporting
                log.warning("cannot count stuck runs: %s", exc)
            self._stop.wait(self.interval_s)


class BatchReporter:
    """Progress, reports and results-database rows of batch runs (no Kafka here)."""

    def __init__(self, context: StageContext, results: Engine | None = None) -> None:
        self.context = context
        self.results = results or open_results_db(context.settings.results_db_url)
        self.recorder, self.history = RunRecorder(self.results), RunHistory(self.results)
        self._restore_last_success()
        self._stuck = StuckRunsGauge(self.history, context.settings)
        self._stuck.start()

    def _restore_last_success(self) -> None:
        """Start each dataset's last-success gauge from the results database.

        The "no batch for a dataset in a day" alert reads this gauge: after a restart it
        must still say when the dataset last succeeded. A dataset never reported counts
        from now, so a dataset that never succeeds still alerts a day later.
        """
        known = self.history.last_success_by_dataset()
        now = datetime.now(UTC)
        for dataset in self.context.settings.datasets:
            at = known.get(dataset, now)
            LAST_SUCCESS.labels("reporter", dataset).set(at.timestamp())

    def observe(
        self, event_type: EventType, record: dict[str, Any], progress: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Fold one event into its run's progress and record what it says; return the progress."""
        state = dict(progress) if progress else new_progress(record)
        state["stages"] = dict(state.get("stages") or {})
        if record.get("model_version") and event_type is not EventType.BATCH_PREDICTED:
            state["requested_model_version"] = record["model_version"]
        key = RunKey.of(record)
        if event_type is EventType.DATA_LANDED:
            state["submitted_at"] = state["submitted_at"] or _iso(record.get("occurred_at"))
            self.recorder.record_submission(
                key,
                submitted_at=datetime.fromisoformat(state["submitted_at"]),
                model_version=record.get("model_version"),
            )
        elif event_type in STAGE_EVENTS:
            stage = STAGE_EVENTS[event_type]
            entry: dict[str, Any] = {
                "finished_at": _iso(record.get("occurred_at")),
                "duration_ms": record.get("duration_ms"),
                "rows": _stage_rows(event_type, record),
                "event_id": record.get("event_id"),
            }
            if event_type is EventType.BATCH_VALIDATED:
                entry["failures_by_rule"] = dict(record.get("failures_by_rule") or {})
                entry["null_fraction"] = dict(record.get("null_fraction") or {})
            state["stages"][stage] = entry
            figures = {name: record.get(name) for name in _RUN_FIGURES.get(stage, ())}
            if event_type is EventType.BATCH_PREDICTED:
                figures["rows_scored"] = record.get("rows")
            self.recorder.record_stage(
                key,
                stage=stage,
                finished_at=datetime.fromisoformat(entry["finished_at"]),
                duration_ms=entry["duration_ms"],
                rows=entry["rows"],
                event_id=entry["event_id"],
                figures=figures,
            )
        elif event_type is EventType.BATCH_FAILED:
            state["failed"] = {
                "stage": record.get("stage"),
                "reason": record.get("reason"),
                "event_id": record.get("event_id"),
            }
        return state

    def already_reported(self, record: dict[str, Any], progress: dict[str, Any] | None) -> bool:
        """Whether this exact event was reported and announced before (a redelivery)."""
        return bool(progress) and progress.get("reported_for") == record.get("event_id")  # type: ignore[union-attr]

    def follow(
        self, event_type: EventType, record: dict[str, Any], progress: dict[str, Any] | None
    ) -> tuple[dict[str, Any], Outgoing | None]:
        """Fold one event into its run's progress; report the run if the event finishes it.

        Returns the new progress and, for a finishing event, batch-reported to publish.
        """
        state = self.observe(event_type, record, progress)
        if event_type not in FINISHING_EVENTS:
            return state, None
        reported, state = self.report(event_type, record, state)
        return state, reported

    def report(
        self, event_type: EventType, record: dict[str, Any], progress: dict[str, Any]
    ) -> tuple[Outgoing, dict[str, Any]]:
        """Build, write and record the run's report; return batch-reported and the progress."""
        ctx = self.context
        watch = Stopwatch()
        started = datetime.now(UTC)
        report = self._build(event_type, record, progress)
        manifests = report.pop("manifests", {})
        summaries = report.pop("feature_summaries", None)
        # The report goes to report.json, report.html, the results DB and batch-reported:
        # none of them may carry a secret that came in with a failure reason.
        report = redact_tree(report)
        finished = datetime.now(UTC)
        failed = None
        if event_type is EventType.BATCH_FAILED:
            failed_at = record.get("occurred_at")
            failed = (
                str(record["stage"]),
                failed_at if isinstance(failed_at, datetime) else started,
            )
        report["timeline"] = timeline(
            record["run_id"], progress, manifests, (started, finished), failed
        )
        report["stage_durations_ms"] = {s["stage"]: s["duration_ms"] for s in report["timeline"]}
        report["submitted_at"] = progress.get("submitted_at")
        report["reported_at"] = finished.isoformat()
        self._write_report(record, report, watch, summaries)
        self.recorder.record_report(report)
        event = follow_up(
            EventType.BATCH_REPORTED,
            record,
            producer=ctx.producer,
            status=report["status"],
            # Empty when no report was written (a dataset that is not configured).
            report_path=report["report_path"] or "",
            report_html_path=report["report_html_path"],
            stage_durations_ms=report["stage_durations_ms"],
            rows_landed=report["rows"].get("landed"),
            rows_valid=report["rows"].get("valid"),
            rows_quarantined=report["rows"].get("quarantined"),
            rows_scored=report["rows"].get("scored"),
            model_name=report["model"].get("name"),
            model_version=report["model"].get("version"),
            failed_stage=report.get("failed_stage"),
            failure_reason=report.get("failure_reason"),
            drifted_features=list((report.get("drift") or {}).get("flagged", [])),
        )
        state = dict(progress, status=report["status"], reported_for=record.get("event_id"))
        return Outgoing(ctx.topics.reported.name, EventType.BATCH_REPORTED, event), state

    def _build(
        self, event_type: EventType, record: dict[str, Any], progress: dict[str, Any]
    ) -> dict[str, Any]:
        """The report document of a failed run, or of a scored one (with its figures)."""
        ctx, reporting = self.context, self.context.settings.reporting
        if event_type is EventType.BATCH_FAILED:
            return build_failure_report(ctx.lake, record, progress=progress)
        dataset = ctx.settings.datasets.get(record["dataset"])
        return build_success_report(
            ctx.spark,
            ctx.lake,
            record,
            progress=progress,
            psi_threshold=reporting.psi_threshold,
            reference_partitions=reporting.reference_partitions,
            id_column=dataset.id_column if dataset is not None else "id",
            drift_thresholds=(
                dataset.drift_thresholds(reporting.psi_threshold) if dataset else None
            ),
            # Spark tasks scanning a large feature table reach an object store or HDFS.
            store=lake_store_settings(
                ctx.settings.lake_uri, ctx.settings.object_store, ctx.settings.hdfs
            ),
        )

    def _write_report(
        self,
        record: dict[str, Any],
        report: dict[str, Any],
        watch: Stopwatch,
        summaries: dict[str, Any] | None = None,
    ) -> None:
        ctx, lake = self.context, self.context.lake
        if record["dataset"] not in ctx.settings.datasets:
            # Nothing is written for a dataset that is not configured: anyone who can
            # publish an event would otherwise make top-level lake folders at will. The
            # run is still recorded in the results database, without a report file.
            report["report_path"] = report["report_html_path"] = None
            return
        output = ctx.staged(record["dataset"], "reports", record["partition"], record["run_id"])
        report["report_path"] = lake.relative(output.target / "report.json")
        report["report_html_path"] = lake.relative(output.target / "report.html")
        try:
            output.staging.mkdir(parents=True)
            write_json_atomically(output.staging / "report.json", report)
            (output.staging / "report.html").write_text(render_report_html(report), "utf-8")
            if summaries:  # drift summaries for later reports, committed with this one
                write_feature_summaries(output.staging, summaries)
            manifest = ctx.manifest(
                record,
                stage="reporting",
                output=output,
                inputs=[],
                rows={},
                schema="report.json",
                timings_ms={"total": watch.total_ms},
                status=report["status"],
            )
            # Every run keeps its report; the partition's current one is its newest
            # successful run's, so a failed or late older run never replaces it.
            committed = lake.commit_partition(
                output, manifest, succeeded=report["status"] == "SUCCEEDED", fenced=False
            )
            # The run was reported before (a redelivery after a restart): that report
            # stands, and the event names it.
            report["report_path"] = lake.relative(committed / "report.json")
            report["report_html_path"] = lake.relative(committed / "report.html")
        except BaseException:
            lake.discard(output)
            raise

    def close(self) -> None:
        """Release the database, then the Spark session."""
        self._stuck.stop()
        self.results.dispose()
        self.context.close()
