"""What a dataset declares in config: its columns, data-quality rules and features.

A user brings a new dataset by writing these in YAML; nothing here is specific to one
dataset. Rules and features are tagged unions on ``kind``; a feature without a
``kind`` is a Spark SQL expression, the most common case.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

__all__ = [
    "AllowedValuesRule",
    "BucketizeFeature",
    "ColumnSpec",
    "DatePartsFeature",
    "ExpressionFeature",
    "ExpressionRule",
    "FeatureSet",
    "FeatureSpec",
    "NotNullRule",
    "OneHotFeature",
    "OrdinalFeature",
    "RangeRule",
    "ReferenceJoin",
    "RegexRule",
    "RuleSpec",
    "Thresholds",
    "UniqueRule",
]

# The column types a dataset may declare; each is a Spark SQL type name.
ColumnType = Literal["string", "double", "float", "int", "bigint", "boolean", "date", "timestamp"]
Severity = Literal["error", "warn"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnSpec(_Frozen):
    """A column the dataset's raw files must carry, with its type."""

    name: str
    type: ColumnType = "string"
    nullable: bool = True


# -- data-quality rules ------------------------------------------------------------


class _Rule(_Frozen):
    name: str = Field(description="unique per dataset; quarantined rows list it")
    severity: Severity = "error"


class NotNullRule(_Rule):
    """The column has a value."""

    kind: Literal["not_null"]
    column: str


class RangeRule(_Rule):
    """The column's value lies within [min, max] (either bound may be left out)."""

    kind: Literal["range"]
    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> RangeRule:
        if self.min is None and self.max is None:
            raise ValueError(f"range rule {self.name!r} needs min, max or both")
        return self


class AllowedValuesRule(_Rule):
    """The column's value is one of a fixed set."""

    kind: Literal["allowed_values"]
    column: str
    values: list[Any] = Field(min_length=1)


class RegexRule(_Rule):
    """The column's (string) value matches a regular expression (Java syntax)."""

    kind: Literal["regex"]
    column: str
    pattern: str


class UniqueRule(_Rule):
    """No two rows of the partition share these columns' values (e.g. the key)."""

    kind: Literal["unique"]
    columns: list[str] = Field(min_length=1)


class ExpressionRule(_Rule):
    """A free Spark SQL boolean expression that a valid row makes true."""

    kind: Literal["expression"]
    expr: str


RuleSpec = Annotated[
    NotNullRule | RangeRule | AllowedValuesRule | RegexRule | UniqueRule | ExpressionRule,
    Field(discriminator="kind"),
]


class Thresholds(_Frozen):
    """When a batch as a whole fails validation instead of going downstream."""

    max_invalid_fraction: float = Field(default=1.0, ge=0.0, le=1.0)
    per_rule: dict[str, float] = Field(
        default_factory=dict, description="rule name -> the largest failure fraction allowed"
    )


# -- features --------------------------------------------------------------------


class _Feature(_Frozen):
    name: str


class ExpressionFeature(_Feature):
    """A Spark SQL expression, cast to double."""

    kind: Literal["expr"] = "expr"
    expr: str


class BucketizeFeature(_Feature):
    """The index of the bucket a numeric column falls in, given ascending split points."""

    kind: Literal["bucketize"]
    column: str
    splits: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _ascending(self) -> BucketizeFeature:
        if any(b <= a for a, b in zip(self.splits, self.splits[1:], strict=False)):
            raise ValueError(f"feature {self.name!r}: splits must be strictly ascending")
        return self


Unseen = Literal["ignore", "error", "other"]


class OneHotFeature(_Feature):
    """One 0/1 column per vocabulary value, named ``<name>_<value>``."""

    kind: Literal["one_hot"]
    column: str
    vocabulary: list[str] = Field(min_length=1)
    # ignore: all zeros; other: an extra ``<name>_other`` column; error: fail the batch.
    unseen: Unseen = "ignore"


class OrdinalFeature(_Feature):
    """The value's position in a fixed vocabulary."""

    kind: Literal["ordinal"]
    column: str
    vocabulary: list[str] = Field(min_length=1)
    # ignore/other: ``unseen_value``; error: fail the batch.
    unseen: Unseen = "ignore"
    unseen_value: float = -1.0


DatePart = Literal["year", "month", "day", "dayofweek", "dayofyear", "hour", "weekofyear"]


class DatePartsFeature(_Feature):
    """Parts of a date or timestamp column, named ``<name>_<part>``."""

    kind: Literal["date_parts"]
    column: str
    parts: list[DatePart] = Field(min_length=1)


def _feature_kind(value: Any) -> str:
    # A feature written without a kind is an expression: the common case stays short.
    if isinstance(value, dict):
        return str(value.get("kind", "expr"))
    return str(getattr(value, "kind", "expr"))


FeatureSpec = Annotated[
    Annotated[ExpressionFeature, Tag("expr")]
    | Annotated[BucketizeFeature, Tag("bucketize")]
    | Annotated[OneHotFeature, Tag("one_hot")]
    | Annotated[OrdinalFeature, Tag("ordinal")]
    | Annotated[DatePartsFeature, Tag("date_parts")],
    Discriminator(_feature_kind),
]


class ReferenceJoin(_Frozen):
    """A reference table in the lake, joined as of the partition date.

    The newest partition of ``<lake>/<dataset>/<zone>/`` not after the batch's date is
    used, so a backfill sees the dimension as it was then.
    """

    name: str
    dataset: str
    zone: str = "validated"
    # Not "on": YAML reads a bare `on` key as the boolean true.
    keys: list[str] = Field(min_length=1, description="key columns present in both tables")
    columns: list[str] = Field(min_length=1, description="columns to bring in")
    prefix: str = ""


class FeatureSet(_Frozen):
    """A named, versioned set of features; recorded with every feature table."""

    name: str = "default"
    version: str = "1"
    references: list[ReferenceJoin] = Field(default_factory=list)
