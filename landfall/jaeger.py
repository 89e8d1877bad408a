"""A local Jaeger on loopback ports, where a batch's trace can be followed on one machine.

``make jaeger`` builds Jaeger's all-in-one from source with the Go toolchain
(``landfall/go/go.mod`` pins it and every dependency) into ``.deps/jaeger/jaeger``.
That binary is Jaeger v2: an OpenTelemetry Collector with Jaeger's storage and query
extensions, configured by a YAML file. :class:`LocalJaeger` writes one that keeps
traces in memory, receives OTLP over gRPC and HTTP and serves the query API and UI,
runs the binary as a child process and waits until every component reports healthy.

While it runs, a state file in its folder (``<home>/jaeger``) names its addresses, so
other landfall commands of the same home (``publish``, ``backfill``, ``up --only``)
send their spans there too (:func:`with_local_jaeger`).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from landfall.config import Settings
from landfall.errors import ConfigError, RetryableError
from landfall.ports import LOOPBACK, free_port, port_free
from landfall.processes import LocalDaemon, pid_alive

__all__ = [
    "JAEGER_BIN_ENV",
    "JAEGER_UI_ENV",
    "LocalJaeger",
    "RunningJaeger",
    "jaeger_binary",
    "jaeger_dir",
    "jaeger_for_stack",
    "jaeger_ui_assets",
    "running_jaeger",
    "with_local_jaeger",
]

log = logging.getLogger(__name__)

JAEGER_BIN_ENV = "LANDFALL_JAEGER_BIN"
# A built jaeger-ui (its `build/` folder): the Go module carries no UI assets of its own.
JAEGER_UI_ENV = "LANDFALL_JAEGER_UI"
# Where `make jaeger` puts the binary: beside the package in a source checkout.
_DEFAULT_BIN = Path(__file__).resolve().parent.parent / ".deps" / "jaeger" / "jaeger"
_STATE_FILE = "jaeger.json"
# Jaeger's usual ports, taken when free so that a bookmarked UI keeps working.
DEFAULT_UI_PORT = 16686
DEFAULT_OTLP_GRPC_PORT = 4317
DEFAULT_OTLP_HTTP_PORT = 4318


def jaeger_binary() -> Path:
    """Jaeger's all-in-one binary: ``$LANDFALL_JAEGER_BIN`` or ``.deps/jaeger/jaeger``."""
    binary = Path(os.environ.get(JAEGER_BIN_ENV) or _DEFAULT_BIN)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise ConfigError(
            f"Jaeger is not built at {binary}: run `make jaeger` (it builds Jaeger with Go), "
            f"or set {JAEGER_BIN_ENV} to a Jaeger v2 all-in-one binary"
        )
    return binary


def jaeger_ui_assets() -> Path | None:
    """The Jaeger UI's built assets named by ``$LANDFALL_JAEGER_UI``, if set."""
    configured = os.environ.get(JAEGER_UI_ENV)
    if not configured:
        return None
    assets = Path(configured)
    if not (assets / "index.html").is_file():
        raise ConfigError(
            f"{JAEGER_UI_ENV}={assets} holds no index.html: name the folder a jaeger-ui "
            "build wrote (packages/jaeger-ui/build), or unset it"
        )
    return assets.resolve()


def jaeger_dir(home: Path) -> Path:
    """Where the local Jaeger of a landfall home keeps its config, log and state."""
    return home / "jaeger"


@dataclass(frozen=True)
class RunningJaeger:
    """A local Jaeger that some process of this home started and that still runs."""

    otlp_endpoint: str
    ui_url: str
    pid: int


def running_jaeger(data_dir: Path) -> RunningJaeger | None:
    """The local Jaeger whose state is in ``data_dir``, if it is running."""
    try:
        state = json.loads((data_dir / _STATE_FILE).read_text())
        found = RunningJaeger(str(state["otlp_endpoint"]), str(state["ui_url"]), int(state["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if pid_alive(found.pid) else None


def with_local_jaeger(settings: Settings) -> Settings:
    """The settings exporting spans to this home's local Jaeger, if one runs.

    A configured ``telemetry.otlp_endpoint`` wins; without one and without a local
    Jaeger the settings are returned as they are.
    """
    if settings.telemetry.otlp_endpoint:
        return settings
    local = running_jaeger(jaeger_dir(settings.home))
    if local is None:
        return settings
    telemetry = settings.telemetry.model_copy(update={"otlp_endpoint": local.otlp_endpoint})
    return settings.model_copy(update={"telemetry": telemetry})


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _pick(preferred: int | None) -> int:
    return preferred if preferred and port_free(preferred) else free_port()


class LocalJaeger(LocalDaemon):
    """Jaeger v2 all-in-one as a child process, traces in memory, on loopback ports.

    Each port prefers Jaeger's usual one when ``preferred_ports`` (the default) and it
    is free, else any free port; ``max_traces`` bounds the memory the traces take.
    """

    name = "Jaeger"
    log_name = "jaeger.log"
    state_name = _STATE_FILE

    def __init__(
        self, data_dir: Path, *, preferred_ports: bool = True, max_traces: int = 20_000
    ) -> None:
        super().__init__(data_dir)
        self.preferred_ports = preferred_ports
        self.max_traces = max_traces
        self.ui_port = 0
        self.otlp_grpc_port = 0
        self.otlp_http_port = 0
        self._query_grpc_port = 0
        self._health_port = 0

    @property
    def ui_url(self) -> str:
        """Jaeger's UI, and its HTTP query API under ``/api``."""
        return f"http://{LOOPBACK}:{self.ui_port}"

    @property
    def otlp_endpoint(self) -> str:
        """Where OTLP/HTTP exporters send spans (``telemetry.otlp_endpoint``)."""
        return f"http://{LOOPBACK}:{self.otlp_http_port}/v1/traces"

    @property
    def otlp_grpc_endpoint(self) -> str:
        """Where OTLP/gRPC exporters send spans."""
        return f"{LOOPBACK}:{self.otlp_grpc_port}"

    def _choose_ports(self) -> None:
        preferred = self.preferred_ports
        self.ui_port = _pick(DEFAULT_UI_PORT if preferred else None)
        self.otlp_grpc_port = _pick(DEFAULT_OTLP_GRPC_PORT if preferred else None)
        self.otlp_http_port = _pick(DEFAULT_OTLP_HTTP_PORT if preferred else None)
        self._query_grpc_port = free_port()
        self._health_port = free_port()
        chosen = {self.ui_port, self.otlp_grpc_port, self.otlp_http_port,
                  self._query_grpc_port, self._health_port}  # fmt: skip
        if len(chosen) < 5:  # two free_port() calls handed out the same port: pick again
            self._choose_ports()

    def config(self) -> dict[str, Any]:
        """Jaeger's configuration: OTLP in, memory storage, query API and UI, health check."""
        query: dict[str, Any] = {
            "storage": {"traces": "memory"},
            "http": {"endpoint": f"{LOOPBACK}:{self.ui_port}"},
            "grpc": {"endpoint": f"{LOOPBACK}:{self._query_grpc_port}"},
            # On by default in v2, it sends Jaeger's own spans to the default OTLP port,
            # someone else's there, else retried until the export times out at stop.
            "enable_tracing": False,
        }
        assets = jaeger_ui_assets()
        if assets is not None:
            query["ui"] = {"assets_path": str(assets)}
        return {
            "service": {
                "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
                "pipelines": {
                    "traces": {
                        "receivers": ["otlp"],
                        "processors": ["batch"],
                        "exporters": ["jaeger_storage_exporter"],
                    }
                },
                # No metrics endpoint of the collector's own: it would want port 8888.
                "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
            },
            "extensions": {
                "jaeger_storage": {
                    "backends": {"memory": {"memory": {"max_traces": self.max_traces}}}
                },
                "jaeger_query": query,
                "healthcheckv2": {
                    "use_v2": True,
                    "http": {
                        "endpoint": f"{LOOPBACK}:{self._health_port}",
                        "status": {"enabled": True, "path": "/status"},
                    },
                },
            },
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": self.otlp_grpc_endpoint},
                        "http": {"endpoint": f"{LOOPBACK}:{self.otlp_http_port}"},
                    }
                }
            },
            "processors": {"batch": {}},
            "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
        }

    def start(self, timeout: float = 60.0) -> Self:
        """Start Jaeger and wait until its receivers, storage and query API are up."""
        if self.running:
            return self
        binary = jaeger_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        other = running_jaeger(self.data_dir)
        if other is not None:
            raise ConfigError(
                f"a Jaeger (pid {other.pid}) already runs for {self.data_dir}, UI at "
                f"{other.ui_url}; use it, or stop it first"
            )
        self._choose_ports()
        config_file = self.data_dir / "config.yaml"
        config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        with open(self.log_path, "ab") as out:
            # Own session: a Ctrl-C at the terminal must not end Jaeger before the
            # services have flushed their last spans to it; stop() ends it in order.
            self._proc = subprocess.Popen(
                [str(binary), "--config", str(config_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        self._wait_ready(timeout)
        state = {"otlp_endpoint": self.otlp_endpoint, "ui_url": self.ui_url, "pid": self.pid}
        (self.data_dir / _STATE_FILE).write_text(json.dumps(state))
        log.info("Jaeger pid %d: UI %s, OTLP %s", self.pid, self.ui_url, self.otlp_endpoint)
        return self

    def _wait_ready(self, timeout: float) -> None:
        proc, deadline = self._proc, time.monotonic() + timeout
        assert proc is not None
        health = f"http://{LOOPBACK}:{self._health_port}/status"
        while proc.poll() is None and time.monotonic() < deadline:
            # 200 once every component (receivers, storage, query) says it is up.
            if _answers(health) and _answers(f"{self.ui_url}/api/services"):
                return
            time.sleep(0.1)
        code, tail = proc.poll(), self.log_tail()
        self.stop()
        if code is not None:
            raise ConfigError(f"Jaeger exited with code {code} on start:\n{tail}")
        raise RetryableError(f"Jaeger not ready after {timeout:g}s:\n{tail}")


def jaeger_for_stack(settings: Settings) -> tuple[Settings, str, LocalJaeger | None]:
    """``landfall up --jaeger``: the settings exporting spans to this home's local Jaeger.

    Uses the one already running for this home, else starts one. Returns the settings,
    Jaeger's UI address and the Jaeger started here (None if it was already running),
    which the caller stops.
    """
    if settings.telemetry.otlp_endpoint:
        raise ConfigError(
            f"telemetry.otlp_endpoint is set ({settings.telemetry.otlp_endpoint}): spans "
            "already go there; drop --jaeger, or unset the setting to use a local Jaeger"
        )
    running = running_jaeger(jaeger_dir(settings.home))
    if running is not None:
        return with_local_jaeger(settings), running.ui_url, None
    local = LocalJaeger(jaeger_dir(settings.home)).start()
    return with_local_jaeger(settings), local.ui_url, local
