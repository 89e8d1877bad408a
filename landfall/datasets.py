"""What a dataset declares in config: its columns, data-quality rules and features.

A user brings a new dataset by writing these in YAML; nothing here is specific to one
dataset. Rules and features are tagged unions on ``kind``; a feature without a
``kind`` is a Spark SQL expression, the most common case.
"""

from __future__ import annotations

import re
from string import Formatter
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

__all__ = [
    "AllowedValuesRule",
    "BucketizeFeature",
    "ColumnSpec",
    "RAW_PATH_DEFAULT",
    "DatePartsFeature",
    "DriftFeature",
    "DriftSettings",
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
    "check_path_template",
    "column_name",
    "fill_path_template",
    "relative_to_lake",
    "template_parts",
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
    """The column's value lies within its bounds; any bound may be left out.

    ``min``/``max`` are inclusive, ``min_exclusive``/``max_exclusive`` are not
    ("distance > 0" is ``min_exclusive: 0``); at most one lower and one upper bound.
    """

    kind: Literal["range"]
    column: str
    min: float | None = None
    max: float | None = None
    min_exclusive: float | None = None
    max_exclusive: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RangeRule:
        if self.min is not None and self.min_exclusive is not None:
            raise ValueError(f"range rule {self.name!r}: give min or min_exclusive, not both")
        if self.max is not None and self.max_exclusive is not None:
            raise ValueError(f"range rule {self.name!r}: give max or max_exclusive, not both")
        low, high = self.lower, self.upper
        if low is None and high is None:
            raise ValueError(
                f"range rule {self.name!r} needs min, max, min_exclusive or max_exclusive"
            )
        if low is not None and high is not None:
            empty = low[0] > high[0] or (low[0] == high[0] and (low[1] or high[1]))
            if empty:
                raise ValueError(f"range rule {self.name!r}: no value lies within its bounds")
        return self

    @property
    def lower(self) -> tuple[float, bool] | None:
        """The lower bound and whether it is exclusive."""
        if self.min_exclusive is not None:
            return self.min_exclusive, True
        return (self.min, False) if self.min is not None else None

    @property
    def upper(self) -> tuple[float, bool] | None:
        """The upper bound and whether it is exclusive."""
        if self.max_exclusive is not None:
            return self.max_exclusive, True
        return (self.max, False) if self.max is not None else None


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

    def output_names(self) -> list[str]:
        """The columns this feature adds to the feature table, in order."""
        return [self.name]


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
NameCase = Literal["keep", "lower"]
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_]")


def column_name(value: str, name_case: NameCase = "keep") -> str:
    """A vocabulary value as it appears in a column name.

    Lower-cased first if asked; then every character other than ASCII letters, digits
    and ``_`` becomes ``_``, one for one (``"9E-x"`` -> ``9E_x``), so the name reads the
    same in Spark SQL, parquet and a model's signature.
    """
    return _NOT_IN_A_NAME.sub("_", value.lower() if name_case == "lower" else value)


class OneHotFeature(_Feature):
    """One 0/1 column per vocabulary value, named ``<name>_<value>`` (see column_name)."""

    kind: Literal["one_hot"]
    column: str
    vocabulary: list[str] = Field(min_length=1)
    # ignore: all zeros; other: an extra ``<name>_other`` column; error: fail the batch.
    unseen: Unseen = "ignore"
    # keep: the value's case as it is (a model trained on ``code_9E`` finds it);
    # lower: lower-cased, as earlier releases always did.
    name_case: NameCase = "keep"

    def value_columns(self) -> list[str]:
        """The column of each vocabulary value, in vocabulary order."""
        return [f"{self.name}_{column_name(v, self.name_case)}" for v in self.vocabulary]

    def output_names(self) -> list[str]:
        other = [f"{self.name}_other"] if self.unseen == "other" else []
        return [*self.value_columns(), *other]

    @model_validator(mode="after")
    def _distinct_columns(self) -> OneHotFeature:
        seen: dict[str, str] = {}
        other = "(unseen values)"
        values = [*self.vocabulary, *([other] if self.unseen == "other" else [])]
        for value, column in zip(values, self.output_names(), strict=True):
            # Spark resolves column names regardless of case: x_A and x_a are one column.
            key = column.lower()
            if key in seen:
                # Say which rule made them one.
                earlier = seen[key]
                if value == other:
                    why = "unseen: other makes a column of its own"
                elif column_name(earlier) == column_name(value):
                    why = "characters other than A-Z a-z 0-9 _ become _"
                elif self.name_case == "lower":
                    why = "name_case is lower"
                else:
                    why = "Spark column names ignore case"
                raise ValueError(
                    f"feature {self.name!r}: values {earlier!r} and {value!r} both make "
                    f"column {column!r} ({why}); make the vocabulary's values distinct"
                )
            seen[key] = value
        return self


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

    def output_names(self) -> list[str]:
        return [f"{self.name}_{part}" for part in self.parts]


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
    """A reference table in the lake, joined on its keys.

    Either ``dataset`` (a landfall zone: the newest partition of
    ``<dataset>/<zone>/`` not after the batch's, so a backfill sees the dimension as it
    was then; committed outputs for landfall's zones, the landed layout for ``raw``) or
    ``path``: any folder in the lake, relative to its root. A ``path`` with
    ``{partition}`` in it is read as of the batch the same way (the newest existing
    folder whose partition is not after the batch's); one without is a static table.
    """

    name: str
    dataset: str | None = None
    zone: str = "validated"
    path: str | None = None
    format: Literal["parquet", "csv", "json"] = "parquet"
    # Not "on": YAML reads a bare `on` key as the boolean true.
    keys: list[str] = Field(min_length=1, description="key columns present in both tables")
    columns: list[str] = Field(min_length=1, description="columns to bring in")
    prefix: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> ReferenceJoin:
        if (self.dataset is None) == (self.path is None):
            raise ValueError(f"reference {self.name!r} needs either dataset or path (not both)")
        if self.path is not None:
            if "zone" in self.model_fields_set:
                raise ValueError(
                    f"reference {self.name!r}: zone goes with dataset; a path names its folder"
                )
            try:
                check_path_template(self.path, allowed=("partition",), partition_required=False)
            except ValueError as exc:
                raise ValueError(f"reference {self.name!r}: path {self.path!r}: {exc}") from None
        return self


class FeatureSet(_Frozen):
    """A named, versioned set of features; recorded with every feature table."""

    name: str = "default"
    version: str = "1"
    references: list[ReferenceJoin] = Field(default_factory=list)


# -- drift -----------------------------------------------------------------------


class DriftFeature(_Frozen):
    """How the reporter watches one feature (all its columns) or one column for drift."""

    enabled: bool = True
    threshold: float | None = Field(default=None, gt=0, description="PSI over which it is flagged")


class DriftSettings(_Frozen):
    """Per-dataset drift settings; anything unset falls back to ``reporting.psi_threshold``."""

    threshold: float | None = Field(default=None, gt=0)
    # A feature's name (covers every column it makes) or one output column -> settings;
    # a column's own entry wins over its feature's.
    features: dict[str, DriftFeature] = Field(default_factory=dict)


# -- path templates --------------------------------------------------------------

# Where a dataset's landed partitions are, unless its ``raw_path`` says otherwise.
RAW_PATH_DEFAULT = "{dataset}/raw/{partition}"
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _fields(text: str) -> list[tuple[str, str | None]]:
    """(literal text, placeholder or None) pieces of a template; ValueError if malformed."""
    pieces = []
    for literal, field, spec, conversion in Formatter().parse(text):
        if field is not None and (spec or conversion):
            raise ValueError(f"placeholder {{{field}}} takes no format spec or conversion")
        pieces.append((literal, field))
    return pieces


def check_path_template(
    template: str, *, allowed: tuple[str, ...], partition_required: bool = True
) -> str:
    """Check a lake path template; return it without a trailing ``/``.

    Relative to the lake root (``landing/{dataset}/date={partition}``) or a full URI;
    placeholders from ``allowed`` only; ``{partition}`` at most once (exactly once if
    required), with at least one fixed folder before the folder holding it; no
    empty, ``.`` or ``..`` folders. Raises ValueError saying what is wrong.
    """
    text = template.rstrip("/")
    try:
        pieces = _fields(text)
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc} (write {{{{ or }}}} for a brace)") from None
    known = ", ".join(f"{{{name}}}" for name in allowed)
    for _, field in pieces:
        if field is not None and field not in allowed:
            raise ValueError(f"unknown placeholder {{{field}}} (known: {known})")
    uses = sum(1 for _, field in pieces if field == "partition")
    if uses > 1 or (partition_required and uses == 0):
        raise ValueError(
            "needs {partition} exactly once, where the partition's folder name goes"
            if partition_required
            else "may hold {partition} once at most"
        )
    match = _URI.match(text)
    if match:
        # scheme://authority/...: the authority (a bucket, or nothing for file:///) is
        # not a folder of the layout.
        folders = text[match.end() :].split("/")[1:]
    elif text.startswith("/"):
        raise ValueError("must be relative to the lake root, or a full URI (scheme://...)")
    else:
        folders = text.split("/")
    for folder in folders:
        if folder in ("", ".", ".."):
            raise ValueError(f"holds an empty, '.' or '..' folder ({folder!r})")
    holding = [i for i, folder in enumerate(folders) if "{partition}" in folder]
    if holding and holding[0] == 0:
        raise ValueError("needs a fixed folder before the one holding {partition}")
    return text


def fill_path_template(template: str, **values: str) -> str:
    """The path a (checked) template names for these placeholder values."""
    return template.format(**values)


def template_parts(template: str, **values: str) -> tuple[str, re.Pattern[str], str] | None:
    """A relative template with ``{partition}``, split around the folder holding it.

    Returns (the folder before it, filled in; a pattern matching that folder's name
    whose group ``partition`` is the partition; what follows it, filled in), or None if
    the template has no ``{partition}``.
    """
    folders = template.split("/")
    for i, folder in enumerate(folders):
        if "{partition}" not in folder:
            continue
        pattern = ""
        for literal, field in _fields(folder):
            pattern += re.escape(literal)
            if field == "partition":
                pattern += "(?P<partition>[^/]+)"
            elif field is not None:
                pattern += re.escape(values[field])
        before = fill_path_template("/".join(folders[:i]), **values)
        after = fill_path_template("/".join(folders[i + 1 :]), **values)
        return before, re.compile(f"^{pattern}$"), after
    return None


def relative_to_lake(template: str, lake_uri: str) -> str:
    """A checked template relative to the lake root; ValueError if a URI lies outside it.

    ``lake_uri`` is the configured root: a local absolute path or an ``s3a://`` URI.
    """
    match = _URI.match(template)
    if match is None:
        return template
    scheme = match.group(1).lower()
    if scheme == "file":
        where = template[len(match.group(0)) :]
        root = lake_uri[len("file://") :] if lake_uri.startswith("file://") else lake_uri
    else:
        store = "s3a" if scheme in ("s3", "s3n", "s3a") else scheme
        where = f"{store}://{template[match.end() :]}"
        root_match = _URI.match(lake_uri)
        root = lake_uri
        if root_match and root_match.group(1).lower() in ("s3", "s3n", "s3a"):
            root = f"s3a://{lake_uri[root_match.end() :]}"
    root = root.rstrip("/")
    if not where.startswith(root + "/"):
        raise ValueError(
            f"{template!r} is outside the lake ({lake_uri}); landfall reads only below "
            "lake_root: write the path relative to it"
        )
    relative = where[len(root) + 1 :]
    if "{partition}" in relative.split("/")[0]:
        raise ValueError(
            f"{template!r} needs a fixed folder below the lake root before the one holding "
            "{partition}"
        )
    return relative
