"""Events in Confluent framing through a schema registry, and `landfall schemas register`.

The registry is confluent-kafka's in-memory one (``mock://`` URLs): the real Confluent
Schema Registry is not among the services the tests run. Each test gets a fresh one.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
import time
import uuid
from pathlib import Path

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from typer.testing import CliRunner

from landfall.cli import app
from landfall.codec import EventCodec
from landfall.contracts import EventType, raw_schema
from landfall.errors import ConfigError, InvalidEventError, RetryableError
from landfall.schema_registry import (
    check_registered,
    event_topics,
    register_event_schemas,
    registry_client,
    subject_of,
)
from tests.conftest import settings_for
from tests.contract_events import avro_body, make


def _topics(prefix: str) -> dict[EventType, str]:
    """One topic per event type, as a deployment has."""
    return {event_type: f"{prefix}.{event_type.short_name}" for event_type in EventType}


A, B = _topics("a"), _topics("b")


def _fresh_url() -> str:
    # A registry of its own per test, so schema ids do not depend on test order.
    return f"mock://test-{uuid.uuid4().hex}"


@pytest.fixture
def registry_url() -> str:
    """A registry holding every event schema under the topics of A and B."""
    url = _fresh_url()
    register_event_schemas(registry_client(url), A)
    register_event_schemas(registry_client(url), B)
    return url


def _newer(event_type: EventType, **field: object) -> Schema:
    """``event_type``'s schema with one more field, as a later release might have."""
    raw = json.loads(json.dumps(raw_schema(event_type)))
    raw["fields"].append(field)
    return Schema(json.dumps(raw), "AVRO")


# --------------------------------------------------------------------------- the codec


@pytest.mark.parametrize("event_type", list(EventType))
def test_registry_round_trip(registry_url: str, event_type: EventType) -> None:
    codec = EventCodec(registry_url)
    record = make(event_type)
    data = codec.encode(event_type, record, topic=A[event_type])
    assert data[0] == 0
    (schema_id,) = struct.unpack(">I", data[1:5])
    client = registry_client(registry_url)
    assert schema_id == client.lookup_schema(subject_of(A[event_type]), _ours(event_type)).schema_id
    assert data[5:] == avro_body(event_type, record)
    assert codec.decode(data, topic=A[event_type]) == (event_type, record)


def _ours(event_type: EventType) -> Schema:
    return Schema(json.dumps(raw_schema(event_type)), "AVRO")


def test_registry_codecs_on_one_url_read_each_other(registry_url: str) -> None:
    writer, reader = EventCodec(registry_url), EventCodec(registry_url)
    for event_type in EventType:
        record = make(event_type)
        encoded = writer.encode(event_type, record, topic=A[event_type])
        assert reader.decode(encoded, topic=A[event_type]) == (event_type, record)
        encoded = reader.encode(event_type, record, topic=B[event_type])
        assert writer.decode(encoded, topic=B[event_type]) == (event_type, record)


def test_registry_reuses_schema_id_per_subject(registry_url: str) -> None:
    codec, topic = EventCodec(registry_url), A[EventType.BATCH_FAILED]
    first = codec.encode(EventType.BATCH_FAILED, make(EventType.BATCH_FAILED), topic=topic)
    second = codec.encode(EventType.BATCH_FAILED, make(EventType.BATCH_FAILED), topic=topic)
    assert first[:5] == second[:5]


def test_registry_codec_still_reads_single_object(registry_url: str) -> None:
    record = make(EventType.BATCH_PREDICTED)
    data = EventCodec().encode(EventType.BATCH_PREDICTED, record, topic="t")
    assert EventCodec(registry_url).decode(data, topic="t") == (EventType.BATCH_PREDICTED, record)


def test_confluent_bytes_without_registry_are_invalid(registry_url: str) -> None:
    topic = A[EventType.BATCH_FAILED]
    data = EventCodec(registry_url).encode(
        EventType.BATCH_FAILED, make(EventType.BATCH_FAILED), topic=topic
    )
    with pytest.raises(InvalidEventError, match="no schema registry"):
        EventCodec().decode(data, topic=topic)


def _framed(registry_url: str, event_type: EventType) -> bytes:
    return EventCodec(registry_url).encode(event_type, make(event_type), topic=A[event_type])


@pytest.mark.parametrize(
    ("mangle", "detail"),
    [
        (lambda data: struct.pack(">bI", 0, 424242) + data[5:], "schema id 424242 is not in"),
        (lambda data: data[:5], "no Avro body"),
        (lambda data: data[:-3], "corrupt or truncated"),
        (lambda data: data + b"\x00", "1 unexpected trailing bytes"),
    ],
)
def test_malformed_confluent_bytes_are_invalid_with_detail(
    registry_url: str, mangle: object, detail: str
) -> None:
    data = mangle(_framed(registry_url, EventType.BATCH_VALIDATED))  # type: ignore[operator]
    with pytest.raises(InvalidEventError, match=detail) as caught:
        EventCodec(registry_url).decode(data, topic="validated")
    assert "'validated'" in str(caught.value)


def test_a_schema_id_of_something_else_is_invalid(registry_url: str) -> None:
    client = registry_client(registry_url)
    other = Schema(json.dumps({"type": "record", "name": "x.Other", "fields": []}), "AVRO")
    other_id = client.register_schema("other-value", other)
    with pytest.raises(InvalidEventError, match="'x.Other', not a landfall event"):
        EventCodec(registry_url).decode(struct.pack(">bI", 0, other_id) + b"\x00", topic="t")


def test_a_bad_partition_is_invalid_in_confluent_framing_too(registry_url: str) -> None:
    record = make(EventType.BATCH_FAILED)
    record["partition"] = "2026-13-01"
    client = registry_client(registry_url)
    found = client.lookup_schema(
        subject_of(A[EventType.BATCH_FAILED]), _ours(EventType.BATCH_FAILED)
    )
    data = struct.pack(">bI", 0, found.schema_id) + avro_body(EventType.BATCH_FAILED, record)
    with pytest.raises(InvalidEventError, match="2026-13-01"):
        EventCodec(registry_url).decode(data, topic="failed")


def test_a_codec_never_registers_a_schema() -> None:
    url = _fresh_url()
    with pytest.raises(ConfigError, match="landfall schemas register") as caught:
        EventCodec(url).encode(EventType.BATCH_FAILED, make(EventType.BATCH_FAILED), topic="f")
    assert "BatchFailed is not registered under 'f-value'" in str(caught.value)
    assert registry_client(url).get_subjects() == []


def test_a_service_writes_its_own_schema_id_not_the_latest(registry_url: str) -> None:
    event_type, topic = EventType.BATCH_REPORTED, A[EventType.BATCH_REPORTED]
    client = registry_client(registry_url)
    ours = client.lookup_schema(subject_of(topic), _ours(event_type)).schema_id
    # A later release registered a version with one more optional field.
    later = _newer(event_type, name="colour", type=["null", "string"], default=None)
    newest = client.register_schema(subject_of(topic), later)
    assert newest != ours
    data = EventCodec(registry_url).encode(event_type, make(event_type), topic=topic)
    assert struct.unpack(">I", data[1:5]) == (ours,)
    # ... and what the later release writes, this one reads, into its own schema.
    newer_record = {**make(event_type), "colour": "red"}
    body = _body_as(later, newer_record)
    decoded_type, decoded = EventCodec(registry_url).decode(
        struct.pack(">bI", 0, newest) + body, topic=topic
    )
    assert decoded_type is event_type and "colour" not in decoded


def _body_as(schema: Schema, record: dict[str, object]) -> bytes:
    """``record`` written as Avro with ``schema`` (not landfall's own)."""
    assert schema.schema_str is not None
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(schema.schema_str)), record)
    return buf.getvalue()


def test_an_unreachable_registry_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nobody listens there
    codec = EventCodec(f"http://127.0.0.1:{port}", {"max.retries": 0})
    with pytest.raises(RetryableError, match="schema registry unreachable"):
        codec.encode(EventType.BATCH_FAILED, make(EventType.BATCH_FAILED), topic="f")
    with pytest.raises(RetryableError, match="schema registry unreachable fetching schema id 7"):
        codec.decode(struct.pack(">bI", 0, 7) + b"\x00", topic="f")


def test_a_starting_service_waits_for_an_unreachable_registry_then_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nobody listens there
    settings = settings_for(
        tmp_path, LANDFALL_KAFKA__SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{port}"
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="landfall.schema_registry"):
        with pytest.raises(RetryableError, match="schema registry unreachable"):
            check_registered(settings, wait_s=10.0)
    # It asked again (each ask is the client's own few retries, seconds long), said it
    # was waiting, and gave up once past its deadline.
    waits = [r for r in caplog.records if "waiting for the schema registry" in r.getMessage()]
    assert waits, caplog.text
    assert 10.0 <= time.monotonic() - started < 45


# --------------------------------------------------------------------------- registering


def test_register_says_what_it_did_and_a_second_time_changes_nothing() -> None:
    client = registry_client(_fresh_url())
    first = register_event_schemas(client, A)
    assert [r.event_type for r in first] == list(EventType)
    assert all(r.registered and r.version == 1 for r in first)
    assert {r.subject for r in first} == {f"{topic}-value" for topic in A.values()}
    again = register_event_schemas(client, A)
    assert not any(r.registered for r in again)
    assert [r.schema_id for r in again] == [r.schema_id for r in first]
    assert again[0].as_dict()["action"] == "unchanged"


def test_register_refuses_an_incompatible_latest_and_registers_nothing() -> None:
    client = registry_client(_fresh_url())
    subject = subject_of(A[EventType.BATCH_FAILED])
    # The latest version requires a field landfall's schema does not write.
    client.register_schema(subject, _newer(EventType.BATCH_FAILED, name="owner", type="string"))
    with pytest.raises(ConfigError, match="not registering") as caught:
        register_event_schemas(client, A)
    assert subject in str(caught.value) and "owner" in str(caught.value)
    assert client.get_subjects() == [subject]


def test_a_service_start_names_the_missing_schemas_and_what_to_run(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, LANDFALL_KAFKA__SCHEMA_REGISTRY_URL=_fresh_url())
    with pytest.raises(ConfigError, match="lacks 6 of landfall's event schemas") as caught:
        check_registered(settings)
    assert "run `landfall schemas register`" in str(caught.value)
    assert f"DataLanded under '{settings.kafka.topics.landed.name}-value'" in str(caught.value)
    url = settings.schema_registry_url
    assert url is not None
    register_event_schemas(registry_client(url), event_topics(settings))
    check_registered(settings)
    check_registered(settings_for(tmp_path))  # no registry: nothing to check


def test_the_register_command(tmp_path: Path) -> None:
    url = _fresh_url()
    env = {"LANDFALL_HOME": str(tmp_path), "LANDFALL_KAFKA__SCHEMA_REGISTRY_URL": url}
    first = CliRunner().invoke(app, ["schemas", "register", "--json"], env=env)
    assert first.exit_code == 0, first.output
    lines = [json.loads(line) for line in first.output.splitlines()]
    assert [line["action"] for line in lines] == ["registered"] * len(EventType)
    assert lines[0]["subject"] == "landfall.batch-ready-value"
    again = CliRunner().invoke(app, ["schemas", "register"], env=env)
    assert again.exit_code == 0, again.output
    assert "already registered DataLanded" in again.output
    assert again.output.splitlines()[-1] == "summary: registered 0, already registered 6"
    none = CliRunner().invoke(app, ["schemas", "register"], env={"LANDFALL_HOME": str(tmp_path)})
    assert none.exit_code == 2
    assert "no schema registry is configured" in none.output
