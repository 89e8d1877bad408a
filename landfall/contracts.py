"""Event contracts: event types <-> Avro schemas, wire encoding.

Every event is an Avro record whose schema lives in ``schemas/`` (one ``<snake_name>.avsc``
per :class:`EventType`; the versions released before it under ``schemas/history``, whose
compatibility rules live in :mod:`landfall.schema_history`). This module is the only place
that turns events into bytes and back. Three wire forms exist (see DESIGN.md section 2):

* Avro single-object encoding (``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint +
  Avro binary body) when no schema registry is configured; writer schemas are found by
  fingerprint among ``schemas/**/*.avsc``, so older versions kept under ``schemas/history``
  stay readable.
* Confluent Schema Registry framing (``00`` + 4-byte big-endian schema id + Avro body) when a
  registry URL is configured, with the TopicNameStrategy subject ``<topic>-value``.
* On the ingress topic only, the Avro JSON encoding of ``DataLanded``, also in the plain form
  a person types (missing optional fields, bare values for nullable unions).

Decoded records and records built here share one representation: plain dicts with every
schema field present, ``event_id`` as ``str`` and ``occurred_at`` as a timezone-aware UTC
:class:`datetime.datetime` with millisecond precision (``None`` when an ingress event
omits it). Anything that cannot be decoded or breaks the contract raises
:class:`~landfall.errors.InvalidEventError` with a message saying what and where.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import importlib.resources
import io
import json
import re
import struct
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from landfall.deliveries import follow_up_id
from landfall.errors import ConfigError, InvalidEventError, RetryableError
from landfall.redact import redact_tree

__all__ = [
    "DATA_FORMATS",
    "SCHEMA_DIR",
    "EventCodec",
    "EventType",
    "follow_up",
    "load_schema",
    "new_event",
    "partition_key",
    "read_schema_file",
    "schema_fingerprint",
    "validate_partition",
]


def _schema_dir() -> Path:
    # An installed wheel carries the contracts inside the package (setup.py copies them
    # in); a checkout or editable install keeps them at the repository root, where people
    # edit them. The package comes first: beside an installed package, ../schemas is
    # whatever else happens to be in site-packages.
    packaged = importlib.resources.files(__package__ or "landfall") / "schemas"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


SCHEMA_DIR: Path = _schema_dir()

_NAMESPACE = "landfall.events"
_SINGLE_OBJECT_MARKER = b"\xc3\x01"
_CONFLUENT_MAGIC = 0
# ASCII digits only, matched in full: `\d` would take other scripts' digits and `$`
# a trailing newline, and either would become a lake folder.
_PARTITION_RE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?:T([0-9]{2}))?")
_PARTITION_MAX_CHARS = len("YYYY-MM-DDTHH")
# A dataset name becomes a lake folder and half of every Kafka key: short and plain.
_DATASET_MAX_CHARS = 128
_DATASET_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{_DATASET_MAX_CHARS - 1}}}")
# The raw file formats the validator reads; the event field is a string in Avro (an
# enum could not read what older writers wrote), so the contract check holds the list.
DATA_FORMATS = ("csv", "json", "parquet")
# How much of a refused value an error repeats: errors travel into events and logs.
_SHOWN_CHARS = 80
# What a follow-up event inherits from the event that caused it.
_CARRIED_FIELDS = ("batch_id", "run_id", "dataset", "partition")
# Optional fields that travel down the pipeline to every event whose schema has them.
_PROPAGATED_FIELDS = ("model_version",)


class EventType(enum.StrEnum):
    """The events of landfall; each value is the Avro full name of the event's record."""

    DATA_LANDED = f"{_NAMESPACE}.DataLanded"
    BATCH_VALIDATED = f"{_NAMESPACE}.BatchValidated"
    BATCH_FEATURIZED = f"{_NAMESPACE}.BatchFeaturized"
    BATCH_PREDICTED = f"{_NAMESPACE}.BatchPredicted"
    BATCH_FAILED = f"{_NAMESPACE}.BatchFailed"
    BATCH_REPORTED = f"{_NAMESPACE}.BatchReported"

    @property
    def short_name(self) -> str:
        """The record name without namespace, e.g. ``DataLanded``."""
        return self.value.rsplit(".", 1)[-1]

    @property
    def schema_file(self) -> Path:
        """The ``.avsc`` file holding the current schema, e.g. ``schemas/data_landed.avsc``."""
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", self.short_name).lower()
        return SCHEMA_DIR / f"{snake}.avsc"


# --------------------------------------------------------------------------- schemas


def read_schema_file(path: Path, event_type: EventType) -> dict[str, Any]:
    """The schema JSON in ``path``, which must define ``event_type``'s record."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read schema of {event_type.short_name} at {path}: {exc}"
        ) from exc
    name = _full_name(raw) if isinstance(raw, dict) else None
    if name != event_type.value:
        raise ConfigError(f"{path} defines {name!r}, expected {event_type.value!r}")
    return dict(raw)


@functools.cache
def _raw_schema(event_type: EventType) -> dict[str, Any]:
    return read_schema_file(event_type.schema_file, event_type)


def _parse(raw: Any) -> dict[str, Any]:
    parsed = parse_schema(raw)
    if not isinstance(parsed, dict):
        raise TypeError("an event schema must be an Avro record")
    return parsed


def _full_name(raw: Mapping[str, Any]) -> str:
    name = str(raw.get("name", ""))
    namespace = raw.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


@functools.cache
def load_schema(event_type: EventType) -> dict[str, Any]:
    """The current parsed schema of ``event_type`` (cached; do not mutate)."""
    return _parse(_raw_schema(event_type))


@functools.cache
def schema_fingerprint(event_type: EventType) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form."""
    return _fingerprint(load_schema(event_type))


def _fingerprint(schema: Any) -> bytes:
    # fastavro already returns the hex of the little-endian bytes the Avro spec's
    # single-object encoding puts on the wire.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@functools.cache
def _writers_by_fingerprint() -> dict[bytes, tuple[EventType, dict[str, Any]]]:
    # Every schema file under schemas/ (history included) can have written data we must read.
    if not SCHEMA_DIR.is_dir():
        raise ConfigError(f"no schema folder at {SCHEMA_DIR}: landfall is installed without it")
    known = {t.value: t for t in EventType}
    writers: dict[bytes, tuple[EventType, dict[str, Any]]] = {}
    for path in sorted(SCHEMA_DIR.rglob("*.avsc")):
        try:
            parsed = _parse(json.loads(path.read_text(encoding="utf-8")))
        except Exception as exc:  # a broken schema file is a deployment fault, not bad input
            raise ConfigError(f"cannot parse schema file {path}: {exc}") from exc
        event_type = known.get(str(parsed.get("name")))
        if event_type is None:
            continue
        fp = _fingerprint(parsed)
        # The current version reuses load_schema's dict so _read_body can skip resolution.
        current = fp == schema_fingerprint(event_type)
        writers[fp] = (event_type, load_schema(event_type) if current else dict(parsed))
    return writers


# --------------------------------------------------------------------------- validation


def _shown(value: object) -> str:
    """``value`` quoted for an error message, cut short if long."""
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        return repr(value[:_SHOWN_CHARS]) + f"... ({len(value)} characters)"
    return repr(value)


def validate_partition(partition: object) -> None:
    """Raise InvalidEventError unless ``partition`` is a real date ``YYYY-MM-DD`` or ``...THH``."""
    # Length first, so no work (matching, quoting the value) grows with a hostile input.
    match = (
        _PARTITION_RE.fullmatch(partition)
        if isinstance(partition, str) and len(partition) <= _PARTITION_MAX_CHARS
        else None
    )
    try:
        if match is None:
            raise ValueError
        dt.date.fromisoformat(match.group(1))
        if match.group(2) is not None and int(match.group(2)) > 23:
            raise ValueError
    except ValueError:
        raise InvalidEventError(
            f"partition {_shown(partition)} is not a date YYYY-MM-DD or date-hour YYYY-MM-DDTHH"
        ) from None


def _field_names(event_type: EventType) -> list[str]:
    return [f["name"] for f in load_schema(event_type)["fields"]]


def _check_semantics(event_type: EventType, record: Mapping[str, Any], where: str) -> None:
    """Contract rules Avro types cannot express."""
    try:
        validate_partition(record.get("partition"))
    except InvalidEventError as exc:
        raise InvalidEventError(f"{where}: {exc}") from None
    dataset = record.get("dataset")
    if (
        not isinstance(dataset, str)
        or len(dataset) > _DATASET_MAX_CHARS
        or _DATASET_RE.fullmatch(dataset) is None
    ):
        raise InvalidEventError(
            f"{where}: dataset {_shown(dataset)} is not a name (1-{_DATASET_MAX_CHARS} of "
            "A-Z a-z 0-9 _ . -, starting with a letter or digit)"
        )
    if event_type is EventType.DATA_LANDED:
        data_format = record.get("format")
        if data_format is not None and data_format not in DATA_FORMATS:
            raise InvalidEventError(
                f"{where}: format {_shown(data_format)} is not one of {', '.join(DATA_FORMATS)}"
            )


def _check_record(event_type: EventType, record: Mapping[str, Any], where: str) -> None:
    """Full contract check of a record about to be written."""
    if not isinstance(record, Mapping):
        raise InvalidEventError(f"{where}: expected a dict, got {type(record).__name__}")
    unknown = sorted(set(record) - set(_field_names(event_type)))
    if unknown:
        raise InvalidEventError(
            f"{where}: unknown field(s) {', '.join(unknown)} for {event_type.short_name}"
        )
    try:
        validate(record, load_schema(event_type), raise_errors=True)
    except ValidationError as exc:
        raise InvalidEventError(f"{where}: {_describe_validation_error(exc)}") from None
    occurred_at = record.get("occurred_at")
    # fastavro silently takes a naive datetime as UTC; a local time would be off by hours.
    if isinstance(occurred_at, dt.datetime) and occurred_at.tzinfo is None:
        raise InvalidEventError(f"{where}: field 'occurred_at' is a naive datetime; use UTC")
    if event_type is not EventType.DATA_LANDED:
        try:
            uuid.UUID(str(record["event_id"]))
        except ValueError:
            raise InvalidEventError(
                f"{where}: field 'event_id' is {record['event_id']!r}, not a UUID"
            ) from None
    _check_semantics(event_type, record, where)


def _describe_validation_error(exc: ValidationError) -> str:
    # fastavro reports a union mismatch once per branch; say it once per field.
    expected: dict[str, list[str]] = {}
    data: dict[str, Any] = {}
    for error in exc.errors:
        field = str(getattr(error, "field", "") or "").rsplit(".", 1)[-1]
        expected.setdefault(field, []).append(_type_label(getattr(error, "schema", None)))
        data[field] = getattr(error, "datum", None)
    parts = []
    for field, types in expected.items():
        wanted = " or ".join(dict.fromkeys(types))
        datum = data[field]
        if datum is None:
            parts.append(f"field {field!r} is missing or null, expected {wanted}")
        else:
            got = f"{datum!r} ({type(datum).__name__})"
            parts.append(f"field {field!r} is {got}, expected {wanted}")
    return "; ".join(parts) or str(exc)


def _type_label(schema: Any) -> str:
    if isinstance(schema, list):
        return " or ".join(_type_label(s) for s in schema)
    if isinstance(schema, dict):
        return str(schema.get("logicalType") or schema.get("name") or schema.get("type"))
    return str(schema)


# --------------------------------------------------------------------------- building events


def _now_millis() -> dt.datetime:
    # Truncated to what timestamp-millis can carry, so a round trip returns an equal value.
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _with_defaults(event_type: EventType, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` in schema field order with absent defaulted fields filled in."""
    complete: dict[str, Any] = {}
    for field in load_schema(event_type)["fields"]:
        name = field["name"]
        if name in record:
            complete[name] = record[name]
        elif "default" in field:
            default = field["default"]
            complete[name] = dict(default) if isinstance(default, dict) else default
    # Unknown keys stay so that validation can name them instead of silently dropping them.
    complete.update((k, v) for k, v in record.items() if k not in complete)
    return complete


def new_event(
    event_type: EventType,
    *,
    dataset: str,
    partition: str,
    batch_id: str | None,
    run_id: str | None,
    producer: str | None,
    causation_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build and validate a new event, filling event_id, occurred_at and schema defaults."""
    event_type = EventType(event_type)
    where = f"new {event_type.short_name}"
    record: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": _now_millis(),
        "batch_id": batch_id,
        "run_id": run_id,
        "dataset": dataset,
        "partition": partition,
        "producer": producer,
    }
    if event_type is EventType.DATA_LANDED:
        if causation_id is not None:
            raise InvalidEventError(f"{where}: DataLanded has no causation_id (it starts a run)")
    else:
        record["causation_id"] = causation_id
    # Explicit fields win, so replay tooling can keep an original event_id or occurred_at.
    record.update(fields)
    record = _with_defaults(event_type, record)
    _check_record(event_type, record, where)
    return record


def follow_up(
    event_type: EventType, upstream: Mapping[str, Any], *, producer: str, **fields: Any
) -> dict[str, Any]:
    """A new event caused by ``upstream``: same batch, run, dataset and partition."""
    event_type = EventType(event_type)
    carried: dict[str, Any] = {name: upstream.get(name) for name in _CARRIED_FIELDS}
    carried["causation_id"] = upstream.get("event_id")
    target_fields = set(_field_names(event_type))
    for name in _PROPAGATED_FIELDS:
        if name in target_fields and upstream.get(name) is not None:
            carried[name] = upstream[name]
    # A caller may override carried ids, e.g. a validator assigning a run_id to a bare ingress
    # event that arrived without one.
    carried.update(fields)
    missing = [n for n in (*_CARRIED_FIELDS, "causation_id") if carried.get(n) is None]
    if missing:
        raise InvalidEventError(
            f"follow_up {event_type.short_name}: upstream event has no "
            f"{', '.join(missing)}; pass them explicitly"
        )
    # Derived, not random: a redelivered upstream event yields the same event again,
    # which consumers recognise by its id (landfall/deliveries.py).
    carried.setdefault(
        "event_id", follow_up_id(event_type.value, carried["run_id"], carried["causation_id"])
    )
    return new_event(event_type, producer=producer, **carried)


def partition_key(record: Mapping[str, Any]) -> bytes:
    """The Kafka key ``b"dataset/partition"``, which keeps one partition's events in order."""
    try:
        return f"{record['dataset']}/{record['partition']}".encode()
    except (KeyError, TypeError) as exc:
        raise InvalidEventError(f"cannot build a Kafka key: record lacks {exc}") from None


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
    unknown = sorted(set(obj) - set(_field_names(event_type)))
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
    _check_record(event_type, record, where)
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

# One client per registry URL and config: mock:// clients keep their schemas in the client
# object, so sharing it is what makes two codecs on one mock URL see the same registry.
_REGISTRY_CLIENTS: dict[str, Any] = {}


def _registry_client(url: str, config: Mapping[str, Any]) -> Any:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    key = json.dumps({"url": url, **config}, sort_keys=True, default=repr)
    if key not in _REGISTRY_CLIENTS:
        _REGISTRY_CLIENTS[key] = SchemaRegistryClient.new_client({**config, "url": url})
    return _REGISTRY_CLIENTS[key]


class EventCodec:
    """Encodes events to bytes and decodes bytes to events for one service.

    Without a registry URL it writes Avro single-object encoding; with one it writes
    Confluent framing. It decodes both (single-object bytes need no registry), so a
    deployment can move to a registry without draining its topics first.
    """

    def __init__(
        self, schema_registry_url: str | None = None, registry_config: dict[str, Any] | None = None
    ) -> None:
        self._registry: Any = (
            _registry_client(schema_registry_url, registry_config or {})
            if schema_registry_url
            else None
        )
        self._ids: dict[tuple[str, EventType], int] = {}
        self._writers: dict[int, tuple[EventType, dict[str, Any]]] = {}

    def encode(self, event_type: EventType, record: Mapping[str, Any], *, topic: str) -> bytes:
        """Validate ``record`` as ``event_type`` and frame it for ``topic``."""
        event_type = EventType(event_type)
        _check_record(event_type, record, f"{event_type.short_name} for topic {topic!r}")
        # Every event landfall publishes is encoded here: no string of it leaves the
        # process with a configured secret or a URL's password in it.
        record = redact_tree(record)
        body = _write_body(load_schema(event_type), _with_defaults(event_type, record))
        if self._registry is None:
            return _SINGLE_OBJECT_MARKER + schema_fingerprint(event_type) + body
        schema_id = self._schema_id(event_type, topic)
        return struct.pack(">bI", _CONFLUENT_MAGIC, schema_id) + body

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
            event_type, writer, body = self._single_object_writer(data, where)
        elif data[0] == _CONFLUENT_MAGIC:
            event_type, writer, body = self._confluent_writer(data, where)
        else:
            raise InvalidEventError(
                f"{where}: unknown framing (first byte 0x{data[0]:02x}); expected Avro "
                "single-object (C3 01), Confluent (00)"
                + (" or a JSON object" if accept_json else "")
            )
        where = f"{where}: {event_type.short_name}"
        record = _read_body(writer, load_schema(event_type), body, where)
        _check_semantics(event_type, record, where)
        return event_type, record

    def _single_object_writer(
        self, data: bytes, where: str
    ) -> tuple[EventType, dict[str, Any], bytes]:
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

    def _confluent_writer(self, data: bytes, where: str) -> tuple[EventType, dict[str, Any], bytes]:
        if self._registry is None:
            raise InvalidEventError(
                f"{where}: Confluent-framed message but no schema registry is configured"
            )
        if len(data) < 5:
            raise InvalidEventError(
                f"{where}: Confluent message of {len(data)} bytes is shorter than its 5-byte header"
            )
        (schema_id,) = struct.unpack(">I", data[1:5])
        if schema_id not in self._writers:
            self._writers[schema_id] = self._fetch_writer(schema_id, where)
        event_type, writer = self._writers[schema_id]
        return event_type, writer, data[5:]

    def _fetch_writer(self, schema_id: int, where: str) -> tuple[EventType, dict[str, Any]]:
        from confluent_kafka.schema_registry import SchemaRegistryError

        try:
            schema = self._registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise InvalidEventError(
                    f"{where}: schema id {schema_id} is not in the registry"
                ) from None
            raise _registry_fault(f"fetching schema id {schema_id}", exc) from exc
        except Exception as exc:
            raise RetryableError(
                f"schema registry unreachable fetching id {schema_id}: {exc}"
            ) from exc
        if (schema.schema_type or "AVRO") != "AVRO":
            raise InvalidEventError(
                f"{where}: schema id {schema_id} is {schema.schema_type}, not Avro"
            )
        try:
            writer = _parse(json.loads(schema.schema_str))
        except Exception as exc:  # noqa: BLE001 - fastavro's parse errors share no base class
            raise InvalidEventError(
                f"{where}: schema id {schema_id} is not a valid Avro schema: {exc}"
            ) from None
        name = str(writer.get("name"))
        try:
            return EventType(name), writer
        except ValueError:
            raise InvalidEventError(
                f"{where}: schema id {schema_id} is {name!r}, not a landfall event"
            ) from None

    def _schema_id(self, event_type: EventType, topic: str) -> int:
        key = (topic, event_type)
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema, SchemaRegistryError

            subject = f"{topic}-value"
            schema = Schema(json.dumps(_raw_schema(event_type)), "AVRO")
            try:
                self._ids[key] = int(self._registry.register_schema(subject, schema))
            except SchemaRegistryError as exc:
                raise _registry_fault(
                    f"registering {event_type.short_name} under {subject!r}", exc
                ) from exc
            except Exception as exc:
                raise RetryableError(
                    f"schema registry unreachable registering {subject!r}: {exc}"
                ) from exc
        return self._ids[key]


def _registry_fault(action: str, exc: Any) -> Exception:
    # 5xx and throttling pass; other 4xx (auth, incompatible schema) need a human.
    status = int(getattr(exc, "http_status_code", 0) or 0)
    if status >= 500 or status in (408, 429) or status <= 0:
        return RetryableError(f"schema registry failed {action}: {exc}")
    return ConfigError(f"schema registry refused {action}: {exc}")
