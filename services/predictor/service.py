"""The predictor service: batch-featurized in, batch-predicted out.

Per batch, before any Spark work: the model version is fixed (the pinned
``model_version`` of the batch, else what the dataset's alias names now, resolved
once), and checked against the dataset's quality gate; a configured challenger alias
is resolved and gated the same way, but a challenger that is missing, fails the gate
or cannot score the table is skipped and said so, never a reason to fail the batch.

A model that cannot take the dataset's features is found before the first batch: at
start the service checks, for every dataset, the feature table the featurizer writes
(its columns and types follow from the config) against the signature of the version
the alias names, and logs each mismatch. The contracts have no event for a finding
without a batch, so the dataset's batches carry it: each is refused with that reason
before any Spark work, while the other datasets score. The finding is kept per model
version, so a batch whose alias names another version (a fixed model) is checked
afresh and scored, without a restart.
"""

from __future__ import annotations

import logging
from typing import Any

from landfall.config import DatasetConfig, ModelSpec
from landfall.contracts import EventType
from landfall.errors import RetryableError, StageFailedError
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
from services.featurizer.stage import feature_table_types
from services.predictor.fit import fit_problems, unused_columns
from services.predictor.stage import prepare_scorer, score_partition

__all__ = ["PredictorService"]

log = logging.getLogger(__name__)


class PredictorService(StageService):
    """Scores each featurized partition with the dataset's registered model."""

    name = "predictor"
    stage = "prediction"

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        configure_mlflow(context.settings)
        self.consumes = {context.topics.featurized.name: frozenset({EventType.BATCH_FEATURIZED})}
        # (dataset, model, version, alias) -> why the dataset's features do not fit
        # that version, None when they do; registered versions never change.
        self._misfits: dict[tuple[str, str, str, str | None], str | None] = {}

    def start(self) -> None:
        """Check every dataset's features against its model's signature, before any batch.

        An unreachable registry is no finding: each batch resolves its model anyway,
        and retries as it always did. A model that cannot be resolved or loaded is
        logged here and fails its batches as before.
        """
        settings = self.context.settings
        for name, dataset in settings.datasets.items():
            try:
                model = resolve_model_version(settings, dataset.model)
                self._misfit(name, dataset, model)
            except RetryableError as exc:
                log.warning("models not checked at start (each batch checks its own): %s", exc)
                return
            except StageFailedError as exc:
                log.error("dataset %s: %s", name, exc.reason)

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
            record["output_path"], dataset=dataset_name, zone="features",
            partition=record["partition"],
        )  # fmt: skip
        watch = Stopwatch()
        with watch.measure("resolve_model"):
            model, gate, (challenger, challenger_gate, skipped) = self._models(
                dataset_name, dataset, record.get("model_version")
            )
        with self.staging(record, "predictions") as output, watch.measure("score"):
            store = lake_store_settings(
                ctx.settings.lake_uri, ctx.settings.object_store, ctx.settings.hdfs
            )
            result = score_partition(
                ctx.spark, dataset, model, features_path, output.staging,
                challenger=challenger, expected_rows=record.get("rows"),
                scoring=ctx.settings.scoring, store=store,
            )  # fmt: skip
        skipped = skipped or result.challenger_skipped
        scored_challenger = challenger if skipped is None else None
        comparison = result.comparison
        prediction = {
            "kind": result.kind,
            "columns": result.columns,
            "probability_columns": result.probability_columns,
        }
        self.commit(
            record, output, inputs=[features_path], rows={"predictions": result.rows},
            schema=result.schema, watch=watch, prediction=prediction,
            model={**model.describe(), "gate": [c.describe() for c in gate]},
            challenger=_challenger_record(spec, challenger, challenger_gate, skipped, comparison),
        )  # fmt: skip
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
            duration_ms=watch.total_ms,
            **_challenger_fields(spec, scored_challenger, comparison, skipped),
        )

    def _models(
        self, dataset_name: str, dataset: DatasetConfig, pinned: str | None
    ) -> tuple[
        ResolvedModel, list[GateCheck], tuple[ResolvedModel | None, list[GateCheck], str | None]
    ]:
        """The batch's champion with its gate, and its challenger (or why it is skipped)."""
        spec = dataset.model
        # Once per batch: a promotion mid-batch cannot mix two versions in it.
        model = resolve_model_version(self.context.settings, spec, version=pinned)
        gate = enforce_gate(self.context.settings, spec, model, dataset=dataset_name)
        misfit = self._misfit(dataset_name, dataset, model)
        if misfit is not None:  # refused before any Spark work; nothing is written
            raise StageFailedError(misfit, details={"model_uri": model.uri})
        return model, gate, self._challenger(spec, model, dataset_name)

    def _misfit(
        self, dataset_name: str, dataset: DatasetConfig, model: ResolvedModel
    ) -> str | None:
        """Why the dataset's feature table cannot be scored by ``model``, or None.

        Found once per version, from the table the featurizer writes (its columns and
        types follow from the config), and logged then.
        """
        key = (dataset_name, model.name, model.version, model.alias)
        if key in self._misfits:
            return self._misfits[key]
        ctx = self.context
        table = feature_table_types(dataset)
        fallback = [column for column in table if column != dataset.id_column]
        # The same preparation (download, plan) as the batch's scoring, and cached with
        # it: a version that fits costs nothing more to score afterwards.
        plan = prepare_scorer(ctx.spark, model, fallback, ctx.settings.scoring.engine).plan
        problems = fit_problems(plan.inputs, table)
        chosen = f"@{model.alias}" if model.alias else "pinned for the batch"
        which = f"model {model.name} version {model.version} ({chosen})"
        if not problems:
            log.info("dataset %s: its features fit %s", dataset_name, which)
            self._misfits[key] = None
            return None
        unused = unused_columns(plan.inputs, table, dataset.id_column)
        misfit = (
            f"dataset {dataset_name}'s features do not fit {which}: "
            + "; ".join(problems)
            + (f"; feature columns the model does not take: {', '.join(unused)}" if unused else "")
            + " (found from the dataset's feature config, before any Spark work)"
        )
        log.error("%s; its batches are refused until the model or the features change", misfit)
        self._misfits[key] = misfit
        return misfit

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


def _challenger_fields(
    spec: ModelSpec,
    scored: ResolvedModel | None,
    comparison: Any,
    skipped: str | None,
) -> dict[str, Any]:
    """batch-predicted's challenger fields: who it was and how it compared, or why not."""
    return {
        "challenger_alias": spec.challenger,
        "challenger_model_version": scored.version if scored else None,
        "challenger_model_uri": scored.uri if scored else None,
        "challenger_agreement": comparison.agreement if comparison else None,
        "challenger_mean_abs_diff": comparison.mean_abs_diff if comparison else None,
        "challenger_skipped_reason": skipped,
    }
