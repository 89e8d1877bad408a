"""Derived event ids and offset notes: what makes a redelivery harmless and a replay not."""

from __future__ import annotations

import time
import uuid

import pytest

from landfall.contracts import EventType, follow_up, new_event
from landfall.deliveries import current_replay, new_replay_pass, replayed_run_id, replaying
from landfall.ingress import complete_landed_event
from landfall.offset_notes import OffsetNote
from landfall.run_ids import new_run_id, run_started_ms


def _landed(**fields: object) -> dict:
    return new_event(
        EventType.DATA_LANDED,
        dataset="demo",
        partition="2026-11-01",
        batch_id=str(uuid.uuid4()),
        run_id=str(uuid.uuid4()),
        producer="test/0",
        **fields,
    )


def _validated(upstream: dict, **fields: object) -> dict:
    return follow_up(
        EventType.BATCH_VALIDATED, upstream, producer="validator/0", output_path="x",
        quarantine_path="q", manifest_path="m", rows_landed=1, rows_valid=1,
        rows_quarantined=0, duration_ms=1, **fields,
    )  # fmt: skip


def test_a_follow_up_has_the_same_id_at_every_delivery_of_its_cause() -> None:
    landed = _landed()
    first, second = _validated(landed), _validated(landed)
    assert first["event_id"] == second["event_id"]
    uuid.UUID(first["event_id"])
    # Another cause, another run or another event type: another id.
    assert _validated(_landed())["event_id"] != first["event_id"]
    other_run = dict(landed, run_id=str(uuid.uuid4()))
    assert _validated(other_run)["event_id"] != first["event_id"]
    failed = follow_up(
        EventType.BATCH_FAILED, landed, producer="validator/0", stage="validation",
        reason="r", retryable=False, failed_event_type=EventType.DATA_LANDED.value,
    )  # fmt: skip
    assert failed["event_id"] != first["event_id"]
    # An explicit id still wins (replay tooling, tests).
    explicit = str(uuid.uuid4())
    assert _validated(landed, event_id=explicit)["event_id"] == explicit


def test_a_replay_pass_gives_new_ids_the_same_at_each_of_its_deliveries() -> None:
    landed = _landed()
    plain = _validated(landed)["event_id"]
    assert current_replay() is None
    with replaying("a" * 32):
        assert current_replay() == "a" * 32
        replayed = _validated(landed)["event_id"]
        assert replayed == _validated(landed)["event_id"]
    with replaying("b" * 32):
        assert _validated(landed)["event_id"] not in (plain, replayed)
    assert current_replay() is None
    assert _validated(landed)["event_id"] == plain


def test_a_landed_event_with_its_own_id_is_one_run_wherever_it_sits_in_the_log() -> None:
    bare = {"dataset": "demo", "partition": "2026-11-01", "event_id": str(uuid.uuid4())}
    one = complete_landed_event(dict(bare), origin="landed/0@5")
    two = complete_landed_event(dict(bare), origin="landed/3@17")
    assert one["run_id"] == two["run_id"]
    assert one["event_id"] == two["event_id"] == bare["event_id"]
    # Without an id, the place in the log names the run: a redelivery, not a copy.
    nameless = {"dataset": "demo", "partition": "2026-11-01"}
    assert (
        complete_landed_event(dict(nameless), origin="landed/0@5")["run_id"]
        == complete_landed_event(dict(nameless), origin="landed/0@5")["run_id"]
        != complete_landed_event(dict(nameless), origin="landed/0@6")["run_id"]
    )


def test_offset_notes_round_trip_and_say_which_offsets_a_replay_covers() -> None:
    replay_id = uuid.uuid4().hex
    note = OffsetNote(starts=2, replay=replay_id, replay_end=120)
    assert OffsetNote.parse(note.format()) == note
    assert note.format() == f"landfall:started=2;replay={replay_id}@120"
    assert OffsetNote.parse(OffsetNote(starts=1).format()) == OffsetNote(starts=1)
    assert OffsetNote().format() == ""
    assert note.replays(119) and not note.replays(120)
    assert note.after(118) == OffsetNote(replay=replay_id, replay_end=120)
    assert note.after(119) == OffsetNote()  # the next offset is the end: replay over
    assert note.with_starts(0).format() == f"landfall:replay={replay_id}@120"


def test_a_note_says_which_replayed_offsets_the_group_had_handled_before() -> None:
    replay_id = new_replay_pass()
    note = OffsetNote(replay=replay_id, replay_end=120, replay_done=100)
    assert note.format() == f"landfall:replay={replay_id}@120;done=100"
    assert OffsetNote.parse(note.format()) == note
    assert note.redoes(99) and not note.redoes(100) and not note.redoes(120)
    assert note.after(50) == note  # carried with every commit until the replay is over
    assert note.after(119) == OffsetNote()
    # A note of an earlier release (no done=) redoes its whole replay as new runs.
    assert OffsetNote(replay=replay_id, replay_end=120).redoes(110)
    # done= without a replay says nothing.
    assert OffsetNote.parse("landfall:done=5") == OffsetNote()


def test_a_replayed_run_is_new_starts_at_the_replay_and_is_the_same_within_a_pass() -> None:
    before_ms = time.time_ns() // 1_000_000
    replay_id = new_replay_pass()
    assert len(replay_id) == 32 and OffsetNote.parse(f"landfall:replay={replay_id}@1").replay
    old_run = new_run_id(before_ms - 86_400_000)
    new_run = replayed_run_id(old_run, replay_id)
    assert new_run != old_run and uuid.UUID(new_run).version == 7
    assert run_started_ms(new_run) == run_started_ms(replay_id) >= before_ms
    assert replayed_run_id(old_run, replay_id) == new_run  # every delivery in the pass
    assert replayed_run_id(new_run_id(), replay_id) != new_run  # another run
    assert replayed_run_id(old_run, new_replay_pass()) != new_run  # another pass
    # A pass id of an earlier release (uuid4) carries no time: the run starts now.
    legacy = replayed_run_id(old_run, uuid.uuid4().hex)
    assert run_started_ms(legacy) >= before_ms


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "",
        "someone else's metadata",
        "landfall:started=x",
        "landfall:replay=nothex@12",
        "landfall:replay=" + "a" * 32 + "@-1",
        "landfall:started=" + "9" * 40,
        "landfall:" + "started=1;" * 100,
    ],
)
def test_offset_notes_that_are_not_landfall_s_or_are_damaged_say_nothing(
    metadata: str | None,
) -> None:
    parsed = OffsetNote.parse(metadata)
    assert parsed.replay is None and parsed.replay_end is None
    assert parsed.starts in (0, 1)
    if metadata is None or not metadata.startswith("landfall:started=1"):
        assert parsed == OffsetNote()
