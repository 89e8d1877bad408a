"""The predictor service: batch-featurized in, batch-predicted out.

Per batch, before any Spark work: the model version is fixed (the pinned
``model_version`` of the batch, else what the dataset's alias names now, resolved
once), and checked against the dataset's quality gate; a configured challenger alias
is resolved and gated the same way, but a challenger that is missing, fails the gate
or cannot score the table is skipped and said so, never a reason to fail the batch.
"""

from __future__ import annotations

from typing import Any

from landfall.config import ModelSpec
from landfall.contracts import EventType
from landfall.errors import StageFailedError
from landfall.object_store import lake_store_settings
from landfall.registry import (
    GateCheck,
    ResolvedModel,
    configure_mlflow,
    enforce_gate,
    resolve_model_version,
)
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
        repeated = self.repeat_of(record, "predictions", ctx.topics.predicted.name)
        if repeated is not None:
            return repeated
        dataset_name = record["dataset"]
        dataset = ctx.settings.dataset(dataset_name)
        spec = dataset.model
        # Only the features zone of the batch's own dataset, and no symlinks.
        features_path = ctx.lake.input_dir(
            record["output_path"],
            dataset=dataset_name,
            zone="features",
            partition=record["partition"],
        )
        watch = Stopwatch()
        with watch.measure("resolve_model"):
            # Once per batch: a promotion mid-batch cannot mix two versions in it.
            model = resolve_model_version(ctx.settings, spec, version=record.get("model_version"))
            gate = enforce_gate(ctx.settings, spec, model, dataset=dataset_name)
            challenger, challenger_gate, skipped = self._challenger(spec, model, dataset_name)
        with self.staging(record, "predictions") as output, watch.measure("score"):
            result = score_partition(
                ctx.spark,
                dataset,
                model,
                features_path,
                output.staging,
                challenger=challenger,
                expected_rows=record.get("rows"),
                scoring=ctx.settings.scoring,
                store=lake_store_settings(
                    ctx.settings.lake_uri, ctx.settings.object_store, ctx.settings.hdfs
                ),
            )
        skipped = skipped or result.challenger_skipped
        scored_challenger = challenger if skipped is None else None
        comparison = result.comparison
        self.commit(
            record,
            output,
            inputs=[features_path],
            rows={"predictions": result.rows},
            schema=result.schema,
            watch=watch,
            model={**model.describe(), "gate": [c.describe() for c in gate]},
            prediction={
                "kind": result.kind,
                "columns": result.columns,
                "probability_columns": result.probability_columns,
            },
            challenger=_challenger_record(spec, challenger, challenger_gate, skipped, comparison),
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
            model_alias=model.alias,
            model_pinned=model.pinned,
            prediction_kind=result.kind,
            probability_columns=result.probability_columns,
            gate_metrics={c.rule.metric: c.value for c in gate if c.value is not None},
            challenger_alias=spec.challenger,
            challenger_model_version=scored_challenger.version if scored_challenger else None,
            challenger_model_uri=scored_challenger.uri if scored_challenger else None,
            challenger_agreement=comparison.agreement if comparison else None,
            challenger_mean_abs_diff=comparison.mean_abs_diff if comparison else None,
            challenger_skipped_reason=skipped,
            duration_ms=watch.total_ms,
        )

    def _challenger(
        self, spec: ModelSpec, champion: ResolvedModel, dataset: str
    ) -> tuple[ResolvedModel | None, list[GateCheck], str | None]:
        """The challenger version to score beside the champion, or why there is none."""
        if spec.challenger is None:
            return None, [], None
        settings = self.context.settings
        try:
            challenger = resolve_model_version(settings, spec, alias=spec.challenger)
        except StageFailedError as exc:
            return None, [], exc.reason
        if challenger.version == champion.version:
            return None, [], f"@{spec.challenger} names the champion's version {champion.version}"
        try:
            gate = enforce_gate(settings, spec, challenger, dataset=dataset)
        except StageFailedError as exc:
            return None, [], exc.reason
        return challenger, gate, None


def _challenger_record(
    spec: ModelSpec,
    challenger: ResolvedModel | None,
    gate: list[GateCheck],
    skipped: str | None,
    comparison: Any,
) -> dict[str, Any] | None:
    if spec.challenger is None:
        return None
    if skipped is not None or challenger is None:
        return {"alias": spec.challenger, "skipped": skipped}
    return {
        **challenger.describe(),
        "gate": [c.describe() for c in gate],
        "comparison": comparison.describe() if comparison else None,
    }
