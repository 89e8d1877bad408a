"""What each service's consumer group is doing: its state, its members and its lag.

``landfall groups`` prints this for operators, as ``kafka-consumer-groups --describe``
would: which instance owns which partitions, and how far behind each partition is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from landfall.config import Settings
from landfall.errors import RetryableError
from landfall.kafka_clients import admin_client

__all__ = ["GroupStatus", "MemberStatus", "PartitionLag", "describe_service_groups"]


@dataclass(frozen=True)
class MemberStatus:
    """One consumer in a group: who it is and which partitions it owns."""

    client_id: str
    host: str
    partitions: list[str]


@dataclass(frozen=True)
class PartitionLag:
    """One partition a group has committed on: where it is and how far behind."""

    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        """Events not yet committed by the group."""
        return max(self.end - self.committed, 0)


@dataclass(frozen=True)
class GroupStatus:
    """A service's consumer group."""

    service: str
    group: str
    state: str
    members: list[MemberStatus] = field(default_factory=list)
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def lag(self) -> int:
        """Events waiting for the group over all its partitions."""
        return sum(p.lag for p in self.partitions)


def _lags(probe: Any, committed: list[TopicPartition]) -> list[PartitionLag]:
    """Lag on every partition of the topics the group reads; where it never committed,
    it starts from the earliest event (``auto.offset.reset: earliest``)."""
    offsets = {(tp.topic, tp.partition): tp.offset for tp in committed}
    metadata = probe.list_topics(timeout=30).topics
    lags = []
    for topic in sorted({tp.topic for tp in committed}):
        if topic not in metadata:
            continue
        for partition in sorted(metadata[topic].partitions):
            low, high = probe.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=30, cached=False
            )
            offset = offsets.get((topic, partition), -1)
            lags.append(PartitionLag(topic, partition, offset if offset >= 0 else low, high))
    return lags


def describe_service_groups(settings: Settings, services: list[str]) -> list[GroupStatus]:
    """The consumer group of each named service, with members and lag per partition."""
    from confluent_kafka import Consumer

    from landfall.kafka_clients import kafka_client_config

    prefix = settings.kafka.group_prefix
    groups = {f"{prefix}-{service}": service for service in services}
    admin = admin_client(settings)
    try:
        descriptions = {
            group: future.result(30)
            for group, future in admin.describe_consumer_groups(list(groups)).items()
        }
        committed = {
            group: future.result(30).topic_partitions or []
            for group, future in admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group) for group in groups]
            ).items()
        }
    except KafkaException as exc:
        raise RetryableError(f"cannot describe the consumer groups: {exc}") from exc
    # High watermarks through a consumer that never joins a group.
    probe = Consumer({**kafka_client_config(settings), "group.id": f"{prefix}-groups-probe"})
    try:
        result = []
        for group, service in groups.items():
            description = descriptions[group]
            members = [
                MemberStatus(
                    member.client_id,
                    member.host,
                    [
                        f"{tp.topic}/{tp.partition}"
                        for tp in (member.assignment.topic_partitions if member.assignment else [])
                    ],
                )
                for member in description.members
            ]
            lags = _lags(probe, committed[group])
            result.append(
                GroupStatus(
                    service,
                    group,
                    description.state.name.lower(),
                    members,
                    lags,
                )
            )
        return result
    finally:
        probe.close()
