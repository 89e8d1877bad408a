"""The SparkSession factory: one session per service process, built from config."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from landfall.config import SparkSettings
from landfall.errors import LandfallError, RetryableError, StageFailedError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["create_spark_session", "spark_failure"]

# Defaults that suit one small machine; anything in the config's spark.conf wins.
_DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "1g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Lake outputs are committed by landfall's own rename; Spark's success marker
    # files would only add clutter beside the manifest.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.sql.parquet.compression.codec": "snappy",
}


def create_spark_session(settings: SparkSettings, app_name: str) -> SparkSession:
    """Build (or reuse) the process's SparkSession with landfall's settings."""
    # Python workers must run this interpreter, with its packages; Spark would
    # otherwise start whatever `python3` is first on the PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(settings.master).appName(app_name)
    conf = {**_DEFAULT_CONF, "spark.pyspark.python": sys.executable, **settings.conf}
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


# Causes of a failed Spark job that say nothing about the batch itself: the same job can
# succeed when tried again (a lost executor, a Python worker killed or crashed, a shuffle
# fetch or a connection that failed).
_TRANSIENT_CAUSES = (
    "ExecutorLostFailure",
    "Python worker exited unexpectedly",
    "FetchFailed",
    "heartbeat timed out",
    "java.net.ConnectException",
    "java.net.SocketTimeoutException",
    "Connection reset by peer",
)
_SUMMARY_LIMIT = 600


def spark_failure(exc: BaseException) -> LandfallError | None:
    """A failed Spark call in landfall's vocabulary; None if ``exc`` did not come from Spark.

    Transient causes become :class:`RetryableError`; anything else a
    :class:`StageFailedError` whose reason is the JVM's own one-line cause, not its
    stack trace.
    """
    module = type(exc).__module__ or ""
    if not module.startswith(("py4j", "pyspark")):
        return None
    text = str(exc)
    summary = _one_line_cause(text)
    if any(cause in text for cause in _TRANSIENT_CAUSES):
        return RetryableError(f"a Spark job failed for a transient reason: {summary}")
    return StageFailedError(f"a Spark job failed: {summary}")


def _one_line_cause(text: str) -> str:
    """The first line that says what went wrong, without Java frames or py4j preamble."""
    lines = [line.strip() for line in text.splitlines()]
    meaningful = [
        line.lstrip(": ")
        for line in lines
        if line and not line.startswith(("at ", "An error occurred while calling", "..."))
    ]
    line = meaningful[0] if meaningful else text.strip()
    # "Job aborted ...: Task 1 ... failed 1 times, most recent failure: Lost task ...: X"
    # is mostly bookkeeping; the task's own failure is what operators need to read.
    _, marker, cause = line.partition("most recent failure: ")
    if marker:
        line = cause
    return line if len(line) <= _SUMMARY_LIMIT else line[: _SUMMARY_LIMIT - 1] + "…"
