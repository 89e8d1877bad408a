"""Scoring: registered MLflow models over a feature table, keyed by record id.

One Spark job reads the features, scores them with the champion (and the challenger,
when the dataset names one) and writes one prediction row per feature row, counting
the rows and comparing the two models as it goes. Each prediction stays on the row of
the id it belongs to, so no join is needed and no row can be lost or repeated.

Two engines run that job (``scoring.engine``): ``arrow``, the default, runs Spark tasks
that move the data with pyarrow (``arrow_tasks.py``); ``spark_udf`` scores through
``mlflow.pyfunc.spark_udf`` in a DataFrame. Both call the same per-batch code
(``scorer.score_frame``) and write the same columns.

Before any of that, the feature table is checked against each model's signature: a
missing input or a type that cannot be widened safely (Spark's own widening: ints to
longs or doubles, floats to doubles, dates to timestamps) fails the batch with the
column named, instead of a worker crashing half-way through the job (the rules are in
``fit.py``, shared with the predictor's check at start and ``landfall check``).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException, PythonException

from landfall.arrow_io import location_of, plan_tasks
from landfall.config import DatasetConfig, ScoringSettings
from landfall.errors import StageFailedError
from landfall.lake import LakePath
from landfall.object_store import StoreSettings
from landfall.registry import ResolvedModel, translate_registry_errors
from landfall.stage import schema_fingerprint, spark_job_group
from services.predictor.arrow_tasks import (
    ModelShipment,
    TaskOutcome,
    output_schema,
    run_task,
)
from services.predictor.fit import widened_type
from services.predictor.scorer import (
    PREDICTION_COLUMN,
    ScorerPlan,
    load_for_scoring,
    plan_scorer,
    save_scorer,
)

__all__ = [
    "CHALLENGER_PREFIX",
    "PREDICTION_COLUMN",
    "Comparison",
    "PredictionResult",
    "check_signature",
    "prepare_scorer",
    "score_partition",
]

CHALLENGER_PREFIX = "challenger_"


@dataclass(frozen=True)
class Scorer:
    """One model version ready to score: its plan, and its spark_udf or its Spark files."""

    model: ResolvedModel
    plan: ScorerPlan
    udf: Callable[..., Column] | None = None  # the spark_udf engine's
    files: str | None = None  # the arrow engine's: the model directory's Spark files name


@dataclass(frozen=True)
class Comparison:
    """How the challenger's predictions compare with the champion's over one batch."""

    rows_compared: int
    agreement: float | None = None  # classifiers: fraction of rows with the same class
    mean_abs_diff: float | None = None  # regressors: mean |champion - challenger|

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the comparison."""
        return {
            "rows_compared": self.rows_compared,
            "agreement": self.agreement,
            "mean_abs_diff": self.mean_abs_diff,
        }


@dataclass(frozen=True)
class PredictionResult:
    """What one scored partition holds."""

    rows: int
    schema: str
    kind: str
    columns: list[str]
    probability_columns: list[str] = field(default_factory=list)
    comparison: Comparison | None = None
    challenger_skipped: str | None = None  # why a configured challenger did not score


# ----------------------------------------------------------------- model preparation


class _ScorerCache:
    """Prepared scorers by model version: registered versions never change.

    Preparing means downloading the version, planning it and building its spark_udf
    (which copies the model once more); a service scoring daily batches with the same
    version does that once. A few versions are kept, the oldest dropped.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[Scorer, Path]] = OrderedDict()
        self._lock = threading.Lock()
        atexit.register(self.clear)

    def clear(self) -> None:
        """Forget every scorer and remove its local copy of the model."""
        with self._lock:
            while self._entries:
                _, (_, directory) = self._entries.popitem()
                shutil.rmtree(directory, ignore_errors=True)

    def get(self, key: tuple[Any, ...]) -> Scorer | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[Any, ...], scorer: Scorer, directory: Path) -> None:
        with self._lock:
            self._entries[key] = (scorer, directory)
            while len(self._entries) > self.size:
                _, (_, old) = self._entries.popitem(last=False)
                shutil.rmtree(old, ignore_errors=True)


_CACHE = _ScorerCache()


def _download(model: ResolvedModel, destination: Path) -> Path:
    import mlflow.artifacts

    return Path(
        translate_registry_errors(
            f"model {model.uri} cannot be downloaded from the registry",
            lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=model.uri, dst_path=str(destination)
            ),
        )
    )


def prepare_scorer(
    spark: SparkSession, model: ResolvedModel, fallback: list[str], engine: str = "arrow"
) -> Scorer:
    """Download and plan one model version, and ship it to the engine (cached)."""
    import mlflow
    import mlflow.pyfunc

    key = (id(spark), mlflow.get_registry_uri(), model.name, model.version, tuple(fallback))
    cached = _CACHE.get((*key, engine))
    if cached is not None:
        return cached
    directory = Path(tempfile.mkdtemp(prefix=f"landfall-{model.name}-{model.version}-"))
    try:
        local = _download(model, directory / "model")
        try:
            loaded, _raw = load_for_scoring(local)
        except Exception as exc:
            raise StageFailedError(
                f"model {model.uri} cannot be loaded here: {type(exc).__name__}: {exc}"
            ) from exc
        plan = plan_scorer(loaded, fallback)
        if engine == "spark_udf":
            scorer_dir = save_scorer(plan, local, directory / "scorer")
            # env_manager="local": the service's own environment already has the model's
            # packages, and building a fresh one would need the network. The result type
            # comes from the scorer's output signature.
            udf = mlflow.pyfunc.spark_udf(spark, str(scorer_dir), env_manager="local")
            scorer = Scorer(model=model, plan=plan, udf=udf)
        else:
            # Every executor fetches the model once, as an archive: Spark ships a folder
            # only on a local master, an archive to any cluster, unpacked under its name
            # (unique: the folder is a mkdtemp). It lies inside the folder the cache removes.
            archive = shutil.make_archive(
                str(directory / directory.name), "zip", root_dir=directory, base_dir="model"
            )
            spark.sparkContext.addArchive(archive)
            scorer = Scorer(model=model, plan=plan, files=Path(archive).name)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    _CACHE.put((*key, engine), scorer, directory)
    return scorer


ModelInputs = list[tuple[str, str | None]]  # each input column, and the type to widen it to


def check_signature(model: ResolvedModel, plan: ScorerPlan, features: DataFrame) -> ModelInputs:
    """The model's input columns in the feature table, and what each is widened to.

    A missing required column or a type that does not widen safely fails the batch,
    naming every offending column at once.
    """
    types = {f.name: f.dataType.simpleString() for f in features.schema.fields}
    problems: list[str] = []
    columns: ModelInputs = []
    for column in plan.inputs:
        if column.name not in types:
            if column.required:
                problems.append(f"column {column.name} is missing")
            continue
        columns.append((column.name, widened_type(column, types[column.name], problems)))
    if problems:
        raise StageFailedError(
            f"the feature table does not match the signature of model {model.uri}: "
            + "; ".join(problems)
            + f" (the table has {', '.join(f'{n} {t}' for n, t in types.items())})",
            details={"model_uri": model.uri, "problems": "; ".join(problems)},
        )
    return columns


def _input_columns(inputs: ModelInputs) -> list[Column]:
    columns = []
    for name, widened in inputs:
        source = F.col(f"`{name}`")
        columns.append((source if widened is None else source.cast(widened)).alias(name))
    return columns


# ----------------------------------------------------------------------- scoring


def _observed(frame: DataFrame, kind: str) -> tuple[DataFrame, Observation]:
    """The frame, observed: its row count and the champion/challenger comparison.

    Observed metrics are gathered while the write runs, so counting and comparing
    cost no second Spark job over the predictions.
    """
    metrics = [F.count(F.lit(1)).alias("rows")]
    if CHALLENGER_PREFIX + PREDICTION_COLUMN in frame.columns:
        champion = F.col(PREDICTION_COLUMN)
        challenger = F.col(CHALLENGER_PREFIX + PREDICTION_COLUMN)
        both = champion.isNotNull() & challenger.isNotNull()
        if kind == "classifier":
            measure = F.when(
                both, (champion.cast("string") == challenger.cast("string")).cast("int")
            )
        else:
            measure = F.when(both, F.abs(champion.cast("double") - challenger.cast("double")))
        metrics += [F.count(measure).alias("compared"), F.avg(measure).alias("measure")]
    observation = Observation(f"predictions-{uuid.uuid4().hex[:8]}")
    return frame.observe(observation, *metrics), observation


def _comparison(observed: dict[str, Any], kind: str) -> Comparison | None:
    if "compared" not in observed:
        return None
    value = None if observed["measure"] is None else float(observed["measure"])
    return Comparison(
        rows_compared=int(observed["compared"]),
        agreement=value if kind == "classifier" else None,
        mean_abs_diff=value if kind != "classifier" else None,
    )


def _python_failure(exc: Exception) -> StageFailedError:
    # The worker's traceback ends with the model's own message; keep that, not the JVM's.
    message = str(exc).strip().splitlines()
    tail = next((line for line in reversed(message) if line.strip()), str(exc))
    return StageFailedError(f"the model failed while scoring: {tail.strip()}")


def _feature_table(spark: SparkSession, path: LakePath | Path, id_column: str) -> DataFrame:
    """The feature table to score; refused if unreadable or without its id column."""
    try:
        features = spark.read.parquet(str(path))
    except AnalysisException as exc:
        raise StageFailedError(
            f"the feature table at {_shown(path)} cannot be read: {exc}"
        ) from exc
    if id_column not in features.columns:
        raise StageFailedError(
            f"the feature table has no id column {id_column!r} "
            f"(it has {', '.join(features.columns)})"
        )
    return features


def _scorers(
    spark: SparkSession,
    features: DataFrame,
    id_column: str,
    model: ResolvedModel,
    challenger: ResolvedModel | None,
    engine: str,
) -> tuple[Scorers, str | None]:
    """The champion's scorer, and the challenger's unless it cannot score this table."""
    # Without a named signature the model takes every feature column, in table order.
    fallback = [c for c in features.columns if c != id_column]
    champion = prepare_scorer(spark, model, fallback, engine)
    scorers: Scorers = [("", champion, check_signature(model, champion.plan, features))]
    skipped = None
    if challenger is not None:
        # The challenger only shadows the champion: a challenger that cannot score this
        # table is skipped (and said so), never a reason to fail the batch.
        try:
            candidate = prepare_scorer(spark, challenger, fallback, engine)
            inputs = check_signature(challenger, candidate.plan, features)
            scorers.append((CHALLENGER_PREFIX, candidate, inputs))
        except StageFailedError as exc:
            skipped = exc.reason
    return scorers, skipped


def score_partition(
    spark: SparkSession,
    dataset: DatasetConfig,
    model: ResolvedModel,
    features_path: LakePath | Path,
    predictions_path: LakePath | Path,
    *,
    challenger: ResolvedModel | None = None,
    expected_rows: int | None = None,
    scoring: ScoringSettings | None = None,
    store: StoreSettings | None = None,
) -> PredictionResult:
    """Score every feature row with the exact model version(s); one prediction per id.

    ``expected_rows`` (the feature table's row count, if the caller knows it) is what
    the predictions must number; otherwise the table is counted. ``store``: the object
    store's (or HDFS's) settings when the lake is in one (the arrow engine's tasks reach
    it directly).
    """
    scoring = scoring or ScoringSettings()
    id_column = dataset.id_column
    features = _feature_table(spark, features_path, id_column)
    scorers, skipped = _scorers(spark, features, id_column, model, challenger, scoring.engine)
    champion = scorers[0][1]
    kind = champion.plan.kind
    try:
        with spark_job_group(spark, "predict"):
            if scoring.engine == "spark_udf":
                rows, comparison = _score_with_spark_udf(
                    features, id_column, scorers, kind, predictions_path
                )
            else:
                rows, comparison = _score_with_arrow_tasks(
                    spark, scoring, features_path, id_column, scorers, kind, predictions_path, store
                )
    except PythonException as exc:  # raised in the model's code, not by Spark itself
        raise _python_failure(exc) from exc
    # Counted from the parquet footers: no scan of the features.
    expected = features.count() if expected_rows is None else expected_rows
    if rows != expected:
        raise StageFailedError(
            f"scored {rows} rows from {expected} feature rows: refusing to commit"
        )
    predictions = spark.read.parquet(str(predictions_path))  # its footers: no scan
    return PredictionResult(
        rows=rows,
        schema=schema_fingerprint(predictions),
        kind=kind,
        columns=predictions.columns,
        probability_columns=list(champion.plan.probability_columns),
        comparison=comparison,
        challenger_skipped=skipped,
    )


Scorers = list[tuple[str, Scorer, ModelInputs]]  # (column prefix, scorer, its inputs)


def _shown(path: LakePath | Path) -> str:
    # Lake-relative where known: errors travel into events, which name no server path.
    return path.rel if isinstance(path, LakePath) else str(path)


def _score_with_spark_udf(
    features: DataFrame,
    id_column: str,
    scorers: Scorers,
    kind: str,
    predictions_path: LakePath | Path,
) -> tuple[int, Comparison | None]:
    """The spark_udf engine: one DataFrame job, counted and compared by observed metrics."""
    # One projection calls each model once (its outputs come back as a struct); the next
    # names the struct's fields and adds the exact version every row was scored with.
    scored_columns: list[Column] = [F.col(f"`{id_column}`")]
    output: list[Column] = [F.col(f"`{id_column}`")]
    for prefix, scorer, inputs in scorers:
        assert scorer.udf is not None, "prepared for the spark_udf engine"
        result = scorer.udf(F.struct(*_input_columns(inputs)))
        if scorer.plan.probability_columns:
            struct = f"_{prefix or 'champion_'}scored"
            scored_columns.append(result.alias(struct))
            output += [
                F.col(f"`{struct}`.`{name}`").alias(prefix + name)
                for name in scorer.plan.output_columns
            ]
        else:
            scored_columns.append(result.alias(prefix + PREDICTION_COLUMN))
            output.append(F.col(prefix + PREDICTION_COLUMN))
        if not prefix:
            output.append(F.lit(scorer.model.name).alias("model_name"))
        output += [
            F.lit(scorer.model.version).alias(prefix + "model_version"),
            F.lit(scorer.model.uri).alias(prefix + "model_uri"),
        ]
    scored = features.select(*scored_columns)
    predictions, observation = _observed(scored.select(*output), kind)
    predictions.write.mode("overwrite").parquet(str(predictions_path))
    observed = observation.get
    return int(observed["rows"]), _comparison(observed, kind)


def _score_with_arrow_tasks(
    spark: SparkSession,
    scoring: ScoringSettings,
    features_path: LakePath | Path,
    id_column: str,
    scorers: Scorers,
    kind: str,
    predictions_path: LakePath | Path,
    store: StoreSettings | None = None,
) -> tuple[int, Comparison | None]:
    """The arrow engine: one Spark job of pyarrow tasks, each writing its part file."""
    shipments = []
    for prefix, scorer, inputs in scorers:
        assert scorer.files is not None, "prepared for the arrow engine"
        shipments.append(
            ModelShipment(
                prefix=prefix,
                name=scorer.model.name,
                version=scorer.model.version,
                uri=scorer.model.uri,
                files=scorer.files,
                plan=scorer.plan.to_config(),
                inputs=tuple(inputs),
            )
        )
    context = spark.sparkContext
    tasks, table_schema = plan_tasks(
        location_of(features_path), context.defaultParallelism, scoring.rows_per_task, store
    )
    schema = output_schema(table_schema.field(id_column), shipments)
    predictions_path.mkdir(parents=True, exist_ok=True)
    codec = spark.conf.get("spark.sql.parquet.compression.codec", "snappy") or "snappy"
    run = functools.partial(
        run_task,
        models=shipments,
        schema=schema,
        id_column=id_column,
        output=location_of(predictions_path),
        store=store,
        batch_rows=scoring.batch_rows,
        compression="none" if codec in ("none", "uncompressed") else codec,
        model_threads=scoring.model_threads,
    )
    outcomes: list[TaskOutcome] = context.parallelize(tasks, len(tasks)).map(run).collect()
    rows = sum(o.rows for o in outcomes)
    if len(shipments) < 2:
        return rows, None
    compared = sum(o.compared for o in outcomes)
    value = sum(o.measure for o in outcomes) / compared if compared else None
    return rows, Comparison(
        rows_compared=compared,
        agreement=value if kind == "classifier" else None,
        mean_abs_diff=value if kind != "classifier" else None,
    )
