"""The one-machine stack: the embedded broker and the four services as processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from landfall.broker import EmbeddedBroker, free_port, port_free, wait_for_broker
from landfall.config import ENV_PREFIX, Settings
from landfall.errors import LandfallError
from landfall.serve import API, SERVICE_NAMES, ensure_all_topics

__all__ = ["LocalStack", "ServiceDied"]

log = logging.getLogger(__name__)


class ServiceDied(LandfallError):
    """A service process of the stack exited on its own."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class LocalStack:
    """Starts (and stops) a broker if none is configured, the topics and the services.

    The services are the four stages and the job API (``api_url`` once started); the
    API moves to a free port when the configured one is taken.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        services: tuple[str, ...] = (*SERVICE_NAMES, API),
        log_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.services = services
        self.log_dir = log_dir or settings.home / "logs"
        self.broker: EmbeddedBroker | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}

    def start(self) -> Settings:
        """Start everything; return the settings with the broker's address filled in."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = self.settings.kafka.bootstrap
        if bootstrap:
            wait_for_broker(bootstrap)
        else:
            self.broker = EmbeddedBroker(log_path=self.log_dir / "broker.log").start()
            bootstrap = self.broker.bootstrap
            log.info("embedded broker on %s", bootstrap)
        kafka = self.settings.kafka.model_copy(update={"bootstrap": bootstrap})
        self.settings = self.settings.model_copy(update={"kafka": kafka})
        if API in self.services:
            reporting = self.settings.reporting
            if not port_free(reporting.api_port, reporting.api_host):
                port = free_port()
                log.warning("API port %d is taken; using %d", reporting.api_port, port)
                reporting = reporting.model_copy(update={"api_port": port})
                self.settings = self.settings.model_copy(update={"reporting": reporting})
        ensure_all_topics(self.settings)
        # The services read exactly the settings this process holds, overrides and
        # the broker's address included, from one file written for them.
        config_file = self.log_dir / "stack-config.yaml"
        config_file.write_text(yaml.safe_dump(self.settings.model_dump(mode="json")))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
            "LANDFALL_CONFIG": str(config_file),
        }
        self.metrics_ports = self._metrics_ports()
        for name in self.services:
            log_file = (self.log_dir / f"{name}.log").open("ab")
            child_env = dict(env)
            if name in self.metrics_ports:
                child_env[f"{ENV_PREFIX}TELEMETRY__METRICS_PORT"] = str(self.metrics_ports[name])
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "landfall", "serve", name],
                env=child_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C in the terminal reaches the stack,
                # which then stops each service in order instead of all at once.
                start_new_session=True,
            )
            log_file.close()
            log.info("started %s (pid %d)", name, self.processes[name].pid)
        return self.settings

    def _metrics_ports(self) -> dict[str, int]:
        """Each service's /metrics port: base, base + 1, ... in service order (0: free ports).

        One machine cannot give the same port to every service, so ``telemetry.metrics_port``
        is where the stack's ports begin.
        """
        telemetry = self.settings.telemetry
        base = telemetry.metrics_port
        if base is None:
            return {}
        ports = {}
        for i, name in enumerate(n for n in self.services if n != API):
            port = base + i if base else free_port()
            if not port_free(port, telemetry.metrics_host):
                taken, port = port, free_port()
                log.warning("metrics port %d of %s is taken; using %d", taken, name, port)
            ports[name] = port
        return ports

    def metrics_urls(self) -> dict[str, str]:
        """Where each service's Prometheus metrics are served."""
        host = self.settings.telemetry.metrics_host
        return {name: f"http://{host}:{port}/metrics" for name, port in self.metrics_ports.items()}

    @property
    def api_url(self) -> str | None:
        """Where the job API and status page answer, if the stack runs them."""
        if API not in self.services:
            return None
        return f"http://{self.settings.reporting.api_host}:{self.settings.reporting.api_port}"

    def check_alive(self) -> None:
        """Raise ServiceDied, with the end of its log, if any service has exited."""
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                raise ServiceDied(
                    f"service {name} exited with code {code}; end of its log:\n"
                    + _tail(self.log_dir / f"{name}.log")
                )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every service, wait, then kill stragglers; stop the broker we started."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                # The whole group: the service's Spark JVM goes with it.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
