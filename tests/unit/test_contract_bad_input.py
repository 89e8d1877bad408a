"""Contract tests: bad input of every kind is an InvalidEventError that says what and where."""

from __future__ import annotations

import datetime as dt
import random
import time

import pytest

from landfall.codec import EventCodec
from landfall.contracts import (
    EventType,
    follow_up,
    new_event,
    schema_fingerprint,
)
from landfall.errors import InvalidEventError
from tests.contract_events import PAYLOADS, PRODUCER, avro_body, make


@pytest.fixture
def codec() -> EventCodec:
    return EventCodec()


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
