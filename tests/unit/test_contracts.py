"""Contract tests: schemas, wire encodings, ingress JSON and bad input.

Compatibility between schema versions: test_schema_history.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest

from landfall.contracts import (
    SCHEMA_DIR,
    EventCodec,
    EventType,
    follow_up,
    load_schema,
    new_event,
    partition_key,
    schema_fingerprint,
)
from landfall.errors import InvalidEventError

PRODUCER = "test/0.0"

# Stage-specific fields of each event type; the common ones come from new_event.
PAYLOADS: dict[EventType, dict[str, Any]] = {
    EventType.DATA_LANDED: {"path": "raw/demo/2026-11-01", "format": "csv"},
    EventType.BATCH_VALIDATED: {
        "output_path": "valid/demo/2026-11-01",
        "quarantine_path": "quarantine/demo/2026-11-01",
        "manifest_path": "valid/demo/2026-11-01/_manifest.json",
        "rows_landed": 10,
        "rows_valid": 9,
        "rows_quarantined": 1,
        "duration_ms": 1234,
    },
    EventType.BATCH_FEATURIZED: {
        "output_path": "features/demo/2026-11-01",
        "manifest_path": "features/demo/2026-11-01/_manifest.json",
        "rows": 9,
        "features": ["amount_log", "hour_of_day"],
        "duration_ms": 2000,
    },
    EventType.BATCH_PREDICTED: {
        "output_path": "predictions/demo/2026-11-01",
        "manifest_path": "predictions/demo/2026-11-01/_manifest.json",
        "rows": 9,
        "model_name": "churn",
        "model_version": "3",
        "model_uri": "models:/churn/3",
        "duration_ms": 3000,
    },
    EventType.BATCH_FAILED: {
        "stage": "featurizer",
        "reason": "column amount missing",
        "retryable": False,
        "failed_event_type": EventType.BATCH_VALIDATED.value,
    },
    EventType.BATCH_REPORTED: {
        "status": "SUCCEEDED",
        "report_path": "reports/demo/2026-11-01.json",
        "rows_landed": 10,
        "model_name": "churn",
        "stage_durations_ms": {"validator": 1234, "featurizer": 2000},
    },
}


def make(event_type: EventType, partition: str = "2026-11-01") -> dict[str, Any]:
    """A valid event of ``event_type`` with ids filled in."""
    causation = None if event_type is EventType.DATA_LANDED else str(uuid.uuid4())
    return new_event(
        event_type,
        dataset="demo",
        partition=partition,
        batch_id="batch-1",
        run_id="run-1",
        producer=PRODUCER,
        causation_id=causation,
        **PAYLOADS[event_type],
    )


def avro_body(event_type: EventType, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(event_type), record)
    return buf.getvalue()


@pytest.fixture
def codec() -> EventCodec:
    return EventCodec()


@pytest.fixture
def registry_url() -> str:
    # A fresh mock registry per test, so schema ids do not depend on test order.
    return f"mock://test-{uuid.uuid4().hex}"


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


@pytest.mark.parametrize("event_type", list(EventType))
def test_registry_round_trip(registry_url: str, event_type: EventType) -> None:
    codec = EventCodec(registry_url)
    record = make(event_type)
    data = codec.encode(event_type, record, topic="events")
    assert data[0] == 0
    (schema_id,) = struct.unpack(">I", data[1:5])
    assert schema_id > 0
    assert data[5:] == avro_body(event_type, record)
    assert codec.decode(data, topic="events") == (event_type, record)


def test_registry_codecs_on_one_url_read_each_other(registry_url: str) -> None:
    writer, reader = EventCodec(registry_url), EventCodec(registry_url)
    for event_type in EventType:
        record = make(event_type)
        assert reader.decode(writer.encode(event_type, record, topic="a"), topic="a") == (
            event_type,
            record,
        )
        assert writer.decode(reader.encode(event_type, record, topic="b"), topic="b") == (
            event_type,
            record,
        )


def test_registry_reuses_schema_id_per_subject(registry_url: str) -> None:
    codec = EventCodec(registry_url)
    record = make(EventType.BATCH_FAILED)
    first = codec.encode(EventType.BATCH_FAILED, record, topic="failed")
    second = codec.encode(EventType.BATCH_FAILED, make(EventType.BATCH_FAILED), topic="failed")
    assert first[:5] == second[:5]


def test_registry_codec_still_reads_single_object(registry_url: str, codec: EventCodec) -> None:
    record = make(EventType.BATCH_PREDICTED)
    data = codec.encode(EventType.BATCH_PREDICTED, record, topic="t")
    assert EventCodec(registry_url).decode(data, topic="t") == (EventType.BATCH_PREDICTED, record)


def test_unknown_registry_schema_id_is_invalid(registry_url: str) -> None:
    codec = EventCodec(registry_url)
    with pytest.raises(InvalidEventError, match="schema id 424242"):
        codec.decode(struct.pack(">bI", 0, 424242) + b"\x00", topic="t")


def test_confluent_bytes_without_registry_are_invalid(registry_url: str, codec: EventCodec) -> None:
    data = EventCodec(registry_url).encode(
        EventType.BATCH_FAILED, make(EventType.BATCH_FAILED), topic="t"
    )
    with pytest.raises(InvalidEventError, match="no schema registry"):
        codec.decode(data, topic="t")


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


# --------------------------------------------------------------------------- bad input


def _single_object(event_type: EventType) -> bytes:
    return EventCodec().encode(event_type, make(event_type), topic="t")


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"\x17\x99garbage\xff", "0x17"),
        (b"\xc3\x01" + bytes.fromhex("deadbeefdeadbeef") + b"\x02", "deadbeefdeadbeef"),
        (b"\xc3\x01\x01\x02", "header"),
        (_single_object(EventType.BATCH_VALIDATED)[:-3], "truncated"),
        (_single_object(EventType.BATCH_FAILED) + b"\x00", "trailing"),
        (b'{"partition": "2026-11-01"}', "dataset"),
        (b'{"dataset": "demo", "partition": "yesterday"}', "yesterday"),
        (b'{"dataset": "demo", "partition": "2026-02-30"}', "2026-02-30"),
        (b'{"dataset": "demo", "partition": "2026-11-01T24"}', "2026-11-01T24"),
        (b'{"dataset": "demo", "partition": 20261101}', "partition"),
        (b'{"dataset": "demo", "partition": "2026-11-01", "pth": "x"}', "pth"),
        (b'{"dataset": "demo", "partition": "2026-11-01", "path": 7}', "path"),
        (b'{"dataset": "a/b", "partition": "2026-11-01"}', "a/b"),
        # A trailing newline, other scripts' digits, padding: each would be a lake folder.
        (b'{"dataset": "demo", "partition": "2026-11-01\\n"}', "2026-11-01\\n"),
        ('{"dataset": "demo", "partition": "2026-11-01T\uff12\uff13"}'.encode(), "2026-11-01T"),
        (b'{"dataset": "demo", "partition": " 2026-11-01"}', "' 2026-11-01'"),
        (b'{"dataset": "..", "partition": "2026-11-01"}', "'..'"),
        (b'{"dataset": "de mo", "partition": "2026-11-01"}', "'de mo'"),
        (b'{"dataset": "' + b"x" * 10_000 + b'", "partition": "2026-11-01"}', "..."),
        # The validator reads these three formats; anything else is not a data-landed event.
        (b'{"dataset": "demo", "partition": "2026-11-01", "format": "xls"}', "format 'xls'"),
        (b'{"dataset": "demo", "partition": "2026-11-01", "format": "CSV"}', "format 'CSV'"),
        (b'{"dataset": "demo", "partition": "2026-11-01", "format": ""}', "format ''"),
        # Nesting that would exhaust the parser's stack, and a document far too big.
        (b'{"dataset": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "deeper than 8"),
        (b'{"dataset": "a", "path": "' + b"p" * 100_000 + b'"}', "bytes is over"),
        (b'{"dataset": "[[[[[[[[[[", "partition": "2026-11-01"}', "'[[[[[[[[[['"),
        (b'{"dataset": "demo", ', "invalid JSON"),
        (b'{"dataset": "\xff"}', "UTF-8"),
    ],
)
def test_bad_input_is_invalid_with_detail(
    codec: EventCodec, data: bytes | None, detail: str
) -> None:
    with pytest.raises(InvalidEventError) as excinfo:
        codec.decode(data, topic="landed", accept_json=True)
    assert detail in str(excinfo.value)
    assert "landed" in str(excinfo.value)


def test_random_bytes_never_escape_as_raw_errors(codec: EventCodec) -> None:
    # Whatever follows a valid header, decode fails as InvalidEventError or succeeds.
    header = b"\xc3\x01" + schema_fingerprint(EventType.BATCH_REPORTED)
    rng = random.Random(1234)  # fixed, so a failure reproduces
    for size in range(200):
        rest = rng.randbytes(size % 40)
        for data in (header + rest, rest, b"\x00" + rest):
            try:
                codec.decode(data, topic="t", accept_json=True)
            except InvalidEventError:
                pass


def test_bad_partition_in_avro_is_invalid(codec: EventCodec) -> None:
    record = make(EventType.BATCH_FAILED)
    record["partition"] = "2026-13-01"
    body = avro_body(EventType.BATCH_FAILED, record)
    data = b"\xc3\x01" + schema_fingerprint(EventType.BATCH_FAILED) + body
    with pytest.raises(InvalidEventError, match="2026-13-01"):
        codec.decode(data, topic="failed")


def test_a_format_outside_the_enum_is_invalid_in_every_encoding(codec: EventCodec) -> None:
    record = make(EventType.DATA_LANDED)
    record["format"] = "xls"
    body = avro_body(EventType.DATA_LANDED, record)
    data = b"\xc3\x01" + schema_fingerprint(EventType.DATA_LANDED) + body
    with pytest.raises(InvalidEventError, match="format 'xls' is not one of csv, json, parquet"):
        codec.decode(data, topic="landed")
    # new_event is what the CLI, the API and the demo publish through.
    with pytest.raises(InvalidEventError, match="format 'xls'"):
        new_event(
            EventType.DATA_LANDED,
            dataset="demo",
            partition="2026-11-01",
            batch_id=None,
            run_id=None,
            producer=PRODUCER,
            format="xls",
        )
    for known in ("csv", "json", "parquet", None):
        record["format"] = known
        assert codec.decode(codec.encode(EventType.DATA_LANDED, record, topic="t"), topic="t")


def test_a_huge_dataset_name_never_reaches_a_reader(codec: EventCodec) -> None:
    # A batch-failed naming a 10 KB dataset once made the reporter fail unrecorded: it
    # is refused at decoding, and no service can build one to publish either.
    record = make(EventType.BATCH_FAILED)
    record["dataset"] = "x" * 10_000
    body = avro_body(EventType.BATCH_FAILED, record)
    data = b"\xc3\x01" + schema_fingerprint(EventType.BATCH_FAILED) + body
    with pytest.raises(InvalidEventError, match="is not a name") as caught:
        codec.decode(data, topic="failed")
    assert len(str(caught.value)) < 400
    with pytest.raises(InvalidEventError, match="is not a name"):
        follow_up(
            EventType.BATCH_FAILED,
            record,
            producer=PRODUCER,
            stage="validation",
            reason="r",
            retryable=False,
            failed_event_type=EventType.DATA_LANDED.value,
        )
    record["dataset"] = "x" * 128  # the longest name there is
    codec.decode(codec.encode(EventType.BATCH_FAILED, record, topic="t"), topic="t")


def test_a_huge_partition_is_refused_at_once_with_a_short_message(codec: EventCodec) -> None:
    record = make(EventType.BATCH_FAILED)
    record["partition"] = "2026-11-01" + "9" * 50_000_000
    body = avro_body(EventType.BATCH_FAILED, record)
    data = b"\xc3\x01" + schema_fingerprint(EventType.BATCH_FAILED) + body
    started = time.monotonic()
    with pytest.raises(InvalidEventError, match="is not a date") as caught:
        codec.decode(data, topic="failed")
    assert len(str(caught.value)) < 400
    # Decoding 50 MB of Avro takes a moment; the check itself must add nothing to it.
    assert time.monotonic() - started < 5


def test_new_event_names_the_wrong_field() -> None:
    with pytest.raises(InvalidEventError, match=r"'rows_valid'.*expected long"):
        new_event(
            EventType.BATCH_VALIDATED,
            dataset="demo",
            partition="2026-11-01",
            batch_id="b",
            run_id="r",
            producer=PRODUCER,
            causation_id="c",
            **{**PAYLOADS[EventType.BATCH_VALIDATED], "rows_valid": "nine"},
        )


def test_new_event_rejects_missing_unknown_and_bad_partition() -> None:
    common = {"dataset": "demo", "batch_id": "b", "run_id": "r", "producer": PRODUCER}
    payload = dict(PAYLOADS[EventType.BATCH_FAILED])
    with pytest.raises(InvalidEventError, match="'causation_id'"):
        new_event(EventType.BATCH_FAILED, partition="2026-11-01", **common, **payload)
    with pytest.raises(InvalidEventError, match="'reason'"):
        new_event(
            EventType.BATCH_FAILED,
            partition="2026-11-01",
            causation_id="c",
            **common,
            **{k: v for k, v in payload.items() if k != "reason"},
        )
    with pytest.raises(InvalidEventError, match="colour"):
        new_event(
            EventType.BATCH_FAILED,
            partition="2026-11-01",
            causation_id="c",
            colour="red",
            **common,
            **payload,
        )
    with pytest.raises(InvalidEventError, match="11/01/2026"):
        new_event(
            EventType.BATCH_FAILED, partition="11/01/2026", causation_id="c", **common, **payload
        )
    with pytest.raises(InvalidEventError, match="causation_id"):
        new_event(EventType.DATA_LANDED, partition="2026-11-01", causation_id="c", **common)


def test_encode_validates_too(codec: EventCodec) -> None:
    record = make(EventType.BATCH_PREDICTED)
    record["rows"] = None
    with pytest.raises(InvalidEventError, match="'rows'"):
        codec.encode(EventType.BATCH_PREDICTED, record, topic="t")
    record = make(EventType.BATCH_PREDICTED)
    record["event_id"] = "not-a-uuid"
    with pytest.raises(InvalidEventError, match="not-a-uuid"):
        codec.encode(EventType.BATCH_PREDICTED, record, topic="t")
    record = make(EventType.BATCH_PREDICTED)
    record["occurred_at"] = dt.datetime(2026, 11, 1, 12, 0)
    with pytest.raises(InvalidEventError, match="naive"):
        codec.encode(EventType.BATCH_PREDICTED, record, topic="t")


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
