"""How one registered model scores: its inputs, its kind, its output columns.

The predictor wraps every registered version in a small pyfunc model, the *scorer*,
and hands that to ``mlflow.pyfunc.spark_udf``: the scorer's output signature (a class
and one probability per class for a classifier; a value for anything else) is what
drives the UDF's result type. Inside, a classifier's ``predict_proba`` gives the
probabilities and the class is the most probable one; any other pyfunc flavor is
called through its own ``predict``.

The plan (:class:`ScorerPlan`) is made once per batch on the driver; the per-row work
(:func:`score_frame`) is a plain function of a pandas frame, so the benchmark's
single-process baseline runs exactly the same code.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

__all__ = [
    "PREDICTION_COLUMN",
    "PROBABILITY_PREFIX",
    "InputColumn",
    "ModelScorer",
    "ScorerPlan",
    "plan_scorer",
    "save_scorer",
    "score_frame",
]

PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
ENTRY_SCRIPT = Path(__file__).with_name("scorer_entry.py")

Kind = Literal["classifier", "regressor"]

# Spark simple type names <- numpy dtype kinds, for predictions.
_NUMPY_TO_SPARK = {
    "int64": "bigint",
    "uint64": "bigint",
    "uint32": "bigint",
    "int32": "int",
    "uint16": "int",
    "int16": "int",
    "uint8": "int",
    "int8": "int",
    "float64": "double",
    "float32": "float",
    "bool": "boolean",
}
# MLflow DataType name -> (Spark simple type name, numpy dtype or None for object).
_MLFLOW_TYPES: dict[str, tuple[str, str | None]] = {
    "boolean": ("boolean", "bool"),
    "integer": ("int", "int32"),
    "long": ("bigint", "int64"),
    "float": ("float", "float32"),
    "double": ("double", "float64"),
    "string": ("string", None),
    "binary": ("binary", None),
    "datetime": ("timestamp", None),
}
_SPARK_TO_NUMPY = {spark: dtype for spark, dtype in _MLFLOW_TYPES.values()}


@dataclass(frozen=True)
class InputColumn:
    """One model input: its name and, when the signature says, its Spark type."""

    name: str
    spark_type: str | None
    required: bool = True


@dataclass(frozen=True)
class ScorerPlan:
    """What the driver decided about one model version, shipped to the workers."""

    inputs: list[InputColumn]
    kind: Kind
    prediction_type: str  # a Spark simple type name
    # Classifiers scored through predict_proba: the classes, in the model's order,
    # and the column holding each one's probability.
    classes: list[Any] = field(default_factory=list)
    probability_columns: list[str] = field(default_factory=list)

    @property
    def uses_probabilities(self) -> bool:
        """Whether the scorer calls ``predict_proba``."""
        return bool(self.probability_columns)

    @property
    def output_columns(self) -> list[str]:
        """The scorer's output columns, in order."""
        return [PREDICTION_COLUMN, *self.probability_columns]

    def to_config(self) -> dict[str, Any]:
        """A JSON-able form, carried as the scorer's ``model_config``."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ScorerPlan:
        """The inverse of :meth:`to_config`."""
        return cls(
            inputs=[InputColumn(**column) for column in config["inputs"]],
            kind=config["kind"],
            prediction_type=config["prediction_type"],
            classes=list(config.get("classes", [])),
            probability_columns=list(config.get("probability_columns", [])),
        )


def _probability_columns(classes: list[Any]) -> list[str]:
    names: list[str] = []
    for label in classes:
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        name = PROBABILITY_PREFIX + (re.sub(r"[^0-9A-Za-z_]+", "_", str(label)).strip("_") or "_")
        while name in names:
            name += "_"
        names.append(name)
    return names


def _python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _signature_output_type(metadata: Any) -> str | None:
    """The Spark type of a single-column output signature, if that is what it is."""
    schema = metadata.get_output_schema()
    if schema is None or len(schema.inputs) != 1:
        return None
    spec = schema.inputs[0]
    declared: Any = getattr(spec, "type", None)
    if isinstance(declared, np.dtype):  # a TensorSpec holds a numpy dtype
        shape = getattr(spec, "shape", None) or ()
        return _NUMPY_TO_SPARK.get(declared.name) if len(shape) <= 1 else None
    name = getattr(declared, "name", None)  # a ColSpec holds an MLflow DataType
    return _MLFLOW_TYPES[name][0] if name in _MLFLOW_TYPES else None


def _prediction_type_for(classes: np.ndarray, declared: str | None) -> str:
    """The prediction column's type: the signature's if the classes fit it, else theirs."""
    if declared is not None:
        target = _SPARK_TO_NUMPY.get(declared)
        try:
            if target is not None and np.array_equal(classes.astype(target), classes):
                return declared
            if target is None and declared == "string":
                return declared
        except (TypeError, ValueError):
            pass
    if classes.dtype.kind in "iub" or classes.dtype.kind == "f":
        return _NUMPY_TO_SPARK.get(classes.dtype.name, "double")
    return "string"


def plan_scorer(model: Any, fallback_inputs: list[str]) -> ScorerPlan:
    """Decide how a loaded pyfunc model scores, from its signature and its flavor.

    ``fallback_inputs`` are the columns to pass when the signature names none.
    """
    metadata = model.metadata
    schema = metadata.get_input_schema()
    inputs: list[InputColumn]
    if schema is not None and schema.has_input_names():
        inputs = []
        for spec in schema.inputs:
            type_name = getattr(getattr(spec, "type", None), "name", None)
            spark_type = _MLFLOW_TYPES[type_name][0] if type_name in _MLFLOW_TYPES else None
            inputs.append(
                InputColumn(spec.name, spark_type, required=getattr(spec, "required", True))
            )
    else:
        inputs = [InputColumn(name, None) for name in fallback_inputs]
    declared = _signature_output_type(metadata)
    try:
        raw = model.get_raw_model()
    except Exception:  # noqa: BLE001 - flavors without a raw model simply have no probabilities
        raw = None
    classes = getattr(raw, "classes_", None)
    if raw is not None and hasattr(raw, "predict_proba") and classes is not None:
        classes = np.asarray(classes)
        if classes.ndim == 1 and len(classes) >= 2:
            labels = [_python_scalar(c) for c in classes]
            return ScorerPlan(
                inputs=inputs,
                kind="classifier",
                prediction_type=_prediction_type_for(classes, declared),
                classes=labels,
                probability_columns=_probability_columns(labels),
            )
    prediction_type = declared or "double"
    # Labels, not quantities: equality is what comparing two such models means.
    is_label = prediction_type in ("string", "boolean")
    return ScorerPlan(
        inputs=inputs,
        kind="classifier" if is_label else "regressor",
        prediction_type=prediction_type,
    )


def _as_prediction(values: Any, spark_type: str) -> np.ndarray | pd.Series:
    if isinstance(values, pd.DataFrame):
        values = values.iloc[:, 0]
    elif isinstance(values, dict):
        values = next(iter(values.values()))
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"the model returned {array.ndim}-dimensional predictions, not one per row"
        )
    target = _SPARK_TO_NUMPY.get(spark_type)
    if spark_type == "string":
        return pd.Series(array).map(lambda v: None if v is None else str(v))
    return array.astype(target) if target else array


def score_frame(plan: ScorerPlan, model: Any, raw: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Score one batch of rows: the prediction, and for a classifier the probabilities."""
    names = [c.name for c in plan.inputs if c.name in frame.columns]
    features = frame[names] if list(frame.columns) != names else frame
    if plan.uses_probabilities:
        probabilities = np.asarray(raw.predict_proba(features), dtype="float64")
        best = np.asarray(plan.classes)[probabilities.argmax(axis=1)]
        columns: dict[str, Any] = {PREDICTION_COLUMN: _as_prediction(best, plan.prediction_type)}
        for i, name in enumerate(plan.probability_columns):
            columns[name] = probabilities[:, i]
        return pd.DataFrame(columns, index=frame.index)
    prediction = _as_prediction(model.predict(features), plan.prediction_type)
    return pd.DataFrame({PREDICTION_COLUMN: prediction}, index=frame.index)


def load_for_scoring(path: str | Path) -> tuple[Any, Any]:
    """The pyfunc model at ``path`` and its raw model (or None)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(path))
    try:
        raw = model.get_raw_model()
    except Exception:  # noqa: BLE001 - see plan_scorer
        raw = None
    return model, raw


def _mlflow_output_type(spark_type: str) -> str:
    reverse = {spark: name for name, (spark, _) in _MLFLOW_TYPES.items()}
    return reverse.get(spark_type, "string")


class ModelScorer(PythonModel):
    """The pyfunc wrapper spark_udf loads on each worker: one registered model, scored."""

    def load_context(self, context: Any) -> None:
        """Load the wrapped registered model once per worker process."""
        self.plan = ScorerPlan.from_config(dict(context.model_config))
        self.model, self.raw = load_for_scoring(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """Score one Arrow batch."""
        return score_frame(self.plan, self.model, self.raw, model_input)


def save_scorer(plan: ScorerPlan, model_dir: Path, destination: Path) -> Path:
    """Save the scorer around a local copy of a registered model; return its directory."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    outputs: list[ColSpec | TensorSpec] = [
        ColSpec(_mlflow_output_type(plan.prediction_type), PREDICTION_COLUMN)
    ]
    outputs += [ColSpec("double", name) for name in plan.probability_columns]
    # No input schema on purpose: the driver checks the feature table against the
    # wrapped model's signature once per batch, instead of once per Arrow batch.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example.*")
        mlflow.pyfunc.save_model(
            str(destination),
            python_model=str(ENTRY_SCRIPT),
            artifacts={"model": str(model_dir)},
            model_config=plan.to_config(),
            signature=ModelSignature(inputs=None, outputs=Schema(outputs)),
            pip_requirements=[],
        )
    return destination
