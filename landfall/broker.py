"""The local Apache Kafka broker of the one-machine default (KRaft, one JVM).

``landfall up``, ``landfall demo`` and ``landfall broker`` run Apache Kafka from the
jars that ``make kafka`` fetched with Maven (``landfall/jvm/kafka-pom.xml``) as a
child process: one node that is both controller and broker, listening on 127.0.0.1.
Its log directory lives under the landfall home (``<home>/kafka``), so stopping and
starting the stack loses no event and no committed offset. While it runs, a state
file there names its address and process id: other landfall commands of the same
home (``up --only``, ``replay``, ``publish``) find and share it instead of starting
a second one.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from landfall.errors import ConfigError, RetryableError
from landfall.ports import LOOPBACK, free_port, port_free
from landfall.processes import LocalDaemon, pid_alive
from landfall.redact import write_private

__all__ = ["LocalKafka", "RunningBroker", "broker_dir", "kafka_libs", "running_broker"]

log = logging.getLogger(__name__)

KAFKA_LIBS_ENV = "LANDFALL_KAFKA_LIBS"
# Where `make kafka` puts the jars: beside the package in a source checkout.
_DEFAULT_LIBS = Path(__file__).resolve().parent.parent / ".deps" / "kafka" / "libs"
_STATE_FILE = "broker.json"
# The port `landfall up` prefers, so a restarted stack keeps its address.
DEFAULT_PORT = 9092

# One machine, one node: replication factors of 1, and no wait before the first
# rebalance of a new group (the broker default of 3 s exists to batch the joins of
# many consumers on a cluster; here every service would wait it out at start).
_SERVER_DEFAULTS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "INTERNAL",
    "num.partitions": "6",
    "auto.create.topics.enable": "false",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "6",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "message.max.bytes": str(5 * 1024 * 1024),
    "log.retention.hours": "168",
}

_LOG4J = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


def kafka_libs() -> Path:
    """The folder of Apache Kafka's jars: ``$LANDFALL_KAFKA_LIBS`` or ``.deps/kafka/libs``."""
    libs = Path(os.environ.get(KAFKA_LIBS_ENV) or _DEFAULT_LIBS)
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise ConfigError(
            f"Apache Kafka's jars are not in {libs}: run `make kafka` (it fetches them "
            f"with Maven), set {KAFKA_LIBS_ENV}, or point landfall at a running broker "
            "with kafka.bootstrap"
        )
    return libs


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = Path(home) / "bin" / "java" if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise ConfigError("Apache Kafka needs Java 17 or newer: install a JRE or set JAVA_HOME")
    return str(java)


@dataclass(frozen=True)
class RunningBroker:
    """A local broker that some process of this home started and that still answers."""

    bootstrap: str
    pid: int


def broker_dir(home: Path) -> Path:
    """Where the local broker of a landfall home keeps its log and state."""
    return home / "kafka"


def running_broker(data_dir: Path) -> RunningBroker | None:
    """The local broker whose log is in ``data_dir``, if it is running."""
    state_file = data_dir / _STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        broker = RunningBroker(str(state["bootstrap"]), int(state["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return broker if pid_alive(broker.pid) else None


class LocalKafka(LocalDaemon):
    """Apache Kafka in KRaft mode as a child process, its log under ``data_dir``.

    ``port`` is where clients connect; None picks the port this ``data_dir`` used last
    time if free (so the address survives a restart), else ``preferred_port`` if free,
    else any free port. ``listeners`` adds listeners beside the plaintext one, as
    ``{name: (security_protocol, port)}``, and ``server_properties`` adds or overrides
    broker settings: together they make a secured broker for tests and rehearsals.
    """

    name = "Kafka"
    log_name = "broker.log"
    state_name = _STATE_FILE

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        preferred_port: int = DEFAULT_PORT,
        heap_mb: int = 512,
        listeners: Mapping[str, tuple[str, int]] | None = None,
        server_properties: Mapping[str, str] | None = None,
        format_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(data_dir)
        self.heap_mb = heap_mb
        self.extra_listeners = dict(listeners or {})
        self.server_properties = dict(server_properties or {})
        self.format_args = format_args
        self._requested_port = port
        self._preferred_port = preferred_port
        self.port = 0
        self.controller_port = 0

    @property
    def bootstrap(self) -> str:
        """The plaintext bootstrap address clients on this machine connect to."""
        return f"{LOOPBACK}:{self.port}"

    def _choose_ports(self) -> None:
        previous: dict[str, int] = {}
        try:
            previous = json.loads((self.data_dir / "ports.json").read_text())
        except (OSError, ValueError):
            pass
        if self._requested_port is not None:
            if not port_free(self._requested_port):
                raise ConfigError(f"cannot start Kafka: port {self._requested_port} is in use")
            self.port = self._requested_port
        else:
            candidates = [previous.get("port"), self._preferred_port]
            self.port = next((p for p in candidates if p and port_free(p)), 0) or free_port()
        remembered = previous.get("controller_port")
        if remembered and remembered != self.port and port_free(remembered):
            self.controller_port = remembered
        else:
            self.controller_port = free_port()
        (self.data_dir / "ports.json").write_text(
            json.dumps({"port": self.port, "controller_port": self.controller_port})
        )

    def _properties(self) -> dict[str, str]:
        listeners = {
            "PLAINTEXT": ("PLAINTEXT", self.port),
            "INTERNAL": ("PLAINTEXT", free_port()),
            "CONTROLLER": ("PLAINTEXT", self.controller_port),
            **self.extra_listeners,
        }
        advertised = {name: spec for name, spec in listeners.items() if name != "CONTROLLER"}
        return {
            **_SERVER_DEFAULTS,
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "listeners": ",".join(f"{n}://{LOOPBACK}:{p}" for n, (_, p) in listeners.items()),
            "advertised.listeners": ",".join(
                f"{n}://{LOOPBACK}:{p}" for n, (_, p) in advertised.items()
            ),
            "listener.security.protocol.map": ",".join(
                f"{n}:{protocol}" for n, (protocol, _) in listeners.items()
            ),
            "log.dirs": str(self.data_dir / "log"),
            **self.server_properties,
        }

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        return [
            _java(),
            f"-Xms{min(self.heap_mb, 256)}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{kafka_libs()}/*",
            main_class,
            *args,
        ]

    def _format(self, properties_file: Path) -> None:
        """Format the log directory once; a formatted one keeps its cluster id and data."""
        if (self.data_dir / "log" / "meta.properties").exists():
            return
        cluster_id = uuid.uuid4().hex[:22]
        command = self._java_command(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(properties_file),
            *self.format_args,
        )
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ConfigError(
                f"formatting Kafka's log directory {self.data_dir / 'log'} failed: "
                + (done.stderr or done.stdout).strip()[-2000:]
            )

    def cluster_id(self) -> str | None:
        """The cluster id written when the log directory was formatted."""
        try:
            lines = (self.data_dir / "log" / "meta.properties").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
        return None

    def start(self, timeout: float = 90.0) -> Self:
        """Start the broker (formatting its log directory the first time); wait until ready."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        other = running_broker(self.data_dir)
        if other is not None:
            raise ConfigError(
                f"a broker (pid {other.pid}) already runs on {self.data_dir} at "
                f"{other.bootstrap}; use it, or stop it first"
            )
        self._choose_ports()
        properties_file = self.data_dir / "server.properties"
        # Secrets may sit in the properties (SASL users of a secured rehearsal): the
        # file is created readable by this user only.
        write_private(
            properties_file,
            "".join(f"{k}={v}\n" for k, v in sorted(self._properties().items())),
        )
        (self.data_dir / "log4j2.properties").write_text(_LOG4J)
        self._format(properties_file)
        with open(self.log_path, "ab") as out:
            # Own session: a Ctrl-C at the terminal must not kill the broker before the
            # services that still need it have shut down; stop() ends it in order.
            self._proc = subprocess.Popen(
                self._java_command("kafka.Kafka", str(properties_file)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        self._wait_ready(timeout)
        self._state_path.write_text(json.dumps({"bootstrap": self.bootstrap, "pid": self.pid}))
        return self

    def _wait_ready(self, timeout: float) -> None:
        proc, deadline = self._proc, time.monotonic() + timeout
        assert proc is not None
        expected = self.cluster_id()
        admin: AdminClient | None = None
        while proc.poll() is None and time.monotonic() < deadline:
            # Created only once the port accepts, so librdkafka does not log refusals.
            if admin is None and not port_free(self.port):
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
            if admin is not None:
                try:
                    metadata = admin.list_topics(timeout=1.0)
                except KafkaException:
                    continue
                # Whoever answers on the port must be this process, not another broker.
                if metadata.cluster_id == expected and metadata.brokers:
                    log.info("Apache Kafka pid %d on %s", proc.pid, self.bootstrap)
                    return
            time.sleep(0.1)
        code, tail = proc.poll(), self.log_tail()
        self.stop()
        if code is not None:
            raise ConfigError(f"Kafka exited with code {code} on start:\n{tail}")
        raise RetryableError(f"Kafka not ready on {self.bootstrap} after {timeout:g}s:\n{tail}")

    @property
    def exit_code(self) -> int | None:
        """The broker's exit code once it exited on its own, else None."""
        return self._proc.poll() if self._proc is not None else None

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        atexit.unregister(self.stop)
        self._state_path.unlink(missing_ok=True)
