"""Schema history: every released version reads every other's data, both ways.

The checker (the Apache Avro library's) proves it from the schemas; the round trips
prove it on bytes, with fastavro and through landfall's own codec, as a rolling upgrade
would: events written by an old release decoded by the current one, and the reverse.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest

from landfall.codec import EventCodec
from landfall.contracts import SCHEMA_DIR, EventType, schema_fingerprint
from landfall.errors import ConfigError, InvalidEventError
from landfall.schema_history import (
    HISTORY_DIR,
    SchemaVersion,
    check_compatible,
    check_versions,
    released_versions,
)

VERSIONS = {event_type: released_versions(event_type) for event_type in EventType}
PAIRS = [
    pytest.param(writer, reader, id=f"{writer.name}->{reader.label}".replace(" ", "-"))
    for versions in VERSIONS.values()
    for writer, reader in itertools.permutations(versions, 2)
]
HISTORIC = [
    pytest.param(version, id=version.name.replace(" ", "-"))
    for versions in VERSIONS.values()
    for version in versions[:-1]
]
# Values the contract checks beyond Avro types (landfall.contracts.check_semantics).
_SEMANTIC_VALUES = {"dataset": "demo", "partition": "2026-11-01T05", "format": "parquet"}


def _parsed(version: SchemaVersion) -> dict[str, Any]:
    return fastavro.parse_schema(copy.deepcopy(version.raw))


def _value(name: str, schema: Any, named: dict[str, Any]) -> Any:
    """A value of ``schema`` that no default equals, the same for a name in every version."""
    if isinstance(schema, list):
        return _value(name, next(s for s in schema if s != "null"), named)
    if isinstance(schema, str):
        if schema in named:
            return _value(name, named[schema], named)
        primitives = {
            "string": f"{name}-value",
            "long": 1000 + len(name),
            "int": 100 + len(name),
            "double": 0.25 + len(name),
            "float": 0.5,
            "boolean": True,
            "bytes": name.encode(),
        }
        return primitives[schema]
    if schema.get("logicalType") == "timestamp-millis":
        return dt.datetime(2026, 11, 1, 5, 6, 7, len(name) * 1000, tzinfo=dt.UTC)
    kind = schema["type"]
    if kind == "enum":
        return schema["symbols"][-1]
    if kind == "array":
        return [_value(name, schema["items"], named)]
    if kind == "map":
        return {"k": _value(name, schema["values"], named)}
    if kind == "record":
        return {f["name"]: _value(f["name"], f["type"], named) for f in schema["fields"]}
    return _value(name, kind, named)


def _sample(version: SchemaVersion) -> dict[str, Any]:
    """An event written with ``version``: every field set, none to its default."""
    schema = _parsed(version)
    named = schema.get("__named_schemas", {})
    record = {f["name"]: _value(f["name"], f["type"], named) for f in schema["fields"]}
    record.update((k, v) for k, v in _SEMANTIC_VALUES.items() if k in record)
    if "event_id" in record:
        record["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, version.name))
    assert fastavro.validate(record, schema, raise_errors=True)
    return record


def _body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


def _assert_resolved(read: dict[str, Any], written: dict[str, Any], reader: SchemaVersion) -> None:
    """What a reader must see: the writer's values where both have the field, else defaults."""
    fields = reader.raw["fields"]
    assert list(read) == [f["name"] for f in fields]
    for field in fields:
        name = field["name"]
        expected = written[name] if name in written else field["default"]
        # fastavro reads a uuid logical type as uuid.UUID; landfall's codec gives str.
        got = str(read[name]) if isinstance(read[name], uuid.UUID) else read[name]
        assert got == expected, f"{reader.name} read {name}={read[name]!r}"


# --------------------------------------------------------------------------- the kept versions


def test_every_event_keeps_a_history_and_nothing_else_is_in_it() -> None:
    assert {p.name for p in HISTORY_DIR.iterdir()} == {t.schema_file.stem for t in EventType}
    for event_type, versions in VERSIONS.items():
        assert versions[0].label == "v1", f"{event_type.short_name} has no released history"
        assert versions[-1].path == event_type.schema_file
        assert all(
            v.path.parent == HISTORY_DIR / event_type.schema_file.stem for v in versions[:-1]
        )


@pytest.mark.parametrize("event_type", list(EventType))
def test_each_kept_version_is_a_distinct_wire_version(event_type: EventType) -> None:
    # A change to docs alone keeps the fingerprint: it is not a new version, and two files
    # with one fingerprint would make the decoder's choice of writer arbitrary.
    prints: dict[str, str] = {}
    for version in VERSIONS[event_type]:
        canonical = fastavro.schema.to_parsing_canonical_form(_parsed(version))
        fp = fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
        assert fp not in prints, f"{version.path} has the fingerprint of {prints.get(fp)}"
        prints[fp] = str(version.path)


def test_a_gap_or_a_stray_file_in_the_history_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data_landed"
    folder.mkdir()
    v1 = HISTORY_DIR / "data_landed" / "v1.avsc"
    (folder / "v1.avsc").write_text(v1.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "v3.avsc").write_text(v1.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr("landfall.schema_history.HISTORY_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"v1, v3 are not v1\.\.v2 without gaps"):
        released_versions(EventType.DATA_LANDED)
    (folder / "v3.avsc").rename(folder / "v2.json")
    with pytest.raises(ConfigError, match=r"v2\.json: a kept schema version must be"):
        released_versions(EventType.DATA_LANDED)
    (folder / "v2.json").unlink()
    (folder / "v2.avsc").write_text(
        (SCHEMA_DIR / "batch_failed.avsc").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"v2\.avsc defines 'landfall\.events\.BatchFailed'"):
        released_versions(EventType.DATA_LANDED)


# --------------------------------------------------------------------------- compatibility


@pytest.mark.parametrize(("writer", "reader"), PAIRS)
def test_the_checker_finds_every_version_reads_every_other(
    writer: SchemaVersion, reader: SchemaVersion
) -> None:
    check_compatible(writer.raw, reader.raw)


@pytest.mark.parametrize(("writer", "reader"), PAIRS)
def test_events_round_trip_between_versions(writer: SchemaVersion, reader: SchemaVersion) -> None:
    written = _sample(writer)
    body = _body(_parsed(writer), written)
    read = fastavro.schemaless_reader(io.BytesIO(body), _parsed(writer), _parsed(reader))
    _assert_resolved(read, written, reader)


@pytest.mark.parametrize("old", HISTORIC)
def test_the_codec_decodes_what_an_old_release_wrote(old: SchemaVersion) -> None:
    # The single-object header names the old writer by fingerprint; the current codec must
    # find it among the kept versions, resolve it, and pass the contract checks.
    parsed = _parsed(old)
    written = _sample(old)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    assert fp != schema_fingerprint(old.event_type)
    event_type, read = EventCodec().decode(b"\xc3\x01" + fp + _body(parsed, written), topic="t")
    assert event_type is old.event_type
    _assert_resolved(read, written, VERSIONS[old.event_type][-1])


@pytest.mark.parametrize("old", HISTORIC)
def test_an_old_release_reads_what_the_codec_writes(old: SchemaVersion) -> None:
    current = VERSIONS[old.event_type][-1]
    written = _sample(current)
    data = EventCodec().encode(old.event_type, written, topic="t")
    assert data[:10] == b"\xc3\x01" + schema_fingerprint(old.event_type)
    read = fastavro.schemaless_reader(io.BytesIO(data[10:]), _parsed(current), _parsed(old))
    _assert_resolved(read, written, old)


# --------------------------------------------------------------------------- the checker itself


def _current(event_type: EventType) -> dict[str, Any]:
    return json.loads(event_type.schema_file.read_text(encoding="utf-8"))


@pytest.mark.parametrize("event_type", list(EventType))
def test_adding_a_field_without_default_breaks_only_old_data(event_type: EventType) -> None:
    old = _current(event_type)
    new = copy.deepcopy(old)
    new["fields"].append({"name": "added_later", "type": "string"})
    with pytest.raises(InvalidEventError, match=r"missing_default_value at field 'added_later'"):
        check_compatible(old, new)
    # Old readers ignore the new field, so only the one direction breaks.
    check_compatible(new, old)
    new["fields"][-1]["default"] = ""
    check_compatible(old, new)


def test_changing_a_union_branch_type_is_incompatible() -> None:
    old = _current(EventType.DATA_LANDED)
    new = copy.deepcopy(old)
    for field in new["fields"]:
        if field["name"] == "path":
            field["type"] = ["null", "long"]
    with pytest.raises(InvalidEventError, match=r"missing_union_branch at field 'path'"):
        check_compatible(old, new)


def test_dropping_an_enum_symbol_breaks_old_data() -> None:
    old = _current(EventType.BATCH_REPORTED)
    new = copy.deepcopy(old)
    status = next(f for f in new["fields"] if f["name"] == "status")
    status["type"]["symbols"] = ["SUCCEEDED"]
    with pytest.raises(InvalidEventError, match=r"missing_enum_symbols at field 'status'"):
        check_compatible(old, new)
    check_compatible(new, old)


def test_check_versions_names_the_pair_that_breaks() -> None:
    v1, current = VERSIONS[EventType.BATCH_PREDICTED]
    broken = copy.deepcopy(current.raw)
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "model_uri"]
    broken["fields"].append({"name": "model_uri", "type": "long"})
    versions = [v1, SchemaVersion(current.event_type, "current", current.path, broken)]
    with pytest.raises(InvalidEventError) as caught:
        check_versions(versions)
    message = str(caught.value)
    assert "BatchPredicted v1 -> BatchPredicted current" in message
    assert "BatchPredicted current -> BatchPredicted v1" in message
    assert "field 'model_uri'" in message


def test_a_parsed_schema_is_checked_like_its_json() -> None:
    # fastavro's parsed form carries bookkeeping keys that are not Avro.
    old = VERSIONS[EventType.BATCH_FAILED][0]
    new = _current(EventType.BATCH_FAILED)
    new["fields"].append({"name": "added_later", "type": "long"})
    with pytest.raises(InvalidEventError, match="added_later"):
        check_compatible(_parsed(old), fastavro.parse_schema(new))


def test_a_broken_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="the reader schema is not a valid Avro schema"):
        check_compatible(_current(EventType.DATA_LANDED), {"type": "record", "name": "X"})
