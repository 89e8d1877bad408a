"""Topics and reachability on any Kafka broker: wait for it, create and grow topics.

Every service calls :func:`ensure_topics` on start, so a fresh cluster (or the local
broker of ``landfall up``) has each topic with its configured partition count before
the first event. Topics are created explicitly, never by a produce, so the partition
count is the configured one and not the broker's default.

On a secured cluster, a broker that refuses the client's login or TLS handshake, or an
operation for want of an ACL, is a :class:`ConfigError` at once, one line naming the
setting to fix (:func:`explain_kafka_error`), never a wait until the timeout; no
message carries a password.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewPartitions, NewTopic

from landfall.errors import ConfigError, RetryableError
from landfall.ports import LOOPBACK
from landfall.redact import redact, secret_values

__all__ = ["TopicSpec", "ensure_topics", "explain_kafka_error", "wait_for_broker"]

log = logging.getLogger(__name__)

# Not flagged retriable by librdkafka, yet only a broker that is down or slow.
_TRANSIENT = frozenset({KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT})
# The broker refused who the client is: no retry helps, a setting must change.
_LOGIN_REFUSED = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
# The broker refused an operation for want of an ACL, by the kind of resource.
_NOT_ALLOWED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional-id",
}
# How long one metadata request may take before the client's errors are looked at.
_PROBE_S = 1.0
# librdkafka starts its messages with the broker: "sasl_ssl://host:9093/bootstrap: ".
_BROKER_PREFIX = re.compile(r"^[a-z_]+://\S+?: ")


def explain_kafka_error(
    error: KafkaError,
    bootstrap: str,
    client_config: Mapping[str, Any] | None = None,
    *,
    action: str | None = None,
    resource: str | None = None,
) -> str | None:
    """One line naming the setting to fix, when Kafka refused a login, TLS or an operation.

    ``client_config`` is the client's librdkafka settings (for the user name and CA;
    its secrets are masked in the text); ``action`` says what was refused (e.g.
    ``create topic 'x'``) and ``resource`` names the topic or group an ACL would need.
    None for an error that is none of these.
    """
    config = dict(client_config or {})
    code = error.code()
    detail = _BROKER_PREFIX.sub("", redact(error.str(), secret_values(config)))
    user = config.get("sasl.username")
    if code in _LOGIN_REFUSED:
        return _login_refused(bootstrap, config, detail)
    if code == KafkaError._SSL:
        return _tls_failed(bootstrap, config, detail)
    kind = _NOT_ALLOWED.get(code)
    if kind is None:
        return None
    who = (
        f"user {user!r} (kafka.security.username)"
        if user
        else "this client (no kafka.security.username: its principal is ANONYMOUS, or its "
        "TLS certificate's name)"
    )
    principal = f"User:{user}" if user else "User:<principal>"
    target = "--cluster" if kind == "cluster" else f"--{kind} '{resource or '*'}'"
    return (
        f"Kafka at {bootstrap}: {who} is not allowed to {action or f'use this {kind}'} "
        f"({error.name()}): grant it an ACL (kafka-acls / AclCommand), e.g. kafka-acls.sh "
        f"--bootstrap-server {bootstrap} --add --allow-principal {principal} "
        f"--operation All {target}"
    )


def _login_refused(bootstrap: str, config: Mapping[str, Any], detail: str) -> str:
    lowered = detail.lower()
    if "mechanism" in lowered and ("unsupported" in lowered or "not supported" in lowered):
        mechanism = config.get("sasl.mechanism")
        return (
            f"Kafka at {bootstrap} does not accept SASL mechanism {mechanism!r} "
            f"(kafka.security.sasl_mechanism): {detail}"
        )
    return (
        f"Kafka at {bootstrap} refused the SASL login of user {config.get('sasl.username')!r} "
        f"(kafka.security.username / kafka.security.password): {detail}"
    )


def _tls_failed(bootstrap: str, config: Mapping[str, Any], detail: str) -> str | None:
    lowered = detail.lower()
    if "verify failed" in lowered or "could not be verified" in lowered:
        trusted = config.get("ssl.ca.location") or "the system's CA certificates"
        return (
            f"TLS handshake with Kafka at {bootstrap} failed: the broker's certificate "
            f"is not trusted by {trusted} (kafka.security.ca_file), or does not name "
            f"this host (kafka.security.verify_hostname): {detail}"
        )
    if any(word in lowered for word in ("handshake", "certificate", "alert", "key")):
        return (
            f"TLS handshake with Kafka at {bootstrap} failed (kafka.security.ca_file, "
            f"kafka.security.cert_file, kafka.security.key_file): {detail}"
        )
    return None


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    """Split a bootstrap list ("h1:9092,PLAINTEXT://h2:9092") into (host, port) pairs."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip().split("://", 1)[-1]
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"bad Kafka bootstrap address {item!r} in {bootstrap!r}")
        out.append((host.strip("[]") or LOOPBACK, int(port)))
    return out


def _reachable(addresses: Sequence[tuple[str, int]]) -> bool:
    for address in addresses:
        try:
            with socket.create_connection(address, timeout=0.5):
                return True
        except OSError:
            continue
    return False


class _Admin:
    """An admin client that notices at once a broker refusing its login or TLS handshake.

    librdkafka keeps retrying such a connection; its error callback is how the refusal
    becomes known, so metadata is requested a second at a time and the callback's
    errors looked at in between.
    """

    def __init__(self, bootstrap: str, admin_config: Mapping[str, Any] | None) -> None:
        self.bootstrap = bootstrap
        self.config: dict[str, Any] = {**(admin_config or {}), "bootstrap.servers": bootstrap}
        self.errors: list[KafkaError] = []
        client_config: dict[str, Any] = {**self.config, "error_cb": self.errors.append}
        try:
            self.client = AdminClient(client_config)
        except KafkaException as exc:
            raise ConfigError(
                f"the Kafka client settings for {bootstrap} are not valid "
                f"(kafka.security, kafka.client_config): {self.redact(str(exc))}"
            ) from None

    def redact(self, text: str) -> str:
        """``text`` without any secret of the client's settings."""
        return redact(text, secret_values(self.config))

    def raise_if_refused(self) -> None:
        """Raise ConfigError if the broker refused the client's login or TLS handshake."""
        self.client.poll(0)
        for error in self.errors:
            message = explain_kafka_error(error, self.bootstrap, self.config)
            if message is not None:
                raise ConfigError(message)

    def list_topics(self, deadline: float, *, failure: str, reachable: bool) -> ClusterMetadata:
        """The cluster's metadata, asked until ``deadline`` (at least once, for a second)."""
        deadline = max(deadline, time.monotonic() + _PROBE_S)
        while True:
            try:
                remaining = deadline - time.monotonic()
                return self.client.list_topics(timeout=max(min(_PROBE_S, remaining), 0.1))
            except KafkaException as exc:
                last = exc
            self.raise_if_refused()
            if time.monotonic() >= deadline:
                hint = self._protocol_hint() if reachable else ""
                message = f"Kafka broker at {self.bootstrap} {failure}: {last}{hint}"
                raise RetryableError(self.redact(message)) from last

    def _protocol_hint(self) -> str:
        protocol = str(self.config.get("security.protocol", "plaintext")).upper()
        return (
            f" (its port accepts connections: if that is a TLS or SASL listener, "
            f"kafka.security.protocol, {protocol} here, must match it)"
        )

    def check_topic_access(self, names: Sequence[str], timeout: float) -> None:
        """Raise ConfigError if the broker hides any of these topics for want of an ACL."""
        if not names:
            return
        try:
            futures = self.client.describe_topics(
                TopicCollection(list(names)), request_timeout=timeout
            )
        except (KafkaException, ValueError, TypeError):
            return  # no answer here: creating or listing them will tell
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                err = _kafka_error(exc)
                if err is not None and err.code() in _NOT_ALLOWED:
                    message = explain_kafka_error(
                        err,
                        self.bootstrap,
                        self.config,
                        action=f"see topic {name!r}",
                        resource=name,
                    )
                    raise ConfigError(message or str(err)) from None


def wait_for_broker(
    bootstrap: str, timeout: float = 30.0, *, admin_config: Mapping[str, Any] | None = None
) -> None:
    """Block until a Kafka broker at ``bootstrap`` answers a metadata request.

    ``admin_config`` carries the client's security settings
    (:func:`landfall.kafka_clients.kafka_connection_config`). A broker that refuses the
    login or the TLS handshake is a :class:`ConfigError` within a second or two, naming
    the setting; one that does not answer in time is a :class:`RetryableError`.
    """
    deadline = time.monotonic() + timeout
    addresses = _addresses(bootstrap)
    # A plain TCP probe first: librdkafka would log every refused connection as an error.
    while not _reachable(addresses):
        if time.monotonic() >= deadline:
            raise RetryableError(f"Kafka broker at {bootstrap} unreachable after {timeout:g}s")
        time.sleep(0.1)
    _Admin(bootstrap, admin_config).list_topics(deadline, failure="does not answer", reachable=True)


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
    manage: bool = True,
) -> list[str]:
    """Create missing topics and grow those with fewer partitions than their spec.

    Returns the names created or grown. With ``manage`` off (a cluster whose topics
    are owned by its operators), nothing is changed and a missing or too small topic
    is a :class:`ConfigError` that says what to create.
    """
    for spec in specs:
        if spec.partitions < 1:
            raise ConfigError(f"topic {spec.name!r}: partitions must be >= 1")
    probe = _Admin(bootstrap, admin_config)
    admin = probe.client
    metadata = probe.list_topics(time.monotonic() + timeout, failure="unreachable", reachable=False)
    existing = metadata.topics

    wanted = {spec.name: spec for spec in specs}
    missing = [spec for name, spec in wanted.items() if name not in existing]
    # A topic the client may not describe is missing from the listing too: say so.
    probe.check_topic_access([spec.name for spec in missing], timeout)
    small = {
        name: len(existing[name].partitions)
        for name, spec in wanted.items()
        if name in existing and len(existing[name].partitions) < spec.partitions
    }
    for name, spec in wanted.items():
        if name in existing and len(existing[name].partitions) > spec.partitions:
            # Partitions can never be removed; more than asked is harmless.
            log.info(
                "topic %s has %d partitions, more than the %d configured",
                name,
                len(existing[name].partitions),
                spec.partitions,
            )
    if not manage and (missing or small):
        problems = [f"{s.name} is missing ({s.partitions} partitions wanted)" for s in missing]
        problems += [f"{n} has {have} partitions, {wanted[n].partitions} configured"
                     for n, have in small.items()]  # fmt: skip
        raise ConfigError(
            "topics are not as configured and kafka.manage_topics is off: "
            + "; ".join(problems)
            + " (create or grow them, or set kafka.manage_topics: true)"
        )
    changed = _create(admin, bootstrap, missing, timeout, config=probe.config)
    changed += _grow(
        admin, bootstrap, {n: wanted[n].partitions for n in small}, timeout, config=probe.config
    )
    _await_metadata(admin, {name: wanted[name].partitions for name in changed},
                    time.monotonic() + timeout)  # fmt: skip
    if changed:
        log.info("created or grew topics %s on %s", ", ".join(sorted(changed)), bootstrap)
    return changed


def _create(
    admin: AdminClient,
    bootstrap: str,
    missing: Sequence[TopicSpec],
    timeout: float,
    *,
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, config=s.topic_config()) for s in missing],
        request_timeout=timeout,
    )
    return _settle(
        futures, bootstrap, "create topic", ignore=KafkaError.TOPIC_ALREADY_EXISTS, config=config
    )


def _grow(
    admin: AdminClient,
    bootstrap: str,
    targets: Mapping[str, int],
    timeout: float,
    *,
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    # Growing moves keys to other partitions from then on; events already in the log
    # keep their order within their old partition, and landfall's effects are
    # idempotent, so only ordering across the change is given up.
    if not targets:
        return []
    for name, count in targets.items():
        log.warning("growing topic %s to %d partitions, as configured", name, count)
    futures = admin.create_partitions(
        [NewPartitions(name, count) for name, count in targets.items()], request_timeout=timeout
    )
    # INVALID_PARTITIONS: another service grew it first.
    return _settle(
        futures, bootstrap, "grow topic", ignore=KafkaError.INVALID_PARTITIONS, config=config
    )


def _settle(
    futures: Mapping[str, object],
    bootstrap: str,
    what: str,
    *,
    ignore: int,
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    done = []
    for name, future in futures.items():
        try:
            future.result()  # type: ignore[attr-defined]
            done.append(name)
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.code() == ignore:
                continue  # another service starting at the same time won the race
            if err is not None and err.code() in _NOT_ALLOWED:
                message = explain_kafka_error(
                    err, bootstrap, config, action=f"{what} {name!r}", resource=name
                )
                raise ConfigError(message or err.str()) from None
            if err is not None and not err.retriable() and err.code() not in _TRANSIENT:
                raise ConfigError(f"the broker refused to {what} {name!r}: {err.str()}") from exc
            raise RetryableError(f"{what} {name!r} on {bootstrap} failed: {exc}") from exc
    return done


def _await_metadata(admin: AdminClient, partitions: Mapping[str, int], deadline: float) -> None:
    # Creation can be acknowledged before the metadata lists the topic (or its new
    # partitions); waiting here spares the first producer an UNKNOWN_TOPIC_OR_PART.
    pending = dict(partitions)
    while pending and time.monotonic() < deadline:
        try:
            topics = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1)).topics
        except KafkaException:
            return
        pending = {
            name: count
            for name, count in pending.items()
            if name not in topics
            or topics[name].error is not None
            or len(topics[name].partitions) < count
        }
        if pending:
            time.sleep(0.05)
