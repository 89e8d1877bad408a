"""Every released version of each event schema, and the rule that binds them.

During a rolling upgrade old and new services share the topics, so an event written with
any released schema must be readable by every other release, in both directions (full
transitive compatibility): a new reader takes what old producers still write, and an old
reader takes what upgraded producers already write. A version that broke this would send
in-flight events to the dead-letter topic.

The current schema of an event is ``schemas/<name>.avsc``; each version released before it
is kept unchanged as ``schemas/history/<name>/v<N>.avsc``, oldest first from ``v1``.
Decoding finds a writer schema among all of them by fingerprint (:mod:`landfall.contracts`);
this module lists them and checks them with the Apache Avro library's reader/writer
compatibility checker, which follows the schema-resolution rules of the Avro spec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.errors
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from landfall.contracts import SCHEMA_DIR, EventType, read_schema_file
from landfall.errors import ConfigError, InvalidEventError

__all__ = [
    "HISTORY_DIR",
    "SchemaVersion",
    "check_compatible",
    "check_versions",
    "released_versions",
]

HISTORY_DIR: Path = SCHEMA_DIR / "history"

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")
_FIELD_LOCATION = re.compile(r"^/?fields/([0-9]+)")


@dataclass(frozen=True)
class SchemaVersion:
    """One released schema of an event: ``v1``, ``v2``, ... or ``current``."""

    event_type: EventType
    label: str
    path: Path
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        """E.g. ``DataLanded v1``, for messages."""
        return f"{self.event_type.short_name} {self.label}"


def released_versions(event_type: EventType) -> list[SchemaVersion]:
    """The kept versions of ``event_type``'s schema, oldest first, then the current one."""
    event_type = EventType(event_type)
    folder = HISTORY_DIR / event_type.schema_file.stem
    numbered: list[tuple[int, Path]] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _VERSION_FILE.fullmatch(path.name)
        if match is None:
            raise ConfigError(f"{path}: a kept schema version must be a file named v<N>.avsc")
        numbered.append((int(match.group(1)), path))
    numbered.sort()
    found = [n for n, _ in numbered]
    if found != list(range(1, len(found) + 1)):
        raise ConfigError(
            f"{folder}: versions {', '.join(f'v{n}' for n in found)} are not v1..v{len(found)}"
            " without gaps; a released version is never removed or renumbered"
        )
    versions = [
        SchemaVersion(event_type, f"v{n}", path, read_schema_file(path, event_type))
        for n, path in numbered
    ]
    current = event_type.schema_file
    versions.append(
        SchemaVersion(event_type, "current", current, read_schema_file(current, event_type))
    )
    return versions


def check_versions(versions: Sequence[SchemaVersion]) -> None:
    """Raise InvalidEventError unless every version reads the data of every other one."""
    problems = []
    for writer in versions:
        for reader in versions:
            if writer is reader:
                continue
            try:
                check_compatible(writer.raw, reader.raw)
            except InvalidEventError as exc:
                problems.append(f"{writer.name} -> {reader.name}: {exc}")
    if problems:
        raise InvalidEventError("; ".join(problems))


def check_compatible(writer: Mapping[str, Any], reader: Mapping[str, Any]) -> None:
    """Raise InvalidEventError unless data written with ``writer`` can be read as ``reader``.

    Both are Avro schemas as JSON objects (fastavro's parsed form is accepted too). The
    message names each problem and where it is, e.g. ``field 'rows' (fields/3): ...``.
    """
    reader_schema = _avro_schema(reader, "reader")
    writer_schema = _avro_schema(writer, "writer")
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader_schema, writer_schema)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return
    kinds = ", ".join(sorted({kind.value for kind in result.incompatibilities}))
    # The root "/" comes along with the real locations when results are merged.
    locations = sorted(loc for loc in result.locations if loc != "/") or ["/"]
    where = ", ".join(_describe_location(loc, reader) for loc in locations)
    raise InvalidEventError(
        f"data written as {_name(writer_schema)} is not readable as {_name(reader_schema)}: "
        f"{kinds} at {where} ({'; '.join(sorted(result.messages))})"
    )


def _avro_schema(schema: Mapping[str, Any], role: str) -> avro.schema.Schema:
    try:
        return avro.schema.parse(json.dumps(_without_fastavro_keys(schema)))
    except (avro.errors.AvroException, TypeError, ValueError) as exc:
        raise ConfigError(f"the {role} schema is not a valid Avro schema: {exc}") from None


def _without_fastavro_keys(schema: Any) -> Any:
    # fastavro's parsed form adds bookkeeping keys ("__fastavro_parsed", ...) that are
    # not Avro; the Avro library would keep them as properties, or fail to serialise them.
    if isinstance(schema, Mapping):
        return {k: _without_fastavro_keys(v) for k, v in schema.items() if not k.startswith("__")}
    if isinstance(schema, list):
        return [_without_fastavro_keys(item) for item in schema]
    return schema


def _describe_location(location: str, reader: Mapping[str, Any]) -> str:
    # The checker points into the reader schema by field index; people know fields by name.
    match = _FIELD_LOCATION.match(location)
    fields = reader.get("fields")
    if match is None or not isinstance(fields, list) or int(match.group(1)) >= len(fields):
        return location
    return f"field {fields[int(match.group(1))].get('name')!r} ({location.lstrip('/')})"


def _name(schema: avro.schema.Schema) -> str:
    return str(getattr(schema, "fullname", None) or schema.type)
