"""The one-machine stack: the local Apache Kafka and the services as supervised processes.

:class:`LocalStack` uses the configured broker, else the local broker another landfall
command of the same home already runs, else starts one (and stops it when done). Each
service runs as its own process (``landfall serve NAME``), one or more instances of
it, recorded in ``<home>/run/`` so ``landfall ps`` and ``landfall stop`` find them.

Supervision, as operators expect from a process manager:

- a service stopped on purpose (``landfall stop``, SIGTERM: it exits 0, or dies of the
  signal while still starting) stays stopped, and the others keep running;
- a service that crashes (non-zero exit, a signal) is restarted after a delay that
  doubles with each crash (``supervision.restart_delay_s`` up to
  ``supervision.restart_delay_max_s``, with a random part so that services that crashed
  together do not all restart at once), while the others keep running; after
  ``supervision.max_restarts`` restarts within ``supervision.restart_window_s`` the next
  crash makes the stack give up: :meth:`LocalStack.supervise` raises :class:`ServiceDied`;
- a stopping service gets ``runner.shutdown_grace_s`` plus a margin
  (:func:`landfall.shutdown.stop_timeout_s`) before it is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from landfall.api_tokens import TokenStore, ensure_generated_token
from landfall.backoff import backoff_delay
from landfall.broker import LocalKafka, broker_dir, running_broker
from landfall.config import ENV_PREFIX, Settings, SupervisionSettings
from landfall.errors import ConfigError, LandfallError
from landfall.kafka_clients import kafka_connection_config
from landfall.ports import free_port, port_free
from landfall.processes import pid_alive
from landfall.results import open_results_db
from landfall.serve import API, SERVICE_NAMES, ensure_all_topics
from landfall.shutdown import stop_timeout_s
from landfall.stack_environment import child_environment, write_child_settings
from landfall.topics import wait_for_broker

__all__ = [
    "ALL_SERVICES",
    "LocalStack",
    "ServiceDied",
    "running_services",
    "stop_services",
    "with_local_broker",
]

log = logging.getLogger(__name__)

ALL_SERVICES = (*SERVICE_NAMES, API)


class ServiceDied(LandfallError):
    """A service process of the stack exited on its own (and, under supervision, kept dying)."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def with_local_broker(settings: Settings) -> Settings | None:
    """The settings pointed at a broker: the configured one, else this home's running one.

    None when no broker is configured and none runs for this home.
    """
    if settings.kafka.bootstrap:
        return settings
    local = running_broker(broker_dir(settings.home))
    if local is None:
        return None
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap": local.bootstrap})}
    )


def _run_dir(settings: Settings) -> Path:
    return settings.home / "run"


def running_services(settings: Settings) -> dict[str, int]:
    """The services of this home running now: instance name -> process id."""
    found = {}
    for pid_file in sorted(_run_dir(settings).glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        # An instance that exited (even one its stack has not reaped yet) is not
        # running; its pid file was left by a stack that was killed, or is being removed.
        if not pid_alive(pid):
            pid_file.unlink(missing_ok=True)
            continue
        found[pid_file.stem] = pid
    return found


def stop_services(
    settings: Settings, names: Iterable[str], timeout: float | None = None
) -> list[str]:
    """SIGTERM every running instance of the named services; wait; return those stopped.

    ``timeout`` defaults to the services' shutdown grace plus a margin.
    """
    wanted = set(names)
    unknown = wanted - set(ALL_SERVICES)
    if unknown:
        raise ConfigError(
            f"unknown service {', '.join(sorted(unknown))}; choose from {', '.join(ALL_SERVICES)}"
        )
    targets = {
        instance: pid
        for instance, pid in running_services(settings).items()
        if _service_of(instance) in wanted
    }
    for pid in targets.values():
        os.kill(pid, signal.SIGTERM)
    if timeout is None:
        timeout = stop_timeout_s(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in targets.values()):
        time.sleep(0.1)
    still = [instance for instance, pid in targets.items() if pid_alive(pid)]
    if still:
        raise LandfallError(f"{', '.join(still)} did not stop within {timeout:g}s")
    return sorted(targets)


def _with_instance_id(env: Mapping[str, str], instance: str) -> str:
    """OTEL_RESOURCE_ATTRIBUTES naming the instance, beside any attributes already set.

    ``service.instance.id`` is OpenTelemetry's standard resource attribute for telling
    the replicas of one service apart: every span (in Jaeger, in the trace files) then
    says which instance did the work.
    """
    kept = [
        item
        for item in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
        if item.strip() and item.split("=", 1)[0].strip() != "service.instance.id"
    ]
    return ",".join([*kept, f"service.instance.id={instance}"])


def _restart_delay(crashes: int, supervision: SupervisionSettings) -> float:
    """Seconds before restarting after the ``crashes``-th crash in the window.

    Doubling from ``restart_delay_s`` up to ``restart_delay_max_s``; the random part
    ("equal jitter": between half and all of it) keeps instances that crashed together,
    e.g. when the broker went away, from all restarting in the same instant.
    """
    return backoff_delay(supervision.restart_delay_s, supervision.restart_delay_max_s, crashes)


def _service_of(instance: str) -> str:
    name, _, number = instance.rpartition("-")
    return name if number.isdigit() and name in ALL_SERVICES else instance


@dataclass
class _Instance:
    """One process of a service, and its crash history."""

    name: str  # "predictor", or "predictor-2" for a second replica
    service: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None


class LocalStack:
    """Starts (and stops) a broker if needed, the topics and the services' processes.

    ``services`` are the ones to run (the four stages and the job API by default) and
    ``scale`` how many instances of each (default one); the API moves to a free port
    when the configured one is taken.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        services: tuple[str, ...] = ALL_SERVICES,
        scale: Mapping[str, int] | None = None,
        log_dir: Path | None = None,
        max_restarts: int | None = None,
    ) -> None:
        unknown = (set(services) | set(scale or {})) - set(ALL_SERVICES)
        if unknown:
            raise ConfigError(
                f"unknown service {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(ALL_SERVICES)}"
            )
        self.settings = settings
        self.services = tuple(name for name in ALL_SERVICES if name in services)
        self.scale = {name: (scale or {}).get(name, 1) for name in self.services}
        if any(count < 1 for count in self.scale.values()):
            raise ConfigError("a service's scale is 1 or more")
        if self.scale.get(API, 1) > 1:
            # Its instances would all want the one configured port.
            raise ConfigError("the job API runs as one instance; scale the stage services")
        left_out = set(scale or {}) - set(self.services)
        if left_out:
            raise ConfigError(
                f"--scale names {', '.join(sorted(left_out))}, which this stack does not run"
            )
        self.log_dir = log_dir or settings.home / "logs"
        self.broker: LocalKafka | None = None
        self.instances: dict[str, _Instance] = {}
        self.metrics_ports: dict[str, int] = {}
        supervision = settings.supervision
        self.max_restarts = supervision.max_restarts if max_restarts is None else max_restarts
        # The operator token generated for the API when none is configured.
        self.api_token_file: Path | None = None

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running instances' processes, by instance name."""
        return {
            name: inst.process for name, inst in self.instances.items() if inst.process is not None
        }

    def _instance_names(self) -> list[str]:
        """Every instance this stack runs: ``predictor``, ``predictor-2``, ... in service order."""
        return [
            service if index == 0 else f"{service}-{index + 1}"
            for service in self.services
            for index in range(self.scale[service])
        ]

    def start(self) -> Settings:
        """Start everything; return the settings with the broker's address filled in.

        If starting fails part way (or is interrupted), whatever was started is stopped.
        """
        try:
            return self._start()
        except BaseException:
            # A half-started stack would leave services (in sessions of their own, so
            # no Ctrl-C reaches them) and a broker running with nobody to stop them.
            self.stop()
            raise

    def _start(self) -> Settings:
        # Two stacks of one home running the same instance would share its pid file, and
        # `landfall stop` would then reach only one of them.
        already = {
            name: pid
            for name, pid in running_services(self.settings).items()
            if name in self._instance_names()
        }
        if already:
            running = ", ".join(f"{name} (pid {pid})" for name, pid in sorted(already.items()))
            raise ConfigError(
                f"already running for this home: {running}; stop it first "
                f"(landfall stop {' '.join(sorted({_service_of(n) for n in already}))})"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if API in self.services:
            # Here rather than in the API's process, so `up` can say where it is at once;
            # the API then finds the file and reuses it.
            self.api_token_file = ensure_generated_token(self.settings)
            # A missing or malformed token file stops `up` here, before the broker starts,
            # rather than as an API that crashes at every restart.
            TokenStore(self.settings)
        if {"reporter", API} & set(self.services):
            # Created or upgraded here, once, before any service opens it. The services
            # would also manage (they take a lock to migrate), but a database that
            # cannot be opened stops `up` now, with its reason, not as crash loops.
            open_results_db(self.settings.results_db_url).dispose()
        self.settings = self._broker_settings()
        if API in self.services:
            reporting = self.settings.reporting
            # Port 0 asks for any free port, as it does for the metrics ports; it must be
            # chosen here so that api_url names the port the API really listens on.
            if reporting.api_port == 0 or not port_free(reporting.api_port, reporting.api_host):
                port = free_port()
                if reporting.api_port:
                    log.warning("API port %d is taken; using %d", reporting.api_port, port)
                reporting = reporting.model_copy(update={"api_port": port})
                self.settings = self.settings.model_copy(update={"reporting": reporting})
        ensure_all_topics(self.settings)
        # The services read exactly the settings this process holds, overrides and
        # the broker's address included, from one file written for them; it may hold
        # passwords, so only this user may read it, from the moment it exists.
        config_file = self.log_dir / "stack-config.yaml"
        write_child_settings(self.settings, config_file)
        env = child_environment(os.environ, config_file)
        self.metrics_ports = self._metrics_ports()
        _run_dir(self.settings).mkdir(parents=True, exist_ok=True)
        for name in self._instance_names():
            child_env = {**env, "OTEL_RESOURCE_ATTRIBUTES": _with_instance_id(env, name)}
            if name in self.metrics_ports:
                port = self.metrics_ports[name]
                child_env[f"{ENV_PREFIX}TELEMETRY__METRICS_PORT"] = str(port)
            self.instances[name] = _Instance(name, _service_of(name), child_env)
            self._spawn(self.instances[name])
        return self.settings

    def _broker_settings(self) -> Settings:
        """Settings on the configured broker, this home's running one, or one started now."""
        found = with_local_broker(self.settings)
        if found is not None:
            wait_for_broker(
                str(found.kafka.bootstrap), timeout=60, admin_config=kafka_connection_config(found)
            )
            return found
        local = self.settings.kafka.local
        self.broker = LocalKafka(
            broker_dir(self.settings.home), preferred_port=local.port, heap_mb=local.heap_mb
        ).start()
        log.info("Apache Kafka on %s, log in %s", self.broker.bootstrap, self.broker.data_dir)
        kafka = self.settings.kafka.model_copy(update={"bootstrap": self.broker.bootstrap})
        return self.settings.model_copy(update={"kafka": kafka})

    def _spawn(self, instance: _Instance) -> None:
        log_file = (self.log_dir / f"{instance.name}.log").open("ab")
        instance.process = subprocess.Popen(
            [sys.executable, "-m", "landfall", "serve", instance.service],
            env=instance.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C in the terminal reaches the stack,
            # which then stops each service in order instead of all at once.
            start_new_session=True,
        )
        log_file.close()
        instance.restart_at = None
        (_run_dir(self.settings) / f"{instance.name}.pid").write_text(str(instance.process.pid))
        log.info("started %s (pid %d)", instance.name, instance.process.pid)

    def _metrics_ports(self) -> dict[str, int]:
        """Each instance's /metrics port: base, base + 1, ... in service order (0: free ports).

        One machine cannot give the same port to every service, so ``telemetry.metrics_port``
        is where the stack's ports begin.
        """
        telemetry = self.settings.telemetry
        base = telemetry.metrics_port
        if base is None:
            return {}
        names = [name for name in self._instance_names() if _service_of(name) != API]
        ports = {}
        for i, name in enumerate(names):
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

    def supervise(self) -> list[str]:
        """One round of supervision: note stopped services, restart crashed ones.

        Returns lines saying what happened; raises ServiceDied when an instance crashed
        ``max_restarts`` times within the window.
        """
        said = []
        now = time.monotonic()
        for instance in self.instances.values():
            process = instance.process
            if process is None:
                if instance.restart_at is not None and now >= instance.restart_at:
                    self._spawn(instance)
                    said.append(f"{instance.name} restarted")
                continue
            code = process.poll()
            if code is None:
                continue
            instance.process = None
            (_run_dir(self.settings) / f"{instance.name}.pid").unlink(missing_ok=True)
            # SIGTERM is how a service is stopped on purpose (`landfall stop`, `kill`); one
            # still starting (its Spark session, before it handles the signal itself)
            # dies of it rather than exiting 0, and must stay stopped all the same.
            if code in (0, -signal.SIGTERM):
                said.append(f"{instance.name} stopped; the other services keep running")
                continue
            supervision = self.settings.supervision
            window = supervision.restart_window_s
            instance.crashes = [t for t in instance.crashes if now - t < window]
            instance.crashes.append(now)
            tail = _tail(self.log_dir / f"{instance.name}.log", 15)
            if len(instance.crashes) > self.max_restarts:
                raise ServiceDied(
                    f"{instance.name} crashed {len(instance.crashes)} times within "
                    f"{window:g}s (supervision.max_restarts = {self.max_restarts}, last exit "
                    f"code {code}); giving up. End of its log:\n{tail}"
                )
            delay = _restart_delay(len(instance.crashes), supervision)
            instance.restart_at = now + delay
            said.append(
                f"{instance.name} exited with code {code}; restarting in {delay:.1f}s "
                f"(crash {len(instance.crashes)}; `up` gives up at {self.max_restarts + 1} "
                f"within {window:g}s)"
            )
            log.warning("%s exited with code %s; end of its log:\n%s", instance.name, code, tail)
        return said

    @property
    def running(self) -> bool:
        """Whether any instance runs or waits to be restarted."""
        return any(
            inst.process is not None or inst.restart_at is not None
            for inst in self.instances.values()
        )

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM every service, wait, then kill stragglers; stop the broker we started.

        ``timeout`` defaults to the services' shutdown grace plus a margin: a stage in
        flight may finish within the grace, and is abandoned uncommitted after it.
        """
        processes = self.processes
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        if timeout is None:
            timeout = stop_timeout_s(self.settings)
        deadline = time.monotonic() + timeout
        for name, process in processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                # The whole group: the service's Spark JVM goes with it.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            (_run_dir(self.settings) / f"{name}.pid").unlink(missing_ok=True)
        self.instances.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def hurry(self) -> None:
        """SIGTERM the services again: stages still in their grace period are abandoned now."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
