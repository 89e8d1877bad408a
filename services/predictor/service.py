"""The predictor service: batch-featurized in, batch-predicted out."""

from __future__ import annotations

from typing import Any

from landfall.contracts import EventType
from landfall.registry import configure_mlflow, resolve_model_version
from landfall.runner import Outgoing
from landfall.stage import StageContext, StageService, Stopwatch
from services.predictor.stage import score_partition

__all__ = ["PredictorService"]


class PredictorService(StageService):
    """Scores each featurized partition with the dataset's registered model."""

    name = "predictor"
    stage = "prediction"

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        configure_mlflow(context.settings)
        self.consumes = {context.topics.featurized.name: frozenset({EventType.BATCH_FEATURIZED})}

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """Score the featurized partition and publish batch-predicted."""
        ctx = self.context
        dataset = ctx.settings.dataset(record["dataset"])
        features_path = ctx.lake.resolve(record["output_path"])
        watch = Stopwatch()
        with watch.measure("resolve_model"):
            # Once per batch: a promotion mid-batch cannot mix two versions in it.
            model = resolve_model_version(ctx.settings, dataset.model)
        with self.staging(record, "predictions") as output, watch.measure("score"):
            result = score_partition(ctx.spark, dataset, model, features_path, output.staging)
        self.commit(
            record,
            output,
            inputs=[features_path],
            rows={"predictions": result.rows},
            schema=result.schema,
            watch=watch,
            model={
                "name": model.name,
                "version": model.version,
                "alias": model.alias,
                "uri": model.uri,
                "run_id": model.run_id,
            },
        )
        return self.announce(
            EventType.BATCH_PREDICTED,
            ctx.topics.predicted.name,
            record,
            output,
            rows=result.rows,
            model_name=model.name,
            model_version=model.version,
            model_uri=model.uri,
            duration_ms=watch.total_ms,
        )
