"""The featurizer service: batch-validated in, batch-featurized out."""

from __future__ import annotations

from typing import Any

from landfall.contracts import EventType
from landfall.object_store import lake_store_settings
from landfall.runner import Outgoing
from landfall.stage import StageContext, StageService, Stopwatch
from services.featurizer.stage import featurize_partition

__all__ = ["FeaturizerService"]


class FeaturizerService(StageService):
    """Computes each validated partition's features."""

    name = "featurizer"
    stage = "featurization"

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        self.consumes = {context.topics.validated.name: frozenset({EventType.BATCH_VALIDATED})}

    def handle(self, event_type: EventType, record: dict[str, Any]) -> list[Outgoing]:
        """Featurize the validated partition and publish batch-featurized."""
        ctx = self.context
        repeated = self.repeat_of(record, "features", ctx.topics.featurized.name)
        if repeated is not None:
            return repeated
        dataset = ctx.settings.dataset(record["dataset"])
        # Only the validated zone of the batch's own dataset, and no symlinks.
        valid_path = ctx.lake.input_dir(
            record["output_path"],
            dataset=record["dataset"],
            zone="validated",
            partition=record["partition"],
        )
        watch = Stopwatch()
        with self.staging(record, "features") as output, watch.measure("featurize"):
            result = featurize_partition(
                ctx.spark,
                dataset,
                valid_path,
                output.staging,
                lake=ctx.lake,
                partition=record["partition"],
                settings=ctx.settings.featurization,
                # The arrow engine's tasks reach an object store or HDFS lake directly.
                store=lake_store_settings(
                    ctx.settings.lake_uri, ctx.settings.object_store, ctx.settings.hdfs
                ),
            )
        feature_set = dataset.feature_set
        self.commit(
            record,
            output,
            inputs=[valid_path],
            rows={"features": result.rows},
            schema=result.schema,
            watch=watch,
            features=result.features,
            feature_set={"name": feature_set.name, "version": feature_set.version},
            references=result.references,
            spark_jobs=result.spark_jobs,
            engine=result.engine,
        )
        return self.announce(
            EventType.BATCH_FEATURIZED,
            ctx.topics.featurized.name,
            record,
            output,
            rows=result.rows,
            features=result.features,
            feature_set=feature_set.name,
            feature_set_version=feature_set.version,
            duration_ms=watch.total_ms,
        )
