"""Events through a Confluent Schema Registry: its subjects, its serializers, its errors.

With ``kafka.schema_registry_url`` set, events travel in Confluent framing, written and
read by confluent-kafka's ``AvroSerializer`` and ``AvroDeserializer``
(:class:`RegistryAvro`; :class:`landfall.codec.EventCodec` picks the encoding). Each event
type has one topic, and its subject is TopicNameStrategy's ``<topic>-value``.

A deploy registers the schemas, with ``landfall schemas register``
(:func:`register_event_schemas`); a running service never does. Its serializers only
look their schema up (``auto.register.schemas`` off, ``use.latest.version`` off), so a
service writes with the id of its own schema, never with whatever version is newest, and a
service started against a registry that lacks its schemas stops at once with a message
that says what to run (:func:`check_registered`).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
    prefix_schema_id_deserializer,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.serde import SchemaId
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro.read import SchemaResolutionError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay

from landfall.backoff import backoff_wait
from landfall.contracts import EventType, full_name, parse_record_schema, raw_schema
from landfall.errors import ConfigError, InvalidEventError, LandfallError, RetryableError
from landfall.kafka_clients import registry_connection

if TYPE_CHECKING:
    from landfall.config import Settings

__all__ = [
    "REGISTER_HINT",
    "Registration",
    "RegistryAvro",
    "check_registered",
    "event_topics",
    "register_event_schemas",
    "registry_client",
    "subject_of",
]

log = logging.getLogger(__name__)

REGISTER_HINT = (
    "run `landfall schemas register` with this configuration (a deploy registers the "
    "event schemas; services only look them up)"
)
# "Not found" from the registry: error codes 40401 (subject), 40402 (version), 40403
# (schema); confluent-kafka's mock registry says 404 with code 40400.
_NOT_FOUND = 404

# One client per registry URL and config: a client caches what it fetched, and mock://
# clients keep their schemas in the client object, so sharing it is what makes two codecs
# (or a codec and `landfall schemas register`) on one mock URL see the same registry.
_CLIENTS: dict[str, SchemaRegistryClient] = {}
_CLIENTS_LOCK = threading.Lock()


def registry_client(url: str, config: Mapping[str, Any] | None = None) -> SchemaRegistryClient:
    """The shared client of the registry at ``url`` (``mock://...`` for one in memory)."""
    key = json.dumps({"url": url, **(config or {})}, sort_keys=True, default=repr)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = SchemaRegistryClient.new_client({**(config or {}), "url": url})
        return _CLIENTS[key]


def event_topics(settings: Settings) -> dict[EventType, str]:
    """The topic each event type is published on (one each; the dead letters are not Avro)."""
    topics = settings.kafka.topics
    return {
        EventType.DATA_LANDED: topics.landed.name,
        EventType.BATCH_VALIDATED: topics.validated.name,
        EventType.BATCH_FEATURIZED: topics.featurized.name,
        EventType.BATCH_PREDICTED: topics.predicted.name,
        EventType.BATCH_REPORTED: topics.reported.name,
        EventType.BATCH_FAILED: topics.failed.name,
    }


def subject_of(topic: str) -> str:
    """The subject of a topic's event values: TopicNameStrategy's ``<topic>-value``."""
    subject = topic_subject_name_strategy(SerializationContext(topic, MessageField.VALUE), None)
    assert subject is not None
    return subject


def current_schema(event_type: EventType) -> Schema:
    """``event_type``'s current schema as the registry stores it."""
    return Schema(json.dumps(raw_schema(event_type)), "AVRO")


def registry_failure(action: str, exc: Exception) -> LandfallError:
    """A failed registry call in landfall's words: retryable, unless a person must act."""
    if not isinstance(exc, SchemaRegistryError):
        # No answer at all (refused, timed out, DNS): the registry may come back.
        return RetryableError(f"schema registry unreachable {action}: {exc}")
    # 5xx and throttling pass; other 4xx (auth, incompatible schema) need a human.
    status = int(exc.http_status_code or 0)
    if status >= 500 or status in (408, 429) or status <= 0:
        return RetryableError(f"schema registry failed {action}: {exc}")
    return ConfigError(f"schema registry refused {action}: {exc}")


def _lookup(client: SchemaRegistryClient, event_type: EventType, topic: str) -> Any:
    """``event_type``'s current schema as registered under its topic's subject (its id and
    version); None: not there."""
    subject = subject_of(topic)
    try:
        return client.lookup_schema(subject, current_schema(event_type))
    except SchemaRegistryError as exc:
        if exc.http_status_code == _NOT_FOUND:
            return None
        raise registry_failure(f"looking up {event_type.short_name} in {subject!r}", exc) from exc
    except Exception as exc:
        raise registry_failure(f"looking up {event_type.short_name} in {subject!r}", exc) from exc


def check_registered(settings: Settings, *, wait_s: float = 0.0) -> None:
    """Raise ConfigError naming every event schema the configured registry lacks.

    What a service checks as it starts; nothing without a registry. A registry that
    does not answer (or answers 5xx) is asked again, with backoff, for up to ``wait_s``
    seconds, as a service waits for its broker: in compose or Kubernetes the registry
    may start after the services. Past that, the RetryableError says it is unreachable.
    """
    connection = registry_connection(settings)
    if connection is None:
        return
    client = registry_client(*connection)
    for attempt in Retrying(
        retry=retry_if_exception_type(RetryableError),
        stop=stop_after_delay(wait_s),
        wait=backoff_wait(0.5, 5.0),
        before_sleep=_log_waiting,
        reraise=True,
    ):
        with attempt:
            _check_subjects(settings, client)


def _log_waiting(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("waiting for the schema registry (attempt %d): %s", state.attempt_number, error)


def _check_subjects(settings: Settings, client: SchemaRegistryClient) -> None:
    missing = [
        f"{event_type.short_name} under {subject_of(topic)!r}"
        for event_type, topic in event_topics(settings).items()
        if _lookup(client, event_type, topic) is None
    ]
    if missing:
        raise ConfigError(
            f"the schema registry (kafka.schema_registry_url) lacks {len(missing)} of "
            f"landfall's event schemas ({', '.join(missing)}): {REGISTER_HINT}"
        )


class RegistryAvro:
    """Confluent-framed Avro for one registry, through confluent-kafka's serdes.

    One serializer per event type and topic (a serializer keeps the schema id it looked
    up), one deserializer per event type, reading into landfall's current schema.
    """

    def __init__(self, url: str, config: Mapping[str, Any] | None = None) -> None:
        self.client = registry_client(url, config)
        self._serializers: dict[tuple[EventType, str], AvroSerializer] = {}
        self._deserializers: dict[EventType, AvroDeserializer] = {}
        self._writer_types: dict[int, EventType] = {}
        # The payload stream of the latest deserialization in this thread (see _payload).
        self._last_payload = threading.local()

    def serialize(self, event_type: EventType, record: Mapping[str, Any], topic: str) -> bytes:
        """``record`` (checked, complete) framed with its schema's registered id."""
        key = (event_type, topic)
        if key not in self._serializers:
            # Looked up here first, so a missing schema is said as such and the
            # serializer's own lookup comes from the client's cache.
            if _lookup(self.client, event_type, topic) is None:
                raise ConfigError(
                    f"{event_type.short_name} is not registered under {subject_of(topic)!r} "
                    f"in the schema registry: {REGISTER_HINT}"
                )
            conf = {"auto.register.schemas": False, "use.latest.version": False}
            self._serializers[key] = AvroSerializer(
                self.client, current_schema(event_type), conf=conf
            )
        context = SerializationContext(topic, MessageField.VALUE)
        data = self._serializers[key](dict(record), context)
        assert data is not None  # None only for a None record
        return data

    def deserialize(self, data: bytes, where: str) -> tuple[EventType, dict[str, Any]]:
        """The event type and record of Confluent-framed ``data`` (magic byte 0)."""
        if len(data) <= 5:
            raise InvalidEventError(
                f"{where}: Confluent message of {len(data)} bytes has no Avro body after "
                "its 5-byte header"
            )
        schema_id = SchemaId("AVRO")
        prefix_schema_id_deserializer(data, None, schema_id)
        assert schema_id.id is not None
        event_type = self._writer_type(schema_id.id, where)
        where = f"{where}: {event_type.short_name}"
        if event_type not in self._deserializers:
            self._deserializers[event_type] = AvroDeserializer(
                self.client,
                current_schema(event_type),
                conf={"schema.id.deserializer": self._payload},
            )
        try:
            # No context: no subject, so no registry call beyond the writer schema,
            # which the client has cached (fetched just above).
            record = self._deserializers[event_type](data, None)
        except SchemaResolutionError as exc:
            raise InvalidEventError(
                f"{where}: writer schema cannot be read as ours: {exc}"
            ) from None
        # Corrupt input surfaces as EOFError, struct.error, ValueError, IndexError, ...
        # depending on where it breaks; none of it may escape as anything but invalid.
        except Exception as exc:  # noqa: BLE001
            raise InvalidEventError(
                f"{where}: Avro body of {len(data) - 5} bytes is corrupt or truncated "
                f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
            ) from None
        unread = len(data) - self._last_payload.stream.tell()
        if unread:
            raise InvalidEventError(
                f"{where}: {unread} unexpected trailing bytes after the Avro body"
            )
        if not isinstance(record, dict):
            raise InvalidEventError(f"{where}: Avro body is not a record")
        # fastavro returns uuid.UUID for logicalType uuid; the rest of landfall uses str ids.
        return event_type, {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in record.items()}

    def _payload(self, data: bytes, ctx: Any, schema_id: SchemaId) -> io.BytesIO:
        # The deserializer's `schema.id.deserializer` hook: the library's own framing,
        # with the stream kept so that decode can tell a body followed by bytes that
        # belong to no record (the deserializer would ignore them).
        stream = prefix_schema_id_deserializer(data, ctx, schema_id)
        self._last_payload.stream = stream
        return stream

    def _writer_type(self, schema_id: int, where: str) -> EventType:
        """The event type that schema ``schema_id`` of the registry writes."""
        if schema_id in self._writer_types:
            return self._writer_types[schema_id]
        try:
            schema = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == _NOT_FOUND:
                raise InvalidEventError(
                    f"{where}: schema id {schema_id} is not in the registry"
                ) from None
            raise registry_failure(f"fetching schema id {schema_id}", exc) from exc
        except Exception as exc:
            raise registry_failure(f"fetching schema id {schema_id}", exc) from exc
        if (schema.schema_type or "AVRO") != "AVRO":
            raise InvalidEventError(
                f"{where}: schema id {schema_id} is {schema.schema_type}, not Avro"
            )
        try:
            writer = parse_record_schema(json.loads(schema.schema_str or ""))
        except Exception as exc:  # noqa: BLE001 - fastavro's parse errors share no base class
            raise InvalidEventError(
                f"{where}: schema id {schema_id} is not a valid Avro schema: {exc}"
            ) from None
        name = full_name(writer)
        try:
            event_type = EventType(name)
        except ValueError:
            raise InvalidEventError(
                f"{where}: schema id {schema_id} is {name!r}, not a landfall event"
            ) from None
        self._writer_types[schema_id] = event_type
        return event_type


@dataclass(frozen=True)
class Registration:
    """What ``landfall schemas register`` did for one event schema."""

    event_type: EventType
    subject: str
    schema_id: int
    version: int | None
    registered: bool  # False: the registry had this very schema already

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "event_type": self.event_type.short_name,
            "subject": self.subject,
            "schema_id": self.schema_id,
            "version": self.version,
            "action": "registered" if self.registered else "unchanged",
        }


def register_event_schemas(
    client: SchemaRegistryClient, topics: Mapping[EventType, str]
) -> list[Registration]:
    """Register every event schema under its topic's subject; say what was done.

    Each schema the registry lacks is first checked against the subject's latest version,
    both ways (every release reads every other's events: :mod:`landfall.schema_history`),
    and nothing is registered unless all of them pass: an incompatible schema is a
    ConfigError naming each problem. The registry's own compatibility rule applies too.
    """
    from landfall.schema_history import check_compatible

    to_register, done, problems = [], [], []
    for event_type, topic in topics.items():
        subject = subject_of(topic)
        found = _lookup(client, event_type, topic)
        if found is not None:
            done.append(
                Registration(event_type, subject, found.schema_id, found.version, registered=False)
            )
            continue
        latest = _latest(client, subject)
        if latest is not None:
            try:
                theirs = json.loads(latest.schema.schema_str or "")
                check_compatible(theirs, raw_schema(event_type))
                check_compatible(raw_schema(event_type), theirs)
            except (InvalidEventError, ConfigError, ValueError) as exc:
                problems.append(f"{subject!r} (latest version {latest.version}): {exc}")
        to_register.append((event_type, subject))
    if problems:
        raise ConfigError(
            "not registering: the registry's latest schema is incompatible with landfall's "
            f"under {'; '.join(problems)}"
        )
    for event_type, subject in to_register:
        action = f"registering {event_type.short_name} under {subject!r}"
        try:
            registered = client.register_schema_full_response(subject, current_schema(event_type))
            version = client.lookup_schema(subject, current_schema(event_type)).version
        except Exception as exc:
            raise registry_failure(action, exc) from exc
        assert registered.schema_id is not None
        done.append(Registration(event_type, subject, registered.schema_id, version, True))
    order = list(topics)
    return sorted(done, key=lambda r: order.index(r.event_type))


def _latest(client: SchemaRegistryClient, subject: str) -> Any:
    """The subject's latest registered schema; None for a subject not there yet."""
    try:
        return client.get_latest_version(subject)
    except SchemaRegistryError as exc:
        if exc.http_status_code == _NOT_FOUND:
            return None
        raise registry_failure(f"reading the latest version of {subject!r}", exc) from exc
    except Exception as exc:
        raise registry_failure(f"reading the latest version of {subject!r}", exc) from exc
