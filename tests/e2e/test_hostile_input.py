"""Hostile input: thousands of malformed messages on every topic the services read.

Hypothesis generates the messages: random bytes, mutations (bit flips, cuts,
insertions, splices) of valid events in Avro and in JSON, JSON nested far too deep or
carrying huge strings and wrong types, Avro framed with unknown schema fingerprints or a
Confluent schema id no registry knows. Every generated message is checked against the
codec first, and only those it refuses are sent: each of them must come out on the
dead-letter topic exactly once, with its original bytes, headers and a reason, while
every service stays up, stays within a memory bound, and scores a good batch after it.

``make test`` sends a short run (LANDFALL_FUZZ_MESSAGES, 1500 by default); ``make
chaos`` sends 10,000. LANDFALL_FUZZ_SEED repeats a run.
"""

from __future__ import annotations

import json
import os
import random
import struct
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType, follow_up, new_event
from landfall.dead_letters import DEAD_LETTER_REASON, DEAD_LETTER_SERVICE, DEAD_LETTER_SOURCE
from landfall.demo import write_sample_partition
from landfall.errors import InvalidEventError
from landfall.events import EventWatcher, publish_data_landed
from landfall.ingress import batch_id_for
from landfall.lake import Lake
from landfall.stack import LocalStack
from tests.e2e.conftest import wait_reported

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

MESSAGES = int(os.environ.get("LANDFALL_FUZZ_MESSAGES", "1500"))
SEED = int(os.environ.get("LANDFALL_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))
# Growth of a service's resident memory over the whole burst that still counts as flat.
RSS_BOUND_MB = 150
FUZZ_HEADER = "fuzz.id"


def _valid_events(settings: Settings) -> dict[str, tuple[EventType, dict[str, Any]]]:
    """One valid event for each topic a service reads, to mutate."""
    partition = "2026-11-30"
    landed = new_event(
        EventType.DATA_LANDED,
        dataset="demo",
        partition=partition,
        batch_id=batch_id_for("demo", partition),
        run_id=str(uuid.uuid4()),
        producer="fuzz/0",
        path="demo/raw/2026-11-30",
        format="csv",
    )
    common = {"output_path": "demo/x/2026-11-30", "manifest_path": "demo/x/m", "duration_ms": 5}
    validated = follow_up(
        EventType.BATCH_VALIDATED, landed, producer="fuzz/0", quarantine_path="demo/q",
        rows_landed=10, rows_valid=9, rows_quarantined=1, **common,
    )  # fmt: skip
    featurized = follow_up(
        EventType.BATCH_FEATURIZED, validated, producer="fuzz/0", rows=9,
        features=["f1", "f2"], **common,
    )  # fmt: skip
    predicted = follow_up(
        EventType.BATCH_PREDICTED, featurized, producer="fuzz/0", rows=9, model_name="m",
        model_version="1", model_uri="models:/m/1", **common,
    )  # fmt: skip
    failed = follow_up(
        EventType.BATCH_FAILED, landed, producer="fuzz/0", stage="validation", reason="r",
        retryable=False, failed_event_type=EventType.DATA_LANDED.value,
    )  # fmt: skip
    topics = settings.kafka.topics
    return {
        topics.landed.name: (EventType.DATA_LANDED, landed),
        topics.validated.name: (EventType.BATCH_VALIDATED, validated),
        topics.featurized.name: (EventType.BATCH_FEATURIZED, featurized),
        topics.predicted.name: (EventType.BATCH_PREDICTED, predicted),
        topics.failed.name: (EventType.BATCH_FAILED, failed),
    }


def _json_form(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in record.items()}


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (kind, position, bytes) edits: flip, cut, insert, overwrite."""
    out = bytearray(data)
    for kind, position, chunk in edits:
        at = position % (len(out) + 1)
        if kind == 0 and out:
            out[at % len(out)] ^= 1 << (position % 8)
        elif kind == 1:
            del out[at:]
        elif kind == 2:
            out[at:at] = chunk
        else:
            out[at : at + len(chunk)] = chunk
    return bytes(out)


def _nested(depth: int, arrays: bool) -> bytes:
    """JSON nested ``depth`` levels: ``[[[1]]]`` or ``{"a":{"a":1}}``."""
    if arrays:
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _messages(valid: dict[str, tuple[EventType, dict[str, Any]]]) -> st.SearchStrategy:
    """(topic, value) pairs, most of them malformed; the codec sorts them afterwards."""
    # Long: one hostile message per kind, listed.
    codec = EventCodec()
    topics = sorted(valid)
    avro = {t: codec.encode(kind, rec, topic=t) for t, (kind, rec) in valid.items()}
    landed_topic = next(t for t, (kind, _) in valid.items() if kind is EventType.DATA_LANDED)
    landed_json = json.dumps(_json_form(valid[landed_topic][1])).encode()
    topic = st.sampled_from(topics)
    edits = st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 10_000), st.binary(min_size=1, max_size=16)),
        min_size=1,
        max_size=4,
    )
    random_bytes = st.tuples(topic, st.binary(max_size=512))
    mutated_avro = st.builds(lambda t, e: (t, _mutate(avro[t], e)), topic, edits)
    mutated_json = st.builds(lambda e: (landed_topic, _mutate(landed_json, e)), edits)
    # Deep nesting, on the ingress topic (JSON) and elsewhere.
    deep = st.builds(
        lambda t, depth, arrays: (t, _nested(depth, arrays)),
        st.sampled_from([landed_topic, *topics]),
        st.integers(9, 50_000),
        st.booleans(),
    )
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
    fields = st.sampled_from([*sorted(valid[landed_topic][1]), "unknown", "pth", ""])
    wrong_types = st.builds(
        lambda changes: (
            landed_topic,
            json.dumps({**_json_form(valid[landed_topic][1]), **changes}).encode(),
        ),
        st.dictionaries(fields, json_values, min_size=1, max_size=3),
    )
    huge = st.builds(
        lambda t, size, field: (
            t,
            json.dumps({**_json_form(valid[landed_topic][1]), field: "x" * size}).encode()
            if t == landed_topic
            else codec.encode(valid[t][0], {**valid[t][1], "producer": "p" * size}, topic=t)[
                : 10 + size // 2
            ],  # an Avro event with a huge string, cut: never decodes
        ),
        topic,
        st.integers(64 * 1024, 200_000),
        st.sampled_from(["dataset", "partition", "path", "producer"]),
    )
    fingerprints = st.builds(
        lambda t, fp: (t, b"\xc3\x01" + fp + avro[t][10:]), topic, st.binary(min_size=8, max_size=8)
    )
    confluent = st.builds(
        lambda t, schema_id: (t, b"\x00" + struct.pack(">I", schema_id) + avro[t][10:]),
        topic,
        st.integers(0, 2**32 - 1),
    )
    wrong_topic = st.builds(
        lambda t, other: (t, avro[other]), topic, st.sampled_from(topics)
    ).filter(lambda pair: valid[pair[0]][0] is not EventCodec().decode(
        pair[1], topic=pair[0])[0])  # fmt: skip
    return st.one_of(
        random_bytes,
        mutated_avro,
        mutated_json,
        deep,
        wrong_types,
        huge,
        fingerprints,
        confluent,
        wrong_topic,
        st.tuples(topic, st.just(b"")),
    )


def _refused(codec: EventCodec, valid: dict[str, Any], topic: str, value: bytes) -> bool:
    """Whether the services must dead-letter this message (the codec's verdict)."""
    try:
        kind, _ = codec.decode(
            value, topic=topic, accept_json=valid[topic][0] is EventType.DATA_LANDED
        )
    except InvalidEventError:
        return True
    return kind is not valid[topic][0]


def _corpus(valid: dict[str, Any], count: int) -> list[tuple[str, bytes]]:
    """``count`` messages the codec refuses, generated by Hypothesis."""
    codec = EventCodec()
    corpus: list[tuple[str, bytes]] = []

    # Hypothesis as a generator: each example is kept; the stack then gets them all
    # at once (one stack run per example would take days).
    @seed(SEED)
    @settings(
        max_examples=count * 3,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_messages(valid))
    def collect(message: tuple[str, bytes]) -> None:
        if len(corpus) < count and _refused(codec, valid, *message):
            corpus.append(message)

    collect()
    return corpus


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _dead_letters(settings: Settings, run_tag: bytes, expected: int, timeout: float) -> list[Any]:
    """The dead letters of this run (by their fuzz header), once ``expected`` are there."""
    topic = settings.kafka.topics.dead_letter.name
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"fuzz-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    found: list[Any] = []
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, number, 0) for number in partitions])
        deadline = time.monotonic() + timeout
        quiet_until = None
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                if len(found) >= expected:
                    # Enough: a few more seconds show whether any came twice.
                    quiet_until = quiet_until or time.monotonic() + 5
                    if time.monotonic() > quiet_until:
                        break
                continue
            headers = dict(message.headers() or [])
            if headers.get("fuzz.run") == run_tag:
                found.append(message)
        return found
    finally:
        consumer.close()


@pytest.mark.timeout(1800)
def test_every_malformed_message_is_dead_lettered_once_and_the_pipeline_goes_on(
    stack: tuple[Settings, LocalStack], watcher: EventWatcher
) -> None:
    settings, local = stack
    lake = Lake(settings.lake)
    for partition in ("2026-11-28", "2026-11-29"):
        write_sample_partition(lake, partition, rows=120)
    # A good batch first: every service has loaded what it needs (Spark, the model)
    # before its memory is measured.
    warm_up = publish_data_landed(settings, "demo", "2026-11-28")
    assert wait_reported(watcher, local, warm_up["run_id"])["status"] == "SUCCEEDED"
    pids = {name: process.pid for name, process in local.processes.items()}
    before = {name: _rss_mb(pid) for name, pid in pids.items()}

    valid = _valid_events(settings)
    corpus = _corpus(valid, MESSAGES)
    assert len(corpus) == MESSAGES, f"generated only {len(corpus)} refused messages (seed {SEED})"
    run_tag = uuid.uuid4().hex.encode()
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap, "acks": "all", "linger.ms": 20}
    )
    for number, (topic, value) in enumerate(corpus):
        key = random.Random(number).choice([b"demo/2026-11-30", None, b"\xff" * 3])
        headers = [("fuzz.run", run_tag), (FUZZ_HEADER, str(number).encode())]
        producer.produce(topic, key=key, value=value, headers=headers)
        producer.poll(0)
    assert producer.flush(60) == 0
    sizes = Counter(topic for topic, _ in corpus)

    # Then a good batch, which must go through.
    after_burst = publish_data_landed(settings, "demo", "2026-11-29")
    letters = _dead_letters(settings, run_tag, len(corpus), timeout=1500)
    reported = wait_reported(watcher, local, after_burst["run_id"])
    assert reported["status"] == "SUCCEEDED", (reported, SEED)

    local.check_alive()
    assert {name: process.pid for name, process in local.processes.items()} == pids
    numbers = Counter(int(dict(m.headers())[FUZZ_HEADER]) for m in letters)
    twice = sorted(n for n, c in numbers.items() if c > 1)
    missing = sorted(set(range(len(corpus))) - set(numbers))
    assert not twice, f"dead-lettered more than once: {twice[:10]} (seed {SEED})"
    assert not missing, (
        f"{len(missing)} of {len(corpus)} never dead-lettered, e.g. "
        f"{[(corpus[n][0], corpus[n][1][:80]) for n in missing[:5]]} (seed {SEED}; sent {sizes})"
    )
    keep = settings.runner.dead_letter_max_bytes
    for letter in letters:
        headers = dict(letter.headers())
        topic, value = corpus[int(headers[FUZZ_HEADER])]
        assert letter.value() == (value[:keep] or None) or letter.value() == value[:keep]
        assert headers[DEAD_LETTER_REASON], headers
        assert headers[DEAD_LETTER_SOURCE].decode().startswith(f"{topic}/")
        assert headers[DEAD_LETTER_SERVICE]
    after = {name: _rss_mb(pid) for name, pid in pids.items()}
    grown = {name: round(after[name] - before[name]) for name in pids}
    assert all(mb < RSS_BOUND_MB for mb in grown.values()), (grown, before, SEED)


def test_one_event_delivered_three_times_is_one_run_reported_once(
    stack: tuple[Settings, LocalStack], watcher: EventWatcher
) -> None:
    """A copy while the run is in progress and one after it is done change nothing.

    Each stage announces the same completion event again (same id) from its stored
    announcement, and the reporter reports the run once, as SUCCEEDED.
    """
    settings, local = stack
    partition = "2026-11-27"
    write_sample_partition(Lake(settings.lake), partition, rows=80)
    landed = new_event(
        EventType.DATA_LANDED,
        dataset="demo",
        partition=partition,
        batch_id=batch_id_for("demo", partition),
        run_id=None,  # left to the validator: derived from the event id
        producer="upstream/0",
    )
    topic = settings.kafka.topics.landed.name
    value = EventCodec().encode(EventType.DATA_LANDED, landed, topic=topic)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "acks": "all"})

    def publish() -> None:
        producer.produce(topic, key=f"demo/{partition}".encode(), value=value)
        assert producer.flush(30) == 0

    def of_run(kind: EventType, run_id: str) -> list[dict[str, Any]]:
        return [r for _t, k, r in watcher.seen if k is kind and r["run_id"] == run_id]

    publish()
    publish()  # in progress: the first copy is being validated
    _, _, validated = watcher.wait_for(
        lambda _t, kind, rec: (
            kind is EventType.BATCH_VALIDATED and rec["causation_id"] == landed["event_id"]
        ),
        timeout=420,
        alive=local.check_alive,
    )
    run_id = validated["run_id"]
    reported = wait_reported(watcher, local, run_id)
    assert reported["status"] == "SUCCEEDED", reported
    publish()  # done: reported already
    watcher.wait_for(
        lambda *_: len(of_run(EventType.BATCH_PREDICTED, run_id)) >= 3,
        timeout=420,
        alive=local.check_alive,
    )
    with pytest.raises(TimeoutError):  # a second report would follow the third copy
        watcher.wait_for(lambda *_: False, timeout=8, alive=local.check_alive)
    for kind in (EventType.BATCH_VALIDATED, EventType.BATCH_FEATURIZED, EventType.BATCH_PREDICTED):
        copies = of_run(kind, run_id)
        assert len(copies) == 3 and len({c["event_id"] for c in copies}) == 1, (kind, copies)
    assert [r["status"] for r in of_run(EventType.BATCH_REPORTED, run_id)] == ["SUCCEEDED"]
    assert of_run(EventType.BATCH_FAILED, run_id) == []
