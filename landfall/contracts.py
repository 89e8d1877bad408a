"""Event contracts: event types <-> Avro schemas, and the rules every event keeps.

Every event is an Avro record whose schema lives in ``schemas/`` (one ``<snake_name>.avsc``
per :class:`EventType`; the versions released before it under ``schemas/history``, whose
compatibility rules live in :mod:`landfall.schema_history`). This module loads those
schemas, builds events (:func:`new_event`, :func:`follow_up`) and checks records against
the contract (:func:`check_record`, :func:`check_semantics`). Turning events into bytes
and back is :class:`landfall.codec.EventCodec`'s.

Records built here and decoded ones share one representation: plain dicts with every
schema field present, ``event_id`` as ``str`` and ``occurred_at`` as a timezone-aware UTC
:class:`datetime.datetime` with millisecond precision (``None`` when an ingress event
omits it). A record that breaks the contract raises
:class:`~landfall.errors.InvalidEventError` with a message saying what and where.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import importlib.resources
import json
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from landfall.deliveries import follow_up_id
from landfall.errors import ConfigError, InvalidEventError

__all__ = [
    "DATA_FORMATS",
    "SCHEMA_DIR",
    "EventType",
    "check_record",
    "check_semantics",
    "field_names",
    "fingerprint_of",
    "follow_up",
    "full_name",
    "load_schema",
    "new_event",
    "parse_record_schema",
    "partition_key",
    "raw_schema",
    "read_schema_file",
    "schema_fingerprint",
    "validate_partition",
    "with_defaults",
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
    name = full_name(raw) if isinstance(raw, dict) else None
    if name != event_type.value:
        raise ConfigError(f"{path} defines {name!r}, expected {event_type.value!r}")
    return dict(raw)


@functools.cache
def raw_schema(event_type: EventType) -> dict[str, Any]:
    """The current schema of ``event_type`` as its file's JSON (cached; do not mutate)."""
    return read_schema_file(event_type.schema_file, event_type)


def parse_record_schema(raw: Any) -> dict[str, Any]:
    """fastavro's parsed form of an event schema; TypeError unless it is a record."""
    parsed = parse_schema(raw)
    if not isinstance(parsed, dict):
        raise TypeError("an event schema must be an Avro record")
    return parsed


def full_name(raw: Mapping[str, Any]) -> str:
    """The namespaced name of a schema's record, e.g. ``landfall.events.DataLanded``."""
    name = str(raw.get("name", ""))
    namespace = raw.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


@functools.cache
def load_schema(event_type: EventType) -> dict[str, Any]:
    """The current parsed schema of ``event_type`` (cached; do not mutate)."""
    return parse_record_schema(raw_schema(event_type))


@functools.cache
def schema_fingerprint(event_type: EventType) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form."""
    return fingerprint_of(load_schema(event_type))


def fingerprint_of(schema: Any) -> bytes:
    """The single-object encoding's 8-byte fingerprint of any (parsed) schema."""
    # fastavro already returns the hex of the little-endian bytes the Avro spec's
    # single-object encoding puts on the wire.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


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


def field_names(event_type: EventType) -> list[str]:
    """The fields of ``event_type``'s current schema, in order."""
    return [f["name"] for f in load_schema(event_type)["fields"]]


def check_semantics(event_type: EventType, record: Mapping[str, Any], where: str) -> None:
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


def check_record(event_type: EventType, record: Mapping[str, Any], where: str) -> None:
    """Full contract check of a record about to be written."""
    if not isinstance(record, Mapping):
        raise InvalidEventError(f"{where}: expected a dict, got {type(record).__name__}")
    unknown = sorted(set(record) - set(field_names(event_type)))
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
    check_semantics(event_type, record, where)


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


def with_defaults(event_type: EventType, record: Mapping[str, Any]) -> dict[str, Any]:
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
    record = with_defaults(event_type, record)
    check_record(event_type, record, where)
    return record


def follow_up(
    event_type: EventType, upstream: Mapping[str, Any], *, producer: str, **fields: Any
) -> dict[str, Any]:
    """A new event caused by ``upstream``: same batch, run, dataset and partition."""
    event_type = EventType(event_type)
    carried: dict[str, Any] = {name: upstream.get(name) for name in _CARRIED_FIELDS}
    carried["causation_id"] = upstream.get("event_id")
    target_fields = set(field_names(event_type))
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
