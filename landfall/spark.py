"""The SparkSession factory: one session per service process, built from config."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from landfall.config import SparkSettings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["create_spark_session"]

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
