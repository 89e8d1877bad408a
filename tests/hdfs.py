"""A real HDFS for the tests: Hadoop's MiniDFSCluster (a NameNode and a DataNode) in a JVM.

``make hdfs`` fetches Hadoop's minicluster jars (landfall/jvm/hdfs-minicluster-pom.xml)
into ``.deps/hdfs/libs`` and compiles the launcher (landfall/jvm/MiniHdfs.java) into
``.deps/hdfs/classes``. ``$LANDFALL_TEST_HDFS`` (``hdfs://namenode:port``, with
``$LANDFALL_TEST_WEBHDFS``, ``http://namenode:9870`` by default) names a running HDFS
to use instead; the tests then write below ``/landfall-tests/`` on it.
The fixture (``hdfs_cluster``) is in tests/conftest.py.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from landfall.ports import LOOPBACK, free_port
from landfall.processes import LocalDaemon
from landfall.webhdfs import DEFAULT_WEBHDFS_PORT

__all__ = ["HdfsCluster", "MiniHdfs", "configured_hdfs"]

_DEPS = Path(__file__).resolve().parent.parent / ".deps" / "hdfs"
_MAIN_CLASS = "MiniHdfs"
_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class HdfsCluster:
    """Where the test HDFS listens: its NameNode's RPC URI and its WebHDFS address."""

    uri: str  # hdfs://host:port
    webhdfs: str  # http://host:port

    def lake_root(self, name: str | None = None) -> str:
        """A fresh folder for one test's lake, on this HDFS."""
        return f"{self.uri}/landfall-tests/{name or uuid.uuid4().hex[:12]}/lake"

    def environ(self) -> dict[str, str]:
        """The ``hdfs`` settings for this cluster as ``LANDFALL_HDFS__*`` variables."""
        return {"LANDFALL_HDFS__WEBHDFS": self.webhdfs}


def configured_hdfs() -> HdfsCluster | None:
    """The HDFS named by ``$LANDFALL_TEST_HDFS``, if any."""
    uri = os.environ.get("LANDFALL_TEST_HDFS", "").rstrip("/")
    if not uri:
        return None
    host = urlsplit(uri).hostname or LOOPBACK
    webhdfs = os.environ.get("LANDFALL_TEST_WEBHDFS") or f"http://{host}:{DEFAULT_WEBHDFS_PORT}"
    return HdfsCluster(uri, webhdfs.rstrip("/"))


class MiniHdfs(LocalDaemon):
    """One NameNode and one DataNode (MiniDFSCluster) on loopback, data under ``data_dir``."""

    name = "HDFS (MiniDFSCluster)"
    log_name = "hdfs.log"
    state_name = "hdfs.json"

    def __init__(self, data_dir: Path, heap_mb: int = 384) -> None:
        super().__init__(data_dir)
        self.heap_mb = heap_mb
        self.cluster: HdfsCluster | None = None

    def start(self) -> Self:
        libs, classes = _DEPS / "libs", _DEPS / "classes"
        if not (classes / f"{_MAIN_CLASS}.class").is_file():
            raise RuntimeError(
                f"the test HDFS is not installed in {_DEPS}: run `make hdfs` (it fetches "
                "Hadoop's minicluster with Maven), or set LANDFALL_TEST_HDFS"
            )
        java = shutil.which("java") or "java"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = self.data_dir / "ports.json"
        ports.unlink(missing_ok=True)
        rpc_port, http_port = free_port(), free_port()
        with self.log_path.open("ab") as log, ports.open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap_mb}m",
                    "-cp",
                    f"{classes}{os.pathsep}{libs}/*",
                    _MAIN_CLASS,
                    str(self.data_dir / "data"),
                    str(rpc_port),
                    str(http_port),
                ],
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
            )
        # A test run that ends abruptly must not leave the JVM behind.
        atexit.register(self.stop)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                started = json.loads(ports.read_text())
                break
            except (OSError, ValueError):
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop(timeout=10)
                raise RuntimeError(f"{self.name} did not start: {self.log_tail()}")
            time.sleep(0.2)
        self.cluster = HdfsCluster(
            f"hdfs://{LOOPBACK}:{started['rpc_port']}",
            f"http://{LOOPBACK}:{started['http_port']}",
        )
        return self
