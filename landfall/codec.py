"""Events to bytes and back: :class:`EventCodec`, the only place that does either.

Three wire forms exist:

* Avro single-object encoding (``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint +
  Avro binary body) when no schema registry is configured; writer schemas are found by
  fingerprint among ``schemas/**/*.avsc``, so older versions kept under ``schemas/history``
  stay readable.
* Confluent Schema Registry framing (``00`` + 4-byte big-endian schema id + Avro body) when a
  registry URL is configured, written and read by confluent-kafka's Avro serdes with the
  TopicNameStrategy subject ``<topic>-value`` (:mod:`landfall.schema_registry`).
* On the ingress topic only, the Avro JSON encoding of ``DataLanded``, also in the plain form
  a person types (missing optional fields, bare values for nullable unions).

Whatever the form, a decoded record is in the representation :mod:`landfall.contracts`
describes, and anything that cannot be decoded or breaks the contract raises
:class:`~landfall.errors.InvalidEventError` saying what and where.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.read import SchemaResolutionError

from landfall.contracts import (
    SCHEMA_DIR,
    EventType,
    check_record,
    check_semantics,
    field_names,
    fingerprint_of,
    load_schema,
    parse_record_schema,
    schema_fingerprint,
    with_defaults,
)
from landfall.errors import ConfigError, InvalidEventError
from landfall.redact import redact_tree

if TYPE_CHECKING:
    from landfall.schema_registry import RegistryAvro

__all__ = ["EventCodec"]

_SINGLE_OBJECT_MARKER = b"\xc3\x01"
_CONFLUENT_MAGIC = 0


# --------------------------------------------------------------------------- single-object


@functools.cache
def _writers_by_fingerprint() -> dict[bytes, tuple[EventType, dict[str, Any]]]:
    # Every schema file under schemas/ (history included) can have written data we must read.
    if not SCHEMA_DIR.is_dir():
        raise ConfigError(f"no schema folder at {SCHEMA_DIR}: landfall is installed without it")
    known = {t.value: t for t in EventType}
    writers: dict[bytes, tuple[EventType, dict[str, Any]]] = {}
    for path in sorted(SCHEMA_DIR.rglob("*.avsc")):
        try:
            parsed = parse_record_schema(json.loads(path.read_text(encoding="utf-8")))
        except Exception as exc:  # a broken schema file is a deployment fault, not bad input
            raise ConfigError(f"cannot parse schema file {path}: {exc}") from exc
        event_type = known.get(str(parsed.get("name")))
        if event_type is None:
            continue
        fp = fingerprint_of(parsed)
        # The current version reuses load_schema's dict so _read_body can skip resolution.
        current = fp == schema_fingerprint(event_type)
        writers[fp] = (event_type, load_schema(event_type) if current else dict(parsed))
    return writers


# --------------------------------------------------------------------------- Avro bodies


def _write_body(schema: dict[str, Any], record: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, dict(record))
    return buf.getvalue()


def _read_body(
    writer: dict[str, Any], reader: dict[str, Any], body: bytes, where: str
) -> dict[str, Any]:
    buf = io.BytesIO(body)
    try:
        # No reader schema when they are the same: fastavro then skips resolution.
        record = fastavro.schemaless_reader(buf, writer, None if writer is reader else reader)
    except SchemaResolutionError as exc:
        raise InvalidEventError(f"{where}: writer schema cannot be read as ours: {exc}") from None
    # Corrupt input surfaces as EOFError, struct.error, ValueError, IndexError, MemoryError...
    # depending on where it breaks; none of it may escape as anything but InvalidEventError.
    except Exception as exc:  # noqa: BLE001
        raise InvalidEventError(
            f"{where}: Avro body of {len(body)} bytes is corrupt or truncated "
            f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
        ) from None
    if buf.tell() != len(body):
        raise InvalidEventError(
            f"{where}: {len(body) - buf.tell()} unexpected trailing bytes after the Avro body"
        )
    if not isinstance(record, dict):
        raise InvalidEventError(f"{where}: Avro body is not a record")
    # fastavro returns uuid.UUID for logicalType uuid; the rest of landfall uses str ids.
    return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in record.items()}


# --------------------------------------------------------------------------- JSON ingress


# A data-landed event in JSON is a flat object of a few short fields (a union value
# adds one level): anything far bigger or deeper is not one, and is refused before
# the parser spends time or stack on it.
_JSON_MAX_BYTES = 64 * 1024
_JSON_MAX_DEPTH = 8


def _json_too_deep(text: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (one linear pass)."""
    depth, in_string, escaped = 0, False, False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return False


def _decode_json(text: bytes, where: str) -> dict[str, Any]:
    """Decode DataLanded from Avro JSON or the plain JSON a person types."""
    event_type = EventType.DATA_LANDED
    if len(text) > _JSON_MAX_BYTES:
        raise InvalidEventError(
            f"{where}: JSON message of {len(text)} bytes is over the {_JSON_MAX_BYTES} a "
            "data-landed event can need"
        )
    if _json_too_deep(text, _JSON_MAX_DEPTH):
        raise InvalidEventError(f"{where}: JSON nests deeper than {_JSON_MAX_DEPTH} levels")
    try:
        obj = json.loads(text.decode("utf-8-sig"))
    except RecursionError:  # belt and braces: the depth check should have caught it
        raise InvalidEventError(f"{where}: JSON nests too deep to parse") from None
    except UnicodeDecodeError as exc:
        raise InvalidEventError(f"{where}: JSON message is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidEventError(f"{where}: invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEventError(f"{where}: JSON message must be an object")
    where = f"{where}: JSON {event_type.short_name}"
    schema = load_schema(event_type)
    unknown = sorted(set(obj) - set(field_names(event_type)))
    if unknown:
        # Rejecting beats ignoring: a misspelt "path" would silently read the default location.
        raise InvalidEventError(f"{where} has unknown field(s) {', '.join(unknown)}")
    record: dict[str, Any] = {}
    for field in schema["fields"]:
        name = field["name"]
        if name not in obj:
            if "default" not in field:
                raise InvalidEventError(f"{where} is missing required field {name!r}")
            record[name] = field["default"]
            continue
        value = _unwrap_union(field["type"], obj[name])
        if name == "occurred_at" and isinstance(value, str):
            value = _parse_timestamp(value, where)
        record[name] = value
    check_record(event_type, record, where)
    # A binary round trip gives JSON events exactly the representation of Avro ones.
    return _read_body(schema, schema, _write_body(schema, record), where)


def _unwrap_union(field_type: Any, value: Any) -> Any:
    # Avro JSON tags a non-null union value with its branch: {"string": "x"}; also take bare x.
    if isinstance(field_type, list) and isinstance(value, dict) and len(value) == 1:
        branch, inner = next(iter(value.items()))
        if branch in {n for t in field_type for n in _branch_names(t)}:
            return inner
    return value


def _branch_names(schema: Any) -> Iterator[str]:
    if isinstance(schema, str):
        yield schema
        yield schema.rsplit(".", 1)[-1]
    elif isinstance(schema, dict):
        yield from _branch_names(schema.get("name") or schema.get("type"))


def _parse_timestamp(value: str, where: str) -> dt.datetime:
    # Convenience for shell users (`date -Is`); Avro JSON itself uses epoch milliseconds.
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEventError(
            f"{where}: occurred_at {value!r} is neither epoch milliseconds nor ISO-8601"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------- codec


class EventCodec:
    """Encodes events to bytes and decodes bytes to events for one service.

    Without a registry URL it writes Avro single-object encoding; with one it writes
    Confluent framing, with the schema ids a deploy registered (``landfall schemas
    register``). It decodes both (single-object bytes need no registry), so a
    deployment can move to a registry without draining its topics first.
    """

    def __init__(
        self, schema_registry_url: str | None = None, registry_config: dict[str, Any] | None = None
    ) -> None:
        self._registry: RegistryAvro | None = None
        if schema_registry_url:
            # Imported here: the registry's client stack (httpx, authlib) is only
            # loaded by processes that use a registry.
            from landfall.schema_registry import RegistryAvro

            self._registry = RegistryAvro(schema_registry_url, registry_config)

    def encode(self, event_type: EventType, record: Mapping[str, Any], *, topic: str) -> bytes:
        """Validate ``record`` as ``event_type`` and frame it for ``topic``."""
        event_type = EventType(event_type)
        check_record(event_type, record, f"{event_type.short_name} for topic {topic!r}")
        # Every event landfall publishes is encoded here: no string of it leaves the
        # process with a configured secret or a URL's password in it.
        complete = with_defaults(event_type, redact_tree(record))
        if self._registry is not None:
            return self._registry.serialize(event_type, complete, topic)
        body = _write_body(load_schema(event_type), complete)
        return _SINGLE_OBJECT_MARKER + schema_fingerprint(event_type) + body

    def decode(
        self, data: bytes | None, *, topic: str, accept_json: bool = False
    ) -> tuple[EventType, dict[str, Any]]:
        """Decode one Kafka message value into its event type and record."""
        where = f"message on topic {topic!r}"
        if not data:
            raise InvalidEventError(f"{where}: value is empty (null or zero bytes)")
        data = bytes(data)
        if data.lstrip(b" \t\r\n").startswith((b"{", b"\xef\xbb\xbf{")):
            if not accept_json:
                raise InvalidEventError(
                    f"{where}: JSON is accepted only on the ingress topic; this topic takes Avro"
                )
            record = _decode_json(data, where)
            return EventType.DATA_LANDED, record
        if data.startswith(_SINGLE_OBJECT_MARKER):
            event_type, writer, body = _single_object_writer(data, where)
            where = f"{where}: {event_type.short_name}"
            record = _read_body(writer, load_schema(event_type), body, where)
        elif data[0] == _CONFLUENT_MAGIC:
            if self._registry is None:
                raise InvalidEventError(
                    f"{where}: Confluent-framed message but no schema registry is configured"
                )
            event_type, record = self._registry.deserialize(data, where)
            where = f"{where}: {event_type.short_name}"
        else:
            raise InvalidEventError(
                f"{where}: unknown framing (first byte 0x{data[0]:02x}); expected Avro "
                "single-object (C3 01), Confluent (00)"
                + (" or a JSON object" if accept_json else "")
            )
        check_semantics(event_type, record, where)
        return event_type, record


def _single_object_writer(data: bytes, where: str) -> tuple[EventType, dict[str, Any], bytes]:
    header = len(_SINGLE_OBJECT_MARKER) + 8
    if len(data) < header:
        raise InvalidEventError(
            f"{where}: single-object message of {len(data)} bytes is shorter than its "
            f"{header}-byte header"
        )
    fp = data[len(_SINGLE_OBJECT_MARKER) : header]
    found = _writers_by_fingerprint().get(fp)
    if found is None:
        raise InvalidEventError(
            f"{where}: unknown schema fingerprint {fp.hex()}; no schema in schemas/ matches"
        )
    return found[0], found[1], data[header:]
