"""The reporter service: batch-predicted and batch-failed in, batch-reported out."""

from __future__ import annotations

from typing import Any

from landfall.contracts import EventType, follow_up
from landfall.lake import write_json_atomically
from landfall.results_db import ResultsDb
from landfall.runner import Outgoing
from landfall.stage import StageContext, StageService, Stopwatch
from services.reporter.stage import build_failure_report, build_success_report

__all__ = ["ReporterService"]


class ReporterService(StageService):
    """Writes each batch run's report and results-DB rows, then announces it."""

    name = "reporter"
    stage = "reporting"

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
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
        return [Outgoing(ctx.topics.reported.name, EventType.BATCH_REPORTED, event)]

    def _write_report(
        self, record: dict[str, Any], report: dict[str, Any], watch: Stopwatch
    ) -> str:
        with self.staging(record, "reports") as output:
            output.staging.mkdir(parents=True)
            write_json_atomically(output.staging / "report.json", report)
        self.commit(
            record,
            output,
            inputs=[],
            rows={},
            schema="report.json",
            watch=watch,
            status=report["status"],
        )
        return self.context.lake.relative(output.target / "report.json")

    def close(self) -> None:
        """Release the database, then the Spark session."""
        self.results.close()
        super().close()
