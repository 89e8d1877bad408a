"""What operators do to a running landfall: backfill a range of partitions, replay a topic.

**Backfill** publishes one data-landed event per partition of a date range, as the
upstream system would have. Partitions that have not landed in the raw zone are
skipped and named. With ``missing_only``, partitions that already have committed
predictions are skipped too. Each event starts a new run, and may pin a model version.

**Replay** moves a service's consumer group back (to the beginning, an offset, or a
time), so that the service processes those events again when it next runs. Offsets
cannot be moved under a running group, so the service's instances must be stopped
first; the move is refused, with the group's state, while they run. Every event the
service had handled before is redone as a new run of its batch (a new run id starting
at the replay, the same batch id: :func:`landfall.deliveries.replayed_run_id`), so a
replay adds runs, never mixes outputs, and its outputs supersede the earlier run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

import landfall
from landfall.config import Settings
from landfall.contracts import EventType
from landfall.deliveries import new_replay_pass
from landfall.errors import LandfallError
from landfall.lake import Lake
from landfall.offset_notes import OffsetNote

__all__ = [
    "BackfillPlan",
    "BackfillStopped",
    "OffsetMove",
    "backfill",
    "partitions_between",
    "plan_backfill",
    "replay",
]

_T = TypeVar("_T")

# More partitions than this in one backfill is most likely a typo in a date.
MAX_BACKFILL_PARTITIONS = 2000


def partitions_between(first: str, last: str, *, hourly: bool = False) -> list[str]:
    """Every daily (YYYY-MM-DD) or hourly (YYYY-MM-DDTHH) partition from first to last."""
    try:
        start, end = _partition_time(first, hourly), _partition_time(last, hourly)
    except ValueError as exc:
        shape = "YYYY-MM-DDTHH" if hourly else "YYYY-MM-DD"
        raise LandfallError(f"a backfill range takes partitions like {shape}: {exc}") from None
    if end < start:
        raise LandfallError(f"the range ends ({last}) before it starts ({first})")
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    count = int((end - start) / step) + 1
    if count > MAX_BACKFILL_PARTITIONS:
        raise LandfallError(
            f"{first}..{last} is {count} partitions; at most {MAX_BACKFILL_PARTITIONS} at once"
        )
    shape = "%Y-%m-%dT%H" if hourly else "%Y-%m-%d"
    return [(start + i * step).strftime(shape) for i in range(count)]


def _partition_time(partition: str, hourly: bool) -> datetime:
    if hourly:
        return datetime.strptime(partition, "%Y-%m-%dT%H")
    day = date.fromisoformat(partition) if len(partition) == 10 else None
    if day is None:
        raise ValueError(f"{partition!r} is not a date")
    return datetime(day.year, day.month, day.day)


@dataclass
class BackfillPlan:
    """Which partitions of a range a backfill publishes, and which it skips and why."""

    dataset: str
    publish: list[str] = field(default_factory=list)
    not_landed: list[str] = field(default_factory=list)
    already_scored: list[str] = field(default_factory=list)


def plan_backfill(
    settings: Settings,
    dataset: str,
    first: str,
    last: str,
    *,
    hourly: bool = False,
    missing_only: bool = False,
) -> BackfillPlan:
    """Look at the lake: what a backfill of ``first``..``last`` would publish."""
    settings.dataset(dataset)  # an unknown dataset is a clear error, naming the known ones
    lake = Lake.from_settings(settings)
    plan = BackfillPlan(dataset)
    for partition in partitions_between(first, last, hourly=hourly):
        raw = lake.partition_dir(dataset, "raw", partition)
        if not raw.is_dir() or not any(raw.iterdir()):
            plan.not_landed.append(partition)
        elif missing_only and lake.committed(dataset, "predictions", partition) is not None:
            plan.already_scored.append(partition)
        else:
            plan.publish.append(partition)
    return plan


class BackfillStopped(LandfallError):
    """A backfill stopped at a partition whose event the broker did not take.

    It names what was published before it and what was not attempted, so nothing done
    is hidden by the failure, and the rest can be backfilled after the fix.
    """

    def __init__(
        self, partition: str, reason: str, published: list[dict[str, Any]], remaining: list[str]
    ) -> None:
        self.partition = partition
        self.reason = reason
        self.published = published
        self.remaining = remaining
        rest = f"{remaining[0]}..{remaining[-1]}" if remaining else "none"
        super().__init__(
            f"backfill stopped at {partition}: {reason}; published before it: "
            f"{len(published)}; not attempted: {len(remaining)} ({rest})"
        )


def backfill(
    settings: Settings,
    plan: BackfillPlan,
    *,
    model_version: str | None = None,
    on_published: Callable[[dict[str, Any]], None] | None = None,
    publish: Callable[[EventType, str, dict[str, Any]], dict[str, Any]] | None = None,
    producer_name: str = f"landfall-cli/{landfall.__version__}",
) -> list[dict[str, Any]]:
    """Publish the plan's data-landed events, in partition order; return them.

    ``publish`` sends one event and returns it once acknowledged: a long-lived
    producer's (the job API's); by default a producer per event, as the CLI publishes.
    ``on_published`` is called with each event as the broker acknowledges it. The first
    partition that cannot be published stops the backfill (the broker is most likely
    gone, and every later partition would wait for it in turn): BackfillStopped says
    which, and what was published before it.
    """
    from landfall.events import data_landed_event, publish_event

    send = publish or (lambda *event: publish_event(settings, *event))
    topic = settings.kafka.topics.landed.name
    published: list[dict[str, Any]] = []
    for index, partition in enumerate(plan.publish):
        try:
            record = send(
                EventType.DATA_LANDED,
                topic,
                data_landed_event(
                    plan.dataset,
                    partition,
                    model_version=model_version,
                    producer_name=producer_name,
                ),
            )
        except (LandfallError, KafkaException) as exc:
            raise BackfillStopped(
                partition, str(exc), published, plan.publish[index + 1 :]
            ) from exc
        published.append(record)
        if on_published is not None:
            on_published(record)
    return published


@dataclass(frozen=True)
class OffsetMove:
    """One partition of a replayed group: where it was, and where it goes."""

    topic: str
    partition: int
    before: int | None  # None: the group had committed nothing there
    after: int
    end: int  # the log's end when replayed: offsets from ``after`` up to it are redone


_IDLE = {ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD, ConsumerGroupState.UNKNOWN}
# A broker whose group coordinator is not ready yet (on a fresh broker, the offsets
# topic is created by the first group request) answers with these for a few seconds.
_COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def _until_coordinated(request: Callable[[], _T], timeout: float = 30.0) -> _T:
    """Ask ``request`` again while the group coordinator is not ready, up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return request()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            not_ready = isinstance(error, KafkaError) and error.code() in _COORDINATOR_NOT_READY
            if not not_ready or time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


def replay(
    settings: Settings,
    service: str,
    *,
    offset: int | None = None,
    since: datetime | None = None,
    topics: list[str] | None = None,
    dry_run: bool = False,
) -> list[OffsetMove]:
    """Move the service's group back to ``offset`` (0: the beginning) or to ``since``.

    Only the topics the group has consumed (or those of ``topics``) move. Returns the
    moves, made unless ``dry_run``.
    """
    if (offset is None) == (since is None):
        raise LandfallError("replay needs exactly one of an offset or a time to go back to")
    if offset is not None and offset < 0:
        raise LandfallError(f"an offset is 0 or more, got {offset}")
    from landfall.kafka_clients import admin_client, kafka_connection_config
    from landfall.topics import wait_for_broker

    bootstrap = settings.kafka.bootstrap
    if not bootstrap:
        raise LandfallError("replay needs a broker: set kafka.bootstrap")
    # A broker that is down is said in one line, not in a minute of client retries
    # ending in a TimeoutError.
    wait_for_broker(bootstrap, timeout=15, admin_config=kafka_connection_config(settings))
    group = f"{settings.kafka.group_prefix}-{service}"
    admin = admin_client(settings)
    current = _idle_group_offsets(admin, group, service)
    known = {(tp.topic, tp.partition): tp.offset for tp in current}
    # How far the group had got: an earlier replay not yet worked through counts to
    # where that one found it, so its events are still taken as handled before.
    done = {
        (tp.topic, tp.partition): max(tp.offset, OffsetNote.parse(tp.metadata).replay_done or 0)
        for tp in current
    }
    wanted = topics or sorted({topic for topic, _ in known})
    if not wanted:
        raise LandfallError(
            f"the consumer group {group} has committed no offsets: a new group already "
            "starts from the beginning; name the topics to replay with --topic"
        )
    moves = _targets(settings, wanted, known, offset=offset, since=since)
    if not dry_run and moves:
        _move_group(admin, group, moves, done)
    return moves


def _idle_group_offsets(admin: Any, group: str, service: str) -> list[TopicPartition]:
    """The group's committed offsets; refused unless no instance of the service runs."""
    try:
        description = _until_coordinated(
            lambda: admin.describe_consumer_groups([group])[group].result(30)
        )
        if description.state not in _IDLE:
            members = len(description.members or [])
            raise LandfallError(
                f"the consumer group {group} is {description.state.name.lower()} with "
                f"{members} member{'' if members == 1 else 's'}: stop every instance of "
                f"{service} first (landfall stop {service}); offsets cannot move under "
                "a running group"
            )
        whole_group = [ConsumerGroupTopicPartitions(group)]
        offsets = _until_coordinated(
            lambda: admin.list_consumer_group_offsets(whole_group)[group].result(30)
        )
    except (KafkaException, TimeoutError) as exc:
        raise LandfallError(f"cannot read the consumer group {group}: {exc}") from exc
    return list(offsets.topic_partitions or [])


def _move_group(
    admin: Any, group: str, moves: list[OffsetMove], done: dict[tuple[str, int], int]
) -> None:
    """Commit the moved offsets, each with the note of this replay pass."""
    # Each moved partition carries a note naming this replay pass, where it ends and how
    # far the group had got: the runner redoes those messages under new ids (new runs
    # for those it had handled) instead of taking them for redeliveries of work already
    # done (landfall/offset_notes.py).
    pass_id = new_replay_pass()
    request = ConsumerGroupTopicPartitions(
        group,
        [
            TopicPartition(
                m.topic,
                m.partition,
                m.after,
                metadata=OffsetNote(
                    replay=pass_id,
                    replay_end=m.end,
                    replay_done=max(done.get((m.topic, m.partition), 0), 0),
                ).format()
                if m.after < m.end
                else "",
            )
            for m in moves
        ],
    )
    try:
        result = admin.alter_consumer_group_offsets([request])[group].result(30)
    except (KafkaException, TimeoutError) as exc:
        # Most likely an instance joined the group since it was found idle.
        raise LandfallError(f"the broker refused to move {group}: {exc}") from exc
    errors = [
        f"{tp.topic}/{tp.partition}: {tp.error}" for tp in result.topic_partitions if tp.error
    ]
    if errors:
        raise LandfallError(f"the broker refused to move {group}: {'; '.join(errors)}")


def _targets(
    settings: Settings,
    topics: list[str],
    known: dict[tuple[str, int], int],
    *,
    offset: int | None,
    since: datetime | None,
) -> list[OffsetMove]:
    """Where each partition of the topics goes: the offset or time, within the log."""
    from landfall.kafka_clients import kafka_client_config

    consumer = Consumer({**kafka_client_config(settings), "group.id": "landfall-replay-probe"})
    try:
        return _partition_targets(consumer, topics, known, offset=offset, since=since)
    except KafkaException as exc:
        raise LandfallError(f"cannot read the offsets of {', '.join(topics)}: {exc}") from exc
    finally:
        consumer.close()


def _partition_targets(
    consumer: Consumer,
    topics: list[str],
    known: dict[tuple[str, int], int],
    *,
    offset: int | None,
    since: datetime | None,
) -> list[OffsetMove]:
    """Each partition's target on an unsubscribed consumer: the offset, or the time's first."""
    metadata = consumer.list_topics(timeout=30)
    moves = []
    for topic in topics:
        if topic not in metadata.topics:
            raise LandfallError(f"there is no topic {topic!r} on the broker")
        for partition in sorted(metadata.topics[topic].partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=30, cached=False
            )
            if since is not None:
                stamp = int(since.astimezone(UTC).timestamp() * 1000)
                (found,) = consumer.offsets_for_times(
                    [TopicPartition(topic, partition, stamp)], timeout=30
                )
                target = found.offset if found.offset >= 0 else high  # -1: nothing since
            else:
                target = offset if offset is not None else 0
            before = known.get((topic, partition))
            moves.append(
                OffsetMove(
                    topic,
                    partition,
                    before if before is not None and before >= 0 else None,
                    min(max(target, low), high),
                    high,
                )
            )
    return moves
