"""`landfall check`: what a dataset's batch would do, found before the first event.

A new dataset usually fails late: a feature column the model does not know is found
by the predictor after validation and featurization ran over the whole partition. The
check runs each stage's own code on a bounded sample of a landed partition (or of a
sample file) in a local Spark session, in a scratch folder, then asks the registry:

1. the landed data is found and read (the dataset's raw layout, its format);
2. validation: rows per rule, the quality thresholds;
3. featurization: the feature columns produced;
4. the model alias resolves, and the version passes the dataset's quality gate;
5. the feature table matches the model's signature: missing and unused columns, types,
   and "did you mean" when only the case differs;
6. a few rows are scored.

Every step that can run, runs, so one check names every problem; the command exits
non-zero when any step found one. Nothing is written to the lake or published.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from landfall.config import Settings
from landfall.errors import LandfallError
from landfall.lake import Lake

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["CheckReport", "Finding", "check_dataset"]

# Formats a sample file may have, by its suffix.
_SAMPLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}


@dataclass(frozen=True)
class Finding:
    """One step's outcome: ``ok`` or what was wrong."""

    step: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    """What a batch of the dataset would do, step by step."""

    dataset: str
    source: str
    findings: list[Finding] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    failures_by_rule: dict[str, int] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    model: str | None = None
    scored: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)

    def passed(self, step: str, detail: str) -> None:
        self.findings.append(Finding(step, True, detail))

    def failed(self, step: str, detail: str) -> None:
        self.findings.append(Finding(step, False, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "source": self.source,
            "ok": self.ok,
            "findings": [f.__dict__ for f in self.findings],
            "rows": self.rows,
            "failures_by_rule": self.failures_by_rule,
            "features": self.features,
            "model": self.model,
            "scored": self.scored,
        }


@contextmanager
def _scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="landfall-check-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_dataset(
    settings: Settings,
    dataset_name: str,
    *,
    partition: str | None = None,
    sample: Path | None = None,
    rows: int = 1000,
    score_rows: int = 5,
    spark: SparkSession | None = None,
) -> CheckReport:
    """Check ``dataset_name`` on a bounded sample; see the module's docstring."""
    from landfall.spark import create_spark_session

    dataset = settings.dataset(dataset_name)  # an unknown dataset is a ConfigError
    if (partition is None) == (sample is None):
        raise LandfallError("give either a landed partition or a sample file to check")
    lake = Lake.from_settings(settings)
    source = str(sample) if sample is not None else f"{dataset_name} partition {partition}"
    report = CheckReport(dataset_name, source)
    if spark is None:
        from landfall.object_store import lake_spark_conf

        local = settings.spark.model_copy(update={"master": "local[1]"})
        spark = create_spark_session(
            local,
            "landfall-check",
            lake_spark_conf(settings.lake_uri, settings.object_store, settings.hdfs),
        )
    with _scratch() as scratch:
        landed = _read_sample(report, spark, lake, dataset, partition, sample, rows, scratch)
        if landed is None:
            return report
        features = _validate_and_featurize(
            report, settings, spark, lake, dataset, partition, scratch
        )
        _check_model(report, settings, spark, dataset, features, scratch, score_rows)
    return report


def _read_sample(
    report: CheckReport,
    spark: SparkSession,
    lake: Lake,
    dataset: Any,
    partition: str | None,
    sample: Path | None,
    rows: int,
    scratch: Path,
) -> Path | None:
    """The bounded sample, as parquet in the scratch folder (its raw values unchanged)."""
    from services.validator.stage import read_raw_partition

    try:
        if sample is not None:
            if not sample.exists():
                raise LandfallError(f"the sample file {sample} does not exist")
            data_format = _SAMPLE_FORMATS.get(sample.suffix.lower(), dataset.format)
            raw = read_raw_partition(spark, sample, data_format, name=str(sample))
            where = str(sample)
        else:
            raw_path = lake.input_dir(
                None, dataset=report.dataset, zone="raw", partition=partition or ""
            )
            where = lake.relative(raw_path)
            raw = read_raw_partition(spark, raw_path, dataset.format, name=where)
        bounded = raw.limit(rows)
        # Parquet keeps the raw values as they were read (CSV columns stay strings), so
        # validation sees what it would see in the partition itself.
        bounded.write.parquet(str(scratch / "raw"))
    except LandfallError as exc:
        report.failed("landed data", str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - Spark's errors: say what and where
        report.failed("landed data", f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        return None
    count = spark.read.parquet(str(scratch / "raw")).count()
    report.rows["sampled"] = count
    report.passed("landed data", f"read {count} rows (at most {rows}) from {where}")
    return scratch / "raw"


def _validate_and_featurize(
    report: CheckReport,
    settings: Settings,
    spark: SparkSession,
    lake: Lake,
    dataset: Any,
    partition: str | None,
    scratch: Path,
) -> DataFrame | None:
    from services.featurizer.stage import featurize_partition
    from services.validator.stage import validate_partition

    try:
        result = validate_partition(
            spark,
            dataset,
            scratch / "raw",
            scratch / "valid",
            scratch / "quarantine",
            data_format="parquet",
            raw_name="the sample",
        )
    except Exception as exc:  # noqa: BLE001 - a broken rule expression, an unknown column
        report.failed("validation", _reason(exc, settings, report.dataset))
        return None
    report.rows.update(
        valid=result.rows_valid, quarantined=result.rows_quarantined, warned=result.rows_warned
    )
    report.failures_by_rule = dict(result.failures_by_rule)
    if result.breaches:
        report.failed("validation", "quality thresholds broken: " + "; ".join(result.breaches))
        return None
    report.passed(
        "validation",
        f"{result.rows_valid} valid, {result.rows_quarantined} quarantined, "
        f"{result.rows_warned} warned",
    )
    try:
        featurized = featurize_partition(
            spark, dataset, scratch / "valid", scratch / "features", lake=lake, partition=partition
        )
    except Exception as exc:  # noqa: BLE001
        report.failed("featurization", _reason(exc, settings, report.dataset))
        return None
    report.features = list(featurized.features)
    report.passed("featurization", f"{len(featurized.features)} feature columns")
    return spark.read.parquet(str(scratch / "features"))


def _check_model(
    report: CheckReport,
    settings: Settings,
    spark: SparkSession,
    dataset: Any,
    features: DataFrame | None,
    scratch: Path,
    score_rows: int,
) -> None:
    from landfall.registry import enforce_gate, resolve_model_version
    from services.predictor.fit import signature_problems, unused_columns
    from services.predictor.stage import check_signature, prepare_scorer

    spec = dataset.model
    try:
        model = resolve_model_version(settings, spec)
    except LandfallError as exc:
        report.failed("model", _reason(exc, settings, report.dataset, ("model", "uri")))
        return
    report.model = f"{model.name} version {model.version}"
    try:
        enforce_gate(settings, spec, model, dataset=report.dataset)
        report.passed("model", f"{spec.uri} is version {model.version}; gate passed")
    except LandfallError as exc:
        report.failed("model", _reason(exc, settings, report.dataset, ("model", "gate")))
    if features is None:
        return
    types = {f.name: f.dataType.simpleString() for f in features.schema.fields}
    fallback = [c for c in features.columns if c != dataset.id_column]
    try:
        scorer = prepare_scorer(spark, model, fallback, settings.scoring.engine)
    except LandfallError as exc:
        report.failed("signature", _reason(exc))
        return
    problems = signature_problems(scorer.plan.inputs, types)
    if problems:
        report.failed("signature", "; ".join(problems))
        return
    try:
        check_signature(model, scorer.plan, features)  # the types, as the predictor checks
    except LandfallError as exc:
        report.failed("signature", _reason(exc))
        return
    unused = unused_columns(scorer.plan.inputs, types, dataset.id_column)
    report.passed(
        "signature",
        f"{len(scorer.plan.inputs)} inputs match"
        + (f"; feature columns the model does not take: {', '.join(unused)}" if unused else ""),
    )
    _score_a_few(report, settings, spark, dataset, model, features, scratch, score_rows)


def _score_a_few(
    report: CheckReport,
    settings: Settings,
    spark: SparkSession,
    dataset: Any,
    model: Any,
    features: DataFrame,
    scratch: Path,
    score_rows: int,
) -> None:
    """Score the first rows of the feature table as the predictor would; show them."""
    from services.predictor.stage import score_partition

    few = features.limit(score_rows)
    few.write.parquet(str(scratch / "few"))
    try:
        scored = score_partition(
            spark, dataset, model, scratch / "few", scratch / "predictions",
            scoring=settings.scoring,
            store=None,  # the scratch folder is local, whatever the lake is
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the model's own code may raise anything
        report.failed("scoring", _reason(exc))
        return
    shown = spark.read.parquet(str(scratch / "predictions")).limit(score_rows).collect()
    report.scored = [row.asDict() for row in shown]
    report.passed("scoring", f"scored {scored.rows} rows")


def _reason(
    exc: BaseException,
    settings: Settings | None = None,
    dataset: str = "",
    setting: tuple[str | int, ...] | None = None,
) -> str:
    """The first line of what went wrong; led by the setting at fault (``setting``, or
    the one the error names: ``StageFailedError.setting``) and its line in the file."""
    reason = getattr(exc, "reason", None) or str(exc)
    text = str(reason).splitlines()[0] if reason else type(exc).__name__
    setting = setting or getattr(exc, "setting", None)
    if settings is None or not setting:
        return text
    return f"{settings.setting_name('datasets', dataset, *setting)}: {text}"
