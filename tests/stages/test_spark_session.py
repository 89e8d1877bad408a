"""The services' Spark sessions: JVM options that let an idle service give memory back."""

from __future__ import annotations

from typing import Any

from landfall.config import SparkSettings
from landfall.spark import session_conf


def test_the_driver_jvm_runs_g1_with_periodic_collection_when_idle(spark: Any) -> None:
    management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    arguments = list(management.getRuntimeMXBean().getInputArguments())
    assert "-XX:G1PeriodicGCInterval=10000" in arguments, arguments
    collectors = [bean.getName() for bean in management.getGarbageCollectorMXBeans()]
    assert any(name.startswith("G1") for name in collectors), collectors


def test_configured_jvm_options_come_after_the_defaults_so_they_win() -> None:
    settings = SparkSettings(
        master="local[2]",
        conf={"spark.driver.extraJavaOptions": "-XX:G1PeriodicGCInterval=0 -Dx=1"},
    )
    options = session_conf(settings, "landfall-validator")["spark.driver.extraJavaOptions"]
    # The JVM takes the last of a repeated -XX flag: the operator's.
    assert options.index("G1PeriodicGCInterval=10000") < options.index("G1PeriodicGCInterval=0")
    assert options.endswith("-Dx=1")
    executor = session_conf(settings, "landfall-validator")["spark.executor.extraJavaOptions"]
    assert "G1PeriodicGCInterval=10000" in executor and "-Dx=1" not in executor
