"""Contract tests: schemas, wire encodings, ingress JSON, building events.

Bad input of every kind: test_contract_bad_input.py.
Compatibility between schema versions: test_schema_history.py; the Confluent framing
through a schema registry: test_schema_registry.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import uuid
from pathlib import Path

import fastavro
import pytest

from landfall.codec import EventCodec
from landfall.contracts import (
    SCHEMA_DIR,
    EventType,
    follow_up,
    load_schema,
    new_event,
    partition_key,
    schema_fingerprint,
)
from landfall.errors import InvalidEventError
from tests.contract_events import PAYLOADS, PRODUCER, avro_body, make


@pytest.fixture
def codec() -> EventCodec:
    return EventCodec()


# --------------------------------------------------------------------------- schemas


def test_every_schema_file_parses_standalone() -> None:
    files = sorted(SCHEMA_DIR.glob("*.avsc"))
    assert files, f"no schemas in {SCHEMA_DIR}"
    for path in files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        parsed = fastavro.parse_schema(raw)
        assert isinstance(parsed, dict) and parsed["type"] == "record", path
        assert raw["namespace"] == "landfall.events", path
        assert raw.get("doc"), f"{path} has no doc"


def test_event_types_and_schema_files_match_one_to_one() -> None:
    names: dict[str, Path] = {}
    for path in SCHEMA_DIR.glob("*.avsc"):
        raw = json.loads(path.read_text(encoding="utf-8"))
        full = f"{raw['namespace']}.{raw['name']}"
        assert full not in names, f"{full} defined by {names.get(full)} and {path}"
        names[full] = path
    assert set(names) == {t.value for t in EventType}
    for event_type in EventType:
        assert names[event_type.value] == event_type.schema_file
        assert load_schema(event_type)["name"] == event_type.value
        assert event_type.value.endswith("." + event_type.short_name)


def test_internal_schemas_share_common_fields_first_in_order() -> None:
    common = [
        "event_id",
        "batch_id",
        "run_id",
        "dataset",
        "partition",
        "occurred_at",
        "producer",
        "causation_id",
    ]
    for event_type in EventType:
        if event_type is EventType.DATA_LANDED:
            continue
        fields = load_schema(event_type)["fields"]
        assert [f["name"] for f in fields[: len(common)]] == common, event_type
        # Required: no common field of an internal event may be silently defaulted.
        assert not any("default" in f for f in fields[: len(common)]), event_type


def test_data_landed_needs_only_dataset_and_partition() -> None:
    fields = load_schema(EventType.DATA_LANDED)["fields"]
    required = [f["name"] for f in fields if "default" not in f]
    assert required == ["dataset", "partition"]
    assert all(f["default"] is None for f in fields if "default" in f)


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) as the Avro specification defines it, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_is_little_endian_crc64_avro() -> None:
    # Avro's own test data gives 7195948357588979594 for the schema "null".
    assert crc64_avro(b'"null"') == 7195948357588979594
    for event_type in EventType:
        canonical = fastavro.schema.to_parsing_canonical_form(load_schema(event_type))
        expected = struct.pack("<Q", crc64_avro(canonical.encode()))
        assert schema_fingerprint(event_type) == expected, event_type
    assert len({schema_fingerprint(t) for t in EventType}) == len(EventType)


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("event_type", list(EventType))
def test_single_object_round_trip(codec: EventCodec, event_type: EventType) -> None:
    record = make(event_type)
    data = codec.encode(event_type, record, topic="t")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema_fingerprint(event_type)
    assert data[10:] == avro_body(event_type, record)
    decoded_type, decoded = codec.decode(data, topic="t")
    assert decoded_type is event_type
    assert decoded == record


def test_decoded_types_are_documented_ones(codec: EventCodec) -> None:
    record = make(EventType.BATCH_VALIDATED)
    _, decoded = codec.decode(codec.encode(EventType.BATCH_VALIDATED, record, topic="t"), topic="t")
    assert isinstance(decoded["event_id"], str)
    uuid.UUID(decoded["event_id"])
    occurred = decoded["occurred_at"]
    assert isinstance(occurred, dt.datetime)
    assert occurred.utcoffset() == dt.timedelta(0)
    assert occurred.microsecond % 1000 == 0


# --------------------------------------------------------------------------- JSON ingress


def test_plain_json_from_a_shell_user(codec: EventCodec) -> None:
    event_type, record = codec.decode(
        b'{"dataset": "demo", "partition": "2026-11-01"}', topic="landed", accept_json=True
    )
    assert event_type is EventType.DATA_LANDED
    assert record["dataset"] == "demo"
    assert record["partition"] == "2026-11-01"
    assert {k for k, v in record.items() if v is None} == {
        "event_id",
        "batch_id",
        "run_id",
        "occurred_at",
        "producer",
        "path",
        "format",
        "model_version",
    }


def test_plain_json_with_bare_optional_values(codec: EventCodec) -> None:
    data = (
        b'\n  {"dataset":"d","partition":"2026-11-01T07","path":"x/y","occurred_at":1700000000000}'
    )
    _, record = codec.decode(data, topic="landed", accept_json=True)
    assert record["path"] == "x/y"
    assert record["partition"] == "2026-11-01T07"
    assert record["occurred_at"] == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)


def test_avro_json_with_tagged_unions(codec: EventCodec) -> None:
    record = make(EventType.DATA_LANDED)
    buf = io.StringIO()
    fastavro.json_writer(buf, load_schema(EventType.DATA_LANDED), [record])
    text = buf.getvalue().encode()
    assert json.loads(text)["path"] == {"string": "raw/demo/2026-11-01"}
    assert codec.decode(text, topic="landed", accept_json=True) == (
        EventType.DATA_LANDED,
        record,
    )


def test_json_refused_when_not_ingress(codec: EventCodec) -> None:
    with pytest.raises(InvalidEventError, match="JSON"):
        codec.decode(b'{"dataset": "demo", "partition": "2026-11-01"}', topic="validated")


def test_json_decodes_like_avro(codec: EventCodec) -> None:
    _, from_json = codec.decode(
        b'{"dataset": "demo", "partition": "2026-11-01", "format": "csv"}',
        topic="landed",
        accept_json=True,
    )
    data = codec.encode(EventType.DATA_LANDED, from_json, topic="landed")
    assert codec.decode(data, topic="landed") == (EventType.DATA_LANDED, from_json)


# --------------------------------------------------------------------------- building events


def test_new_event_fills_ids_time_and_defaults() -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    landed = new_event(
        EventType.DATA_LANDED,
        dataset="demo",
        partition="2026-11-01T23",
        batch_id=None,
        run_id=None,
        producer=None,
    )
    uuid.UUID(landed["event_id"])
    assert before <= landed["occurred_at"] <= dt.datetime.now(dt.UTC)
    assert landed["path"] is None and landed["format"] is None
    reported = make(EventType.BATCH_REPORTED)
    assert reported["rows_scored"] is None
    assert [f["name"] for f in load_schema(EventType.BATCH_REPORTED)["fields"]] == list(reported)
    other = make(EventType.BATCH_REPORTED)
    assert other["event_id"] != reported["event_id"]


def test_follow_up_carries_ids_and_sets_causation() -> None:
    upstream = make(EventType.BATCH_VALIDATED, partition="2026-11-01T05")
    event = follow_up(
        EventType.BATCH_FEATURIZED,
        upstream,
        producer="featurizer/0.1.0",
        **PAYLOADS[EventType.BATCH_FEATURIZED],
    )
    for name in ("batch_id", "run_id", "dataset", "partition"):
        assert event[name] == upstream[name]
    assert event["causation_id"] == upstream["event_id"]
    assert event["event_id"] != upstream["event_id"]
    assert event["producer"] == "featurizer/0.1.0"
    assert partition_key(event) == partition_key(upstream) == b"demo/2026-11-01T05"


def test_follow_up_of_bare_ingress_event_needs_ids(codec: EventCodec) -> None:
    _, landed = codec.decode(
        b'{"dataset": "demo", "partition": "2026-11-01"}', topic="landed", accept_json=True
    )
    with pytest.raises(InvalidEventError, match="batch_id, run_id"):
        follow_up(
            EventType.BATCH_FAILED, landed, producer=PRODUCER, **PAYLOADS[EventType.BATCH_FAILED]
        )
    event = follow_up(
        EventType.BATCH_FAILED,
        landed,
        producer=PRODUCER,
        batch_id="b",
        run_id="r",
        causation_id="ingress-1",
        **PAYLOADS[EventType.BATCH_FAILED],
    )
    assert (event["batch_id"], event["run_id"], event["causation_id"]) == ("b", "r", "ingress-1")


def test_a_pinned_model_version_travels_down_the_pipeline() -> None:
    landed = new_event(
        EventType.DATA_LANDED,
        dataset="d",
        partition="2026-11-01",
        batch_id="b",
        run_id="r",
        producer="p",
        event_id="e",
        model_version="7",
    )
    validated = follow_up(
        EventType.BATCH_VALIDATED, landed, producer="v", output_path="o", quarantine_path="q",
        manifest_path="m", rows_landed=1, rows_valid=1, rows_quarantined=0, duration_ms=1,
    )  # fmt: skip
    assert validated["model_version"] == "7"
    # Events whose schema has no such field are not given one.
    failed = follow_up(
        EventType.BATCH_FAILED, validated, producer="f", stage="s", reason="r",
        retryable=False, failed_event_type=EventType.BATCH_VALIDATED.value,
    )  # fmt: skip
    assert "model_version" not in failed
