"""The predictor service: batch-featurized in, batch-predicted out."""

from __future__ import annotations

from typing import Any

from landfall.contracts import EventType, follow_up
from landfall.lake import MANIFEST_NAME
from landfall.registry import configure_mlflow, resolve_model_version
from landfall.runner import Outgoing
from landfall.stage import StageContext, Stopwatch
from services.predictor.stage import score_partition

__all__ = ["PredictorService"]


class PredictorService:
    """Scores each featurized partition with the dataset's registered model."""

    name = "predictor"
    stage = "prediction"

    def __init__(self, context: StageContext) -> None:
        self.context = context
        configure_mlflow(context.settings)
        self.consumes = {context.topics.featurized.name: frozenset({EventType.BATCH_FEATURIZED})}

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """Score the featurized partition and publish batch-predicted."""
        ctx, lake = self.context, self.context.lake
        dataset = ctx.settings.dataset(record["dataset"])
        features_path = lake.resolve(record["output_path"])
        watch = Stopwatch()
        with watch.measure("resolve_model"):
            model = resolve_model_version(ctx.settings, dataset.model)
        output = ctx.staged(record["dataset"], "predictions", record["partition"], record["run_id"])
        try:
            with watch.measure("score"):
                result = score_partition(ctx.spark, dataset, model, features_path, output.staging)
        except BaseException:
            lake.discard(output)
            raise
        manifest = ctx.manifest(
            record,
            stage=self.stage,
            output=output,
            inputs=[features_path],
            rows={"predictions": result.rows},
            schema=result.schema,
            timings_ms={**watch.timings_ms, "total": watch.total_ms},
            model={
                "name": model.name,
                "version": model.version,
                "alias": model.alias,
                "uri": model.uri,
                "run_id": model.run_id,
            },
        )
        lake.commit_partition(output, manifest)
        event = follow_up(
            EventType.BATCH_PREDICTED,
            record,
            producer=ctx.producer,
            output_path=lake.relative(output.target),
            manifest_path=lake.relative(output.target / MANIFEST_NAME),
            rows=result.rows,
            model_name=model.name,
            model_version=model.version,
            model_uri=model.uri,
            duration_ms=watch.total_ms,
        )
        return [ctx.outgoing(EventType.BATCH_PREDICTED, ctx.topics.predicted.name, event)]

    def cancel(self) -> None:
        """Cancel the running Spark job."""
        self.context.cancel()

    def close(self) -> None:
        """Stop the Spark session."""
        self.context.close()
