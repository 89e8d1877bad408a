"""A Spark standalone cluster for tests: a master and one worker from the venv's pyspark.

pyspark's wheel ships ``bin/spark-class`` and the master and worker classes, so a real
cluster needs nothing beyond the installed package and Java. Both listen on loopback
only, on free ports; the master's REST submission server (a fixed port) is off.
``LANDFALL_TEST_SPARK_MASTER`` (``spark://host:port``) names a running cluster to use
instead, with ``LANDFALL_TEST_SPARK_MASTER_UI`` its master's web UI (default
``http://host:8080``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from landfall.ports import LOOPBACK, free_port
from landfall.processes import pid_alive

__all__ = ["SparkCluster", "configured_cluster", "start_local_cluster"]

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# This machine has 2 cores; the worker advertises 4 so that the four services'
# applications (one core each by default on a spark:// master) all get an executor.
WORKER_CORES = 4
WORKER_MEMORY = "4g"
START_TIMEOUT_S = 180.0


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _get_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        found: dict[str, Any] = json.load(response)
        return found


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class SparkCluster:
    """A standalone cluster: its master URL and web UI, and its processes if started here."""

    master_url: str
    ui_url: str
    log_dir: Path | None = None
    started_in_s: float | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        """The master's view: workers, active and completed applications (its ``/json/``)."""
        return _get_json(f"{self.ui_url}/json/")

    def worker_status(self, worker: dict[str, Any]) -> dict[str, Any]:
        """A worker's own view, its executors (running and finished) with their app ids."""
        return _get_json(f"{worker['webuiaddress']}/json/")

    def applications(self) -> list[dict[str, Any]]:
        """Every application the master knows, active or completed."""
        status = self.status()
        return [*status["activeapps"], *status["completedapps"]]

    def executors_by_app(self) -> dict[str, int]:
        """App id -> how many executors the workers ran (or run) for it."""
        counts: dict[str, int] = {}
        for worker in self.status()["workers"]:
            state = self.worker_status(worker)
            for executor in [*state["executors"], *state["finishedexecutors"]]:
                counts[executor["appid"]] = counts.get(executor["appid"], 0) + 1
        return counts

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker, then the master (only processes this cluster started)."""
        for name in ("worker", "master"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            # Each runs in a session of its own: the group holds it and the executors
            # the worker launched, and nothing else.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.processes.clear()


def configured_cluster() -> SparkCluster | None:
    """The cluster ``LANDFALL_TEST_SPARK_MASTER`` names, if any."""
    master = os.environ.get("LANDFALL_TEST_SPARK_MASTER")
    if not master:
        return None
    host = urlsplit(master).hostname or LOOPBACK
    ui = os.environ.get("LANDFALL_TEST_SPARK_MASTER_UI") or f"http://{host}:8080"
    return SparkCluster(master_url=master, ui_url=ui.rstrip("/"))


def _environment(work: Path) -> dict[str, str]:
    conf_dir = work / "conf"  # empty: no spark-env.sh or defaults of the machine's
    conf_dir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "SPARK_HOME": str(_spark_home()),
        "SPARK_CONF_DIR": str(conf_dir),
        # Binds every listener (RPC, web UIs) of master, worker and executors to loopback.
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_DAEMON_MEMORY": "512m",
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        "SPARK_WORKER_DIR": str(work / "work"),
    }


def _spawn(
    name: str, args: list[str], env: dict[str, str], log_dir: Path
) -> subprocess.Popen[bytes]:
    with (log_dir / f"spark-{name}.log").open("ab") as log:
        return subprocess.Popen(
            [str(_spark_home() / "bin" / "spark-class"), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_local_cluster(log_dir: Path, timeout: float = START_TIMEOUT_S) -> SparkCluster:
    """Start a master and one worker; return once the worker has registered with the master."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = _environment(log_dir)
    port, ui_port, worker_ui_port = free_port(), free_port(), free_port()
    cluster = SparkCluster(
        master_url=f"spark://{LOOPBACK}:{port}",
        ui_url=f"http://{LOOPBACK}:{ui_port}",
        log_dir=log_dir,
    )
    began = time.monotonic()
    try:
        cluster.processes["master"] = _spawn(
            "master",
            [MASTER_CLASS, "--host", LOOPBACK, "--port", str(port), "--webui-port", str(ui_port)],
            env,
            log_dir,
        )
        worker = [
            WORKER_CLASS, cluster.master_url, "--host", LOOPBACK,
            "--webui-port", str(worker_ui_port),
            "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY,
            "--work-dir", str(log_dir / "work"),
        ]  # fmt: skip
        cluster.processes["worker"] = _spawn("worker", worker, env, log_dir)
        _wait_for_worker(cluster, began + timeout)
    except BaseException:
        cluster.stop()
        raise
    cluster.started_in_s = time.monotonic() - began
    return cluster


def _wait_for_worker(cluster: SparkCluster, deadline: float) -> None:
    # The worker retries its registration until the master listens; the master's JSON
    # lists it, ALIVE with its cores, once it is registered.
    assert cluster.log_dir is not None
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            if not pid_alive(process.pid) or process.poll() is not None:
                raise RuntimeError(
                    f"Spark {name} exited with code {process.poll()}; end of its log:\n"
                    + _tail(cluster.log_dir / f"spark-{name}.log")
                )
        try:
            status = cluster.status()
        except (OSError, ValueError):
            # Not listening yet, or (seen once in CI) answering with an empty body while
            # its web UI is still starting: JSON that does not parse is "not yet" too.
            status = {}
        if any(w.get("state") == "ALIVE" for w in status.get("workers", [])):
            return
        time.sleep(0.25)
    raise TimeoutError(
        "the Spark worker did not register with the master in time; end of the worker's "
        "log:\n" + _tail(cluster.log_dir / "spark-worker.log")
    )
