"""``landfall dlq list|show|redrive`` against a real broker, on dead letters a runner made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition

from landfall.config import Settings
from landfall.kafka_clients import admin_client, kafka_client_config
from landfall.runner import Runner
from tests.conftest import isolated_settings
from tests.integration.test_operations import _Counter

pytestmark = pytest.mark.broker

SECRET_URL = "postgresql://reporter:hunter2-secret@db.internal/results"


def _env(settings: Settings, home: Path, **extra: str) -> dict[str, str]:
    """The environment a `landfall` process needs to see exactly these settings."""
    topics = settings.kafka.topics
    env = {
        **os.environ,
        "LANDFALL_HOME": str(home),
        "LANDFALL_KAFKA_BOOTSTRAP": settings.kafka.bootstrap or "",
        "LANDFALL_KAFKA_GROUP_PREFIX": settings.kafka.group_prefix,
        **extra,
    }
    for key in ("landed", "validated", "featurized", "predicted", "reported", "failed",
                "dead_letter"):  # fmt: skip
        env[f"LANDFALL_KAFKA__TOPICS__{key.upper()}__NAME"] = getattr(topics, key).name
    return env


def _dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "landfall", "dlq", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def _produce(
    settings: Settings, topic: str, *records: tuple[bytes, list[tuple[str, bytes]]]
) -> None:
    producer = Producer({**kafka_client_config(settings), "acks": "all"})
    for value, headers in records:
        producer.produce(topic, key=b"demo/2026-11-05", value=value, headers=headers)
    assert producer.flush(30) == 0


def _read_from(settings: Settings, topic: str, start: int) -> list[Any]:
    consumer = Consumer({**kafka_client_config(settings), "group.id": "test-reader"})
    consumer.assign([TopicPartition(topic, 0, start)])
    found, deadline = [], time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                if found:
                    break
                continue
            if not msg.error():
                found.append(msg)
    finally:
        consumer.close()
    return found


@pytest.fixture
def strict(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """A runner that takes 1 KiB messages (so a big event is dead-lettered) and keeps
    4 KiB of a dead letter (so a bigger one is cut). One partition: places are known."""
    return isolated_settings(
        kafka_bootstrap, tmp_path, "dlq",
        LANDFALL_KAFKA__TOPICS__LANDED__PARTITIONS="1",
        LANDFALL_KAFKA__TOPICS__DEAD_LETTER__PARTITIONS="1",
        LANDFALL_RUNNER__MAX_MESSAGE_BYTES="1024",
        LANDFALL_RUNNER__DEAD_LETTER_MAX_BYTES="4096",
    )  # fmt: skip


def test_list_show_and_redrive_after_a_fix(strict: Settings, tmp_path: Path) -> None:
    # Long: one scenario against one running stack, told in order.
    landed = strict.kafka.topics.landed.name
    # A data-landed event in plain JSON, padded past the 1 KiB limit: dead-lettered
    # because of a setting, and fine once the setting is fixed.
    big_event = b'{"dataset": "demo",' + b" " * 1400 + b'"partition": "2026-11-05"}'
    garbage = f"not an event; connect with {SECRET_URL}".encode()
    huge = b"\x00\xff" * 3000  # 6000 bytes: cut to 4096 on the dead-letter topic
    _produce(
        strict, landed,
        (big_event, [("origin", b"upstream-7"), ("traceparent", b"00-abc-01")]),
        (garbage, [("db", SECRET_URL.encode())]),
        (huge, []),
    )  # fmt: skip
    strict_counter = _Counter(strict)
    runner = Runner(strict_counter, strict)
    try:
        runner.run(max_messages=3, timeout=60)
    finally:
        runner.close()
    assert strict_counter.partitions == []  # all three dead-lettered
    env = _env(strict, tmp_path)

    listed = _dlq(env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    messages = document["messages"]
    assert [m["ref"] for m in messages] == ["0@0", "0@1", "0@2"]
    assert [m["source"] for m in messages] == [f"{landed}/0@{i}" for i in range(3)]
    assert {m["service"] for m in messages} == {"counter"}
    assert "runner.max_message_bytes" in messages[0]["reason"]
    assert [m["original_bytes"] for m in messages] == [None, None, 6000]
    assert document["total"] == 3 and document["by_source_topic"] == {landed: 3}
    assert sum(document["by_reason"].values()) == 3
    assert "hunter2-secret" not in listed.stdout
    table = _dlq(env, "list")
    assert table.returncode == 0, table.stderr
    assert "3 dead letter(s)" in table.stdout and "by reason:" in table.stdout
    assert "0@2" in table.stdout and "* value cut to fit" in table.stdout

    # show: headers (secret masked), the value decoded where it is an event.
    shown = json.loads(_dlq(env, "show", "0@0", "--json").stdout)
    assert shown["value"]["event_type"] == "DataLanded"
    assert shown["value"]["event"]["partition"] == "2026-11-05"
    assert ["origin", "upstream-7"] in shown["headers"] and shown["redrivable"]
    secret = _dlq(env, "show", "0@1")
    assert secret.returncode == 0, secret.stderr
    assert "hunter2-secret" not in secret.stdout
    assert "not an event" in secret.stdout and "db: postgresql://reporter:" in secret.stdout
    cut = json.loads(_dlq(env, "show", "0@2", "--json").stdout)
    assert cut["value"]["hex"].startswith("00 ff 00 ff") and cut["value"]["bytes"] == 4096
    assert not cut["redrivable"] and "cut to 4096 of 6000" in cut["not_redrivable_because"]
    missing = _dlq(env, "show", "0@9")
    assert missing.returncode == 2 and "has no offset 9: it holds 0..2" in missing.stderr
    bad_ref = _dlq(env, "show", "zero")
    assert bad_ref.returncode == 2 and "write partition@offset" in bad_ref.stderr

    # A cut message named on its own is refused before anything is produced.
    refused = _dlq(env, "redrive", "0@0", "0@2")
    assert refused.returncode == 2
    assert "nothing redriven" in refused.stderr and "0@2 cannot be redriven" in refused.stderr
    assert _read_from(strict, landed, 3) == []
    nothing_chosen = _dlq(env, "redrive")
    assert nothing_chosen.returncode == 2 and "--reason-contains" in nothing_chosen.stderr

    # The fix: the service takes bigger messages. Redrive what was too big.
    dry = _dlq(env, "redrive", "--reason-contains", "MAX_MESSAGE_BYTES", "--dry-run")
    assert dry.returncode == 2  # the cut one matches too, and is refused
    assert dry.stdout.splitlines()[-1] == "summary: would redrive 1, refused 1"
    assert _read_from(strict, landed, 3) == []
    redriven = _dlq(env, "redrive", "--reason-contains", "max_message_bytes", "--json")
    assert redriven.returncode == 2, redriven.stderr
    outcome = json.loads(redriven.stdout)
    assert outcome["redriven"] == [{"ref": "0@0", "source": f"{landed}/0@0", "to": f"{landed}/0@3"}]
    assert [r["ref"] for r in outcome["refused"]] == ["0@2"]

    (again,) = _read_from(strict, landed, 3)
    assert again.value() == big_event and again.key() == b"demo/2026-11-05"
    headers = dict(again.headers())
    assert headers["origin"] == b"upstream-7" and headers["traceparent"] == b"00-abc-01"
    assert not any(k.startswith("landfall.dead_letter.") for k in headers)
    assert headers["landfall.redrive.ref"] == f"{strict.kafka.topics.dead_letter.name}/0@0".encode()
    assert headers["landfall.redrive.at"].decode() >= "2026-"

    fixed = strict.model_copy(
        update={"runner": strict.runner.model_copy(update={"max_message_bytes": 1 << 20})}
    )
    fixed_counter = _Counter(fixed)
    runner = Runner(fixed_counter, fixed)
    try:
        runner.run(max_messages=1, timeout=60)
    finally:
        runner.close()
    assert fixed_counter.partitions == ["2026-11-05"]


def test_reading_the_dead_letter_topic_commits_no_offset(strict: Settings, tmp_path: Path) -> None:
    _produce(strict, strict.kafka.topics.landed.name, (b"\x07junk", []))
    runner = Runner(_Counter(strict), strict)
    try:
        runner.run(max_messages=1, timeout=60)
    finally:
        runner.close()
    env = _env(strict, tmp_path)
    admin = admin_client(strict)
    before = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    assert _dlq(env, "list").returncode == 0
    assert _dlq(env, "show", "0@0").returncode == 0
    after = admin.list_consumer_groups().result(30).valid
    # No group of the reader appeared, and none has committed offsets on the topic.
    assert {g.group_id for g in after} - before == set()
    dlq_topic = strict.kafka.topics.dead_letter.name
    for group in sorted(before):
        request = [ConsumerGroupTopicPartitions(group)]
        offsets = admin.list_consumer_group_offsets(request)[group].result(30)
        assert all(tp.topic != dlq_topic for tp in offsets.topic_partitions or [])


def test_an_empty_or_missing_dead_letter_topic_lists_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, tmp_path, "dlq-empty")
    env = _env(settings, tmp_path)
    listed = _dlq(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == f"no dead letters on {settings.kafka.topics.dead_letter.name}"
    missing = _env(settings, tmp_path, LANDFALL_KAFKA__TOPICS__DEAD_LETTER__NAME="dlq-never-made")
    assert json.loads(_dlq(missing, "list", "--json").stdout)["total"] == 0
    everything = _dlq(env, "redrive", "--all")
    assert everything.returncode == 0
    assert everything.stdout.strip() == "summary: redrove 0, refused 0 (no dead letter matched)"
