"""The validator service: data-landed in, batch-validated out."""

from __future__ import annotations

from typing import Any

from landfall.contracts import EventType
from landfall.errors import StageFailedError
from landfall.object_store import lake_store_settings
from landfall.runner import Outgoing
from landfall.stage import StageContext, StageService, Stopwatch
from services.validator.stage import validate_partition

__all__ = ["ValidatorService"]


class ValidatorService(StageService):
    """Validates each landed partition against its dataset's declared schema."""

    name = "validator"
    stage = "validation"

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.consumes = {context.topics.landed.name: frozenset({EventType.DATA_LANDED})}

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """Validate the partition the event names and publish batch-validated."""
        ctx, lake = self.context, self.context.lake
        repeated = self.repeat_of(record, "validated", ctx.topics.validated.name)
        if repeated is not None:
            return repeated
        dataset_name, partition = record["dataset"], record["partition"]
        dataset = ctx.settings.dataset(dataset_name)
        # Confined to the dataset's raw zone with no symlink on the way or inside, before
        # Spark reads anything or any output is staged.
        raw_path = lake.input_dir(
            record.get("path") or None, dataset=dataset_name, zone="raw", partition=partition
        )
        watch = Stopwatch()
        with (
            self.staging(record, "validated") as valid,
            self.staging(record, "quarantine") as quarantine,
            watch.measure("validate"),
        ):
            result = validate_partition(
                ctx.spark,
                dataset,
                raw_path,
                valid.staging,
                quarantine.staging,
                data_format=record.get("format"),
                raw_name=lake.relative(raw_path),
                settings=ctx.settings.validation,
                # The arrow engine's tasks reach an object store or HDFS lake directly.
                store=lake_store_settings(
                    ctx.settings.lake_uri, ctx.settings.object_store, ctx.settings.hdfs
                ),
            )
        # Quarantine first: once the valid rows are committed, downstream may start.
        # Over a threshold, the quarantine is still committed for people to inspect.
        outputs = [quarantine] if result.breaches else [quarantine, valid]
        quality = result.quality(dataset.extra_columns)
        for output in outputs:
            self.commit(record, output, inputs=[raw_path], rows=result.rows(),
                        schema=result.valid_schema, watch=watch, **quality)  # fmt: skip
        if result.breaches:
            lake.discard(valid)
            raise StageFailedError(
                "data quality below the dataset's thresholds: " + "; ".join(result.breaches),
                details=result.breach_details,
            )
        return self.announce(
            EventType.BATCH_VALIDATED,
            ctx.topics.validated.name,
            record,
            valid,
            quarantine_path=lake.relative(quarantine.target),
            rows_landed=result.rows_landed,
            rows_valid=result.rows_valid,
            rows_quarantined=result.rows_quarantined,
            rows_warned=result.rows_warned,
            failures_by_rule=result.failures_by_rule,
            null_fraction=result.null_fraction,
            extra_columns=result.extra_columns,
            duration_ms=watch.total_ms,
        )
