"""The validator service: data-landed in, batch-validated out."""

from __future__ import annotations

from typing import Any

from landfall.contracts import EventType, follow_up
from landfall.runner import Outgoing
from landfall.stage import StageContext, Stopwatch
from services.validator.stage import validate_partition

__all__ = ["ValidatorService"]


class ValidatorService:
    """Validates each landed partition against its dataset's declared schema."""

    name = "validator"
    stage = "validation"

    def __init__(self, context: StageContext) -> None:
        self.context = context
        self.consumes = {context.topics.landed.name: frozenset({EventType.DATA_LANDED})}

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """Validate the partition the event names and publish batch-validated."""
        ctx, lake = self.context, self.context.lake
        dataset_name, partition, run_id = record["dataset"], record["partition"], record["run_id"]
        dataset = ctx.settings.dataset(dataset_name)
        raw_path = (
            lake.resolve(record["path"])
            if record.get("path")
            else lake.partition_dir(dataset_name, "raw", partition)
        )
        valid = ctx.staged(dataset_name, "validated", partition, run_id)
        quarantine = ctx.staged(dataset_name, "quarantine", partition, run_id)
        watch = Stopwatch()
        try:
            with watch.measure("validate"):
                result = validate_partition(
                    ctx.spark,
                    dataset,
                    raw_path,
                    valid.staging,
                    quarantine.staging,
                    data_format=record.get("format"),
                )
        except BaseException:
            lake.discard(valid)
            lake.discard(quarantine)
            raise
        rows = {
            "landed": result.rows_landed,
            "valid": result.rows_valid,
            "quarantined": result.rows_quarantined,
        }
        timings = {**watch.timings_ms, "total": watch.total_ms}
        # Quarantine first: once the valid rows are committed, downstream may start.
        for output in (quarantine, valid):
            manifest = ctx.manifest(
                record,
                stage=self.stage,
                output=output,
                inputs=[raw_path],
                rows=rows,
                schema=result.valid_schema,
                timings_ms=timings,
                failures_by_check=result.failures_by_check,
            )
            lake.commit_partition(output, manifest)
        event = follow_up(
            EventType.BATCH_VALIDATED,
            record,
            producer=ctx.producer,
            output_path=lake.relative(valid.target),
            quarantine_path=lake.relative(quarantine.target),
            manifest_path=lake.relative(valid.target / "_manifest.json"),
            rows_landed=result.rows_landed,
            rows_valid=result.rows_valid,
            rows_quarantined=result.rows_quarantined,
            duration_ms=watch.total_ms,
        )
        return [ctx.outgoing(EventType.BATCH_VALIDATED, ctx.topics.validated.name, event)]

    def cancel(self) -> None:
        """Cancel the running Spark job."""
        self.context.cancel()

    def close(self) -> None:
        """Stop the Spark session."""
        self.context.close()
