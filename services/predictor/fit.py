"""Whether a feature table fits a model's signature: names, their case, and types.

Pure Python over ``{column: Spark simple type}``, so one set of rules serves three
callers: the predictor's check of each batch's real feature table (``check_signature``),
its check at start of the table the featurizer will write (known from the config alone),
and ``landfall check``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.predictor.scorer import InputColumn

__all__ = ["fit_problems", "signature_problems", "unused_columns", "widened_type"]

# Spark simple types each model input type accepts: the type itself and what widens to it.
_INTEGRAL = ("tinyint", "smallint", "int", "bigint")
_ACCEPTS: dict[str, tuple[str, ...]] = {
    "int": ("tinyint", "smallint", "int"),
    "bigint": _INTEGRAL,
    "float": (*_INTEGRAL, "float", "decimal"),
    "double": (*_INTEGRAL, "float", "double", "decimal"),
    "boolean": ("boolean",),
    "string": ("string",),
    "binary": ("binary",),
    "timestamp": ("timestamp", "timestamp_ntz", "date"),
}


def widened_type(column: InputColumn, actual: str, problems: list[str]) -> str | None:
    """The type the column is widened to, None if it is used as it is.

    A type that does not widen safely to the model's is added to ``problems``.
    """
    expected = column.spark_type
    if expected is None or actual == expected:
        return None
    base = actual.split("(", 1)[0]  # decimal(10,2) -> decimal
    if base not in _ACCEPTS.get(expected, ()):
        problems.append(f"column {column.name} is {actual} but the model expects {expected}")
    return expected


def signature_problems(inputs: Sequence[InputColumn], features: dict[str, str]) -> list[str]:
    """Each required model input the feature table (name -> Spark type) lacks.

    A missing input whose name matches a feature column but for its case gets a "did
    you mean" (one-hot column names keep the value's case; a model trained elsewhere
    may not).
    """
    by_folded: dict[str, list[str]] = {}
    for name in features:
        by_folded.setdefault(name.casefold(), []).append(name)
    wanted = {column.name for column in inputs}
    problems = []
    for column in inputs:
        if column.name in features or not column.required:
            continue
        near = [n for n in by_folded.get(column.name.casefold(), []) if n not in wanted]
        hint = f" (did you mean {' or '.join(near)}? only the case differs)" if near else ""
        problems.append(f"the model's input {column.name} is not a feature column{hint}")
    return problems


def fit_problems(inputs: Sequence[InputColumn], features: dict[str, str]) -> list[str]:
    """Every way the feature table cannot be scored: missing inputs, then unsafe types."""
    problems = signature_problems(inputs, features)
    for column in inputs:
        if column.name in features:
            widened_type(column, features[column.name], problems)
    return problems


def unused_columns(
    inputs: Sequence[InputColumn], features: dict[str, str], id_column: str
) -> list[str]:
    """Feature columns the model does not take: harmless, often a renamed feature."""
    wanted = {column.name for column in inputs}
    return [name for name in features if name not in wanted and name != id_column]
