"""A dataset's settings: its columns, rules, features, drift watch and model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from landfall.config_base import Frozen
from landfall.datasets import (
    RAW_PATH_DEFAULT,
    ColumnSpec,
    DriftSettings,
    FeatureSet,
    FeatureSpec,
    RuleSpec,
    Thresholds,
    UniqueRule,
    check_path_template,
)


class GateRule(Frozen):
    """One quality-gate bound on a registered metric: ``min`` (at least) and/or ``max``."""

    metric: str = Field(min_length=1)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> GateRule:
        if self.min is None and self.max is None:
            raise ValueError(f"gate rule for {self.metric!r} needs a min or a max bound")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate rule for {self.metric!r} has min {self.min} > max {self.max}")
        return self

    def describe(self) -> str:
        """The bound in words, e.g. ``accuracy >= 0.8``."""
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return f"{self.metric} {' and '.join(bounds)}"


class ModelSpec(Frozen):
    """The registered model that scores a dataset, as ``models:/name@alias``.

    ``gate`` bounds the version's registered metrics: a version outside any bound (or
    without one of the metrics) is refused by the predictor and by ``landfall model
    promote``. ``challenger`` names a second alias of the same registered model that
    scores every batch beside the champion, for comparison only.
    """

    uri: str
    challenger: str | None = None
    gate: list[GateRule] = Field(default_factory=list)

    @field_validator("uri")
    @classmethod
    def _registered_alias(cls, value: str) -> str:
        name, _, alias = value.removeprefix("models:/").partition("@")
        if not value.startswith("models:/") or not name or not alias or "/" in name:
            raise ValueError(f"model uri must look like models:/name@alias, got {value!r}")
        return value

    @model_validator(mode="after")
    def _distinct_aliases(self) -> ModelSpec:
        if self.challenger is not None and self.challenger == self.alias:
            raise ValueError(f"the challenger alias {self.challenger!r} is the champion's alias")
        metrics = [rule.metric for rule in self.gate]
        if len(metrics) != len(set(metrics)):
            raise ValueError("each gate metric may appear once (put min and max in one rule)")
        return self

    @property
    def name(self) -> str:
        """The registered model's name."""
        return self.uri.removeprefix("models:/").split("@", 1)[0]

    @property
    def alias(self) -> str:
        """The alias that names the version to use."""
        return self.uri.split("@", 1)[1]


class DatasetConfig(Frozen):
    """Everything landfall needs to know about one dataset."""

    format: Literal["csv", "parquet", "json"] = "csv"
    # Where a partition lands, relative to the lake root (or a URI below it):
    # {dataset} and {partition} are filled in, e.g. "landing/{dataset}/date={partition}".
    raw_path: str = RAW_PATH_DEFAULT
    id_column: str = "id"
    columns: list[ColumnSpec]
    # Columns the files carry beyond the declared ones: reported either way, then
    # kept in the validated table or dropped from it.
    extra_columns: Literal["keep", "drop"] = "drop"
    rules: list[RuleSpec] = Field(default_factory=list)
    thresholds: Thresholds = Thresholds()
    feature_set: FeatureSet = FeatureSet()
    features: list[FeatureSpec]
    model: ModelSpec
    drift: DriftSettings = DriftSettings()

    @field_validator("raw_path")
    @classmethod
    def _raw_path_template(cls, value: str) -> str:
        from landfall.lake import OUTPUT_ZONES

        checked = check_path_template(value, allowed=("dataset", "partition"))
        first = checked.split("/", 2)
        # Landfall's own folders are never where data lands.
        if first[0] == "_landfall" or (
            first[0] == "{dataset}" and len(first) > 1 and first[1] in OUTPUT_ZONES
        ):
            raise ValueError(f"{value!r} lies in landfall's own {'/'.join(first[:2])} folder")
        return checked

    def drift_thresholds(self, default: float) -> dict[str, float | None]:
        """Each feature column's PSI threshold; None: not watched for drift.

        A column's own entry in ``drift.features`` wins over its feature's, which wins
        over ``drift.threshold``, which wins over ``default`` (reporting.psi_threshold).
        """
        dataset_default = self.drift.threshold or default
        thresholds: dict[str, float | None] = {}
        for feature in self.features:
            for column in feature.output_names():
                entry = self.drift.features.get(column) or self.drift.features.get(feature.name)
                if entry is not None and not entry.enabled:
                    thresholds[column] = None
                else:
                    own = entry.threshold if entry is not None else None
                    thresholds[column] = own or dataset_default
        return thresholds

    @model_validator(mode="after")
    def _consistent(self) -> DatasetConfig:
        names = [c.name for c in self.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"columns declared twice: {', '.join(duplicates)}")
        if self.id_column not in names:
            raise ValueError(f"id_column {self.id_column!r} is not among the declared columns")
        rules = [r.name for r in self.rules]
        if len(rules) != len(set(rules)):
            raise ValueError("rule names must be unique")
        for rule in self.rules:
            for column in _rule_columns(rule):
                if column not in names:
                    raise ValueError(f"rule {rule.name!r} names undeclared column {column!r}")
        unknown = sorted(set(self.thresholds.per_rule) - set(rules))
        if unknown:
            raise ValueError(f"thresholds.per_rule names unknown rule(s): {', '.join(unknown)}")
        # Two features making one column would leave the model one of them, silently;
        # Spark resolves names regardless of case, so x_A and x_a are one column too.
        made: dict[str, str] = {self.id_column.lower(): "the id column"}
        columns = set()
        for feature in self.features:
            for column in feature.output_names():
                if column.lower() in made:
                    raise ValueError(
                        f"feature {feature.name!r} makes column {column!r}, which "
                        f"{made[column.lower()]} already is (names are compared ignoring case)"
                    )
                made[column.lower()] = f"feature {feature.name!r}"
                columns.add(column)
        watched = {f.name for f in self.features} | columns
        unknown = sorted(set(self.drift.features) - watched)
        if unknown:
            raise ValueError(
                f"drift.features names what no feature makes: {', '.join(unknown)} "
                "(a feature's name or one of its columns)"
            )
        return self


def _rule_columns(rule: RuleSpec) -> list[str]:
    if isinstance(rule, UniqueRule):
        return list(rule.columns)
    column = getattr(rule, "column", None)
    return [column] if column else []
