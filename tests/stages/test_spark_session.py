"""The services' Spark sessions: JVM options that let an idle service give memory back."""

from __future__ import annotations

from pathlib import Path
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


def test_store_credentials_are_not_on_the_jvm_command_line(spark: Any, s3_endpoint: Any) -> None:
    # What `ps` shows every user of the machine: the launched JVM's arguments.
    pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    secret = s3_endpoint.settings().secret_access_key.get_secret_value()
    assert "fs.s3a.endpoint" in command_line  # the store's other settings are there
    assert secret not in command_line
    # ... and the key reaches the reads and writes through the Hadoop configuration.
    assert spark.sparkContext._jsc.hadoopConfiguration().get("fs.s3a.secret.key") == secret
