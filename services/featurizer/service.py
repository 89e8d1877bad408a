"""The featurizer service: batch-validated in, batch-featurized out."""

from __future__ import annotations

from typing import Any

from landfall.contracts import EventType, follow_up
from landfall.lake import MANIFEST_NAME
from landfall.runner import Outgoing
from landfall.stage import StageContext, Stopwatch
from services.featurizer.stage import featurize_partition

__all__ = ["FeaturizerService"]


class FeaturizerService:
    """Computes each validated partition's features."""

    name = "featurizer"
    stage = "featurization"

    def __init__(self, context: StageContext) -> None:
        self.context = context
        self.consumes = {context.topics.validated.name: frozenset({EventType.BATCH_VALIDATED})}

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """Featurize the validated partition and publish batch-featurized."""
        ctx, lake = self.context, self.context.lake
        dataset = ctx.settings.dataset(record["dataset"])
        valid_path = lake.resolve(record["output_path"])
        output = ctx.staged(record["dataset"], "features", record["partition"], record["run_id"])
        watch = Stopwatch()
        try:
            with watch.measure("featurize"):
                result = featurize_partition(ctx.spark, dataset, valid_path, output.staging)
        except BaseException:
            lake.discard(output)
            raise
        manifest = ctx.manifest(
            record,
            stage=self.stage,
            output=output,
            inputs=[valid_path],
            rows={"features": result.rows},
            schema=result.schema,
            timings_ms={**watch.timings_ms, "total": watch.total_ms},
            features=result.features,
        )
        lake.commit_partition(output, manifest)
        event = follow_up(
            EventType.BATCH_FEATURIZED,
            record,
            producer=ctx.producer,
            output_path=lake.relative(output.target),
            manifest_path=lake.relative(output.target / MANIFEST_NAME),
            rows=result.rows,
            features=result.features,
            duration_ms=watch.total_ms,
        )
        return [ctx.outgoing(EventType.BATCH_FEATURIZED, ctx.topics.featurized.name, event)]

    def cancel(self) -> None:
        """Cancel the running Spark job."""
        self.context.cancel()

    def close(self) -> None:
        """Stop the Spark session."""
        self.context.close()
