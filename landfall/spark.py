"""The SparkSession factory: one session per service process, built from config."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from landfall.config import SparkSettings
from landfall.errors import LandfallError, RetryableError, StageFailedError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["create_spark_session", "session_conf", "spark_failure"]

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
    # Parquet buffers a whole row group per writing task on the JVM's heap, outside
    # Spark's memory accounting: at the 128 MiB default two tasks of a 24-column, 5M-row
    # validation ran a 768m driver out of heap. 32 MiB row groups keep a write's memory
    # small and fixed whatever the partition's size (the same run: 39 s, no slower).
    "spark.hadoop.parquet.block.size": str(32 * 1024 * 1024),
}

# A service's JVM is idle most of the day between batches, and a JVM keeps the heap a
# batch grew to unless it collects while idle. G1's periodic collection (every 10 s of
# no other collection) with a low free-heap ratio hands it back to the machine: measured
# on a local session after a 6M-row job, 1.1 GiB stayed resident a minute later without
# these options, about 0.43 GiB with them. Explicitly G1: a JVM that thinks its machine
# small picks the serial collector, which would ignore the rest. Options the config sets
# come after these, so a configured flag wins.
_IDLE_HEAP_OPTIONS = (
    "-XX:+UseG1GC -XX:G1PeriodicGCInterval=10000 -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30"
)
_JVM_OPTION_KEYS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


def session_conf(settings: SparkSettings, app_name: str) -> dict[str, str]:
    """The Spark conf the application ``app_name`` starts with: defaults, then config.

    A service's application is named ``landfall-<service>``; its ``spark.services``
    entry, if any, is merged over ``spark.conf``.
    """
    service = app_name.removeprefix("landfall-")
    configured = settings.conf_for(service)
    # Executors run the driver's interpreter, at the same path on every worker.
    defaults = {**_DEFAULT_CONF, "spark.pyspark.python": sys.executable}
    if settings.master_for(service).startswith("spark://"):
        # A standalone master grants an application every free core unless capped, and a
        # service keeps its session, and so its executors, for its whole life: uncapped,
        # the first service to start would hold the cluster and the other three would
        # never get an executor. One executor's worth each unless configured.
        defaults["spark.cores.max"] = configured.get("spark.executor.cores", "1")
    conf = {**defaults, **configured}
    for key in _JVM_OPTION_KEYS:
        conf[key] = f"{_IDLE_HEAP_OPTIONS} {configured.get(key, '')}".strip()
    return conf


def create_spark_session(
    settings: SparkSettings, app_name: str, extra_conf: Mapping[str, str] | None = None
) -> SparkSession:
    """Build (or reuse) the process's SparkSession with landfall's settings.

    ``extra_conf`` is what the lake needs on top (landfall.object_store.lake_spark_conf:
    the s3a connector's jars and settings for a lake on an object store); the config's
    own ``spark.conf`` wins over it, except that lists of jars and class paths from both
    are kept.
    Like every static setting, it counts only when the process's first session starts.
    """
    # Python workers must run this interpreter, with its packages; Spark would
    # otherwise start whatever `python3` is first on the PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    master = settings.master_for(app_name.removeprefix("landfall-"))
    builder = SparkSession.builder.master(master).appName(app_name)
    launch, hadoop_secrets = _secrets_apart(
        _with_extra(session_conf(settings, app_name), extra_conf or {})
    )
    for key, value in launch.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    # Given at launch, a setting is an argument of the JVM's command line, which every
    # user of the machine can read (ps); credentials go into the driver's Hadoop
    # configuration instead, which every read and write copies to its tasks.
    hadoop_conf = session.sparkContext._jsc.hadoopConfiguration()
    for key, value in hadoop_secrets.items():
        hadoop_conf.set(key, value)
    return session


# Hadoop settings that hold credentials (the names Spark's own redaction looks for).
_CREDENTIAL_KEY = re.compile(r"(?i)secret|password|token|access[.]key")
_HADOOP_PREFIX = "spark.hadoop."


def _secrets_apart(conf: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The conf to launch with, and the Hadoop credentials (without the prefix) to set after."""
    launch: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key, value in conf.items():
        if key.startswith(_HADOOP_PREFIX) and _CREDENTIAL_KEY.search(key):
            secrets[key.removeprefix(_HADOOP_PREFIX)] = value
        else:
            launch[key] = value
    return launch, secrets


# Settings that list jars: the lake's and the config's own entries are joined.
_LIST_SEPARATORS = {
    "spark.jars": ",",
    "spark.driver.extraClassPath": os.pathsep,
    "spark.executor.extraClassPath": os.pathsep,
}


_DRIVER_OPTIONS = "spark.driver.extraJavaOptions"


def _with_extra(conf: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    merged = {**extra, **conf}
    for key, separator in _LIST_SEPARATORS.items():
        entries = [e for source in (extra, conf) for e in source.get(key, "").split(separator)]
        if any(entries):
            merged[key] = separator.join(dict.fromkeys(e for e in entries if e))
    # JVM options from both (the lake's HADOOP_USER_NAME for HDFS, the config's own).
    options = [source.get(_DRIVER_OPTIONS, "").strip() for source in (extra, conf)]
    if all(options):
        merged[_DRIVER_OPTIONS] = " ".join(options)
    return merged


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
