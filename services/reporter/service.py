"""The reporter service: batch-predicted and batch-failed in, batch-reported out."""

from __future__ import annotations

from typing import Any

from landfall.contracts import EventType, follow_up
from landfall.lake import write_json_atomically
from landfall.results_db import ResultsDb
from landfall.runner import Outgoing
from landfall.stage import StageContext, Stopwatch
from services.reporter.stage import build_failure_report, build_success_report

__all__ = ["ReporterService"]


class ReporterService:
    """Writes each batch run's report and results-DB rows, then announces it."""

    name = "reporter"
    stage = "reporting"

    def __init__(self, context: StageContext) -> None:
        self.context = context
        topics = context.topics
        self.consumes = {
            topics.predicted.name: frozenset({EventType.BATCH_PREDICTED}),
            topics.failed.name: frozenset({EventType.BATCH_FAILED}),
        }
        self.results = ResultsDb(context.settings.results_db_url)

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """Report a finished (or failed) batch run and publish batch-reported."""
        ctx, lake = self.context, self.context.lake
        watch = Stopwatch()
        if event_type is EventType.BATCH_FAILED:
            report = build_failure_report(lake, record)
        else:
            report = build_success_report(ctx.spark, lake, record)
        report["stage_durations_ms"]["reporting"] = watch.total_ms
        report["report_path"] = self._write_report(record, report, watch)
        rows = report.get("rows", {})
        model = report.get("model", {})
        figures = {
            "rows_landed": rows.get("landed"),
            "rows_valid": rows.get("valid"),
            "rows_quarantined": rows.get("quarantined"),
            "rows_scored": rows.get("scored"),
            "model_name": model.get("name"),
            "model_version": model.get("version"),
            "failed_stage": report.get("failed_stage"),
            "failure_reason": report.get("failure_reason"),
        }
        self.results.record_run(
            batch_id=record["batch_id"],
            run_id=record["run_id"],
            dataset=record["dataset"],
            partition=record["partition"],
            status=report["status"],
            stage_durations_ms=report["stage_durations_ms"],
            report_path=report["report_path"],
            **figures,
        )
        event = follow_up(
            EventType.BATCH_REPORTED,
            record,
            producer=ctx.producer,
            status=report["status"],
            report_path=report["report_path"],
            stage_durations_ms=report["stage_durations_ms"],
            **figures,
        )
        return [ctx.outgoing(EventType.BATCH_REPORTED, ctx.topics.reported.name, event)]

    def _write_report(
        self, record: dict[str, Any], report: dict[str, Any], watch: Stopwatch
    ) -> str:
        lake = self.context.lake
        output = self.context.staged(
            record["dataset"], "reports", record["partition"], record["run_id"]
        )
        output.staging.mkdir(parents=True)
        write_json_atomically(output.staging / "report.json", report)
        manifest = self.context.manifest(
            record,
            stage=self.stage,
            output=output,
            inputs=[],
            rows={},
            schema="report.json",
            timings_ms={"total": watch.total_ms},
            status=report["status"],
        )
        lake.commit_partition(output, manifest)
        return lake.relative(output.target / "report.json")

    def cancel(self) -> None:
        """Cancel the running Spark job."""
        self.context.cancel()

    def close(self) -> None:
        """Stop the Spark session and release the database."""
        self.results.close()
        self.context.close()
