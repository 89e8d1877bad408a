"""Publishing and awaiting events from outside the services: the CLI, demo and tests."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from opentelemetry.trace import SpanKind

import landfall
from landfall.config import Settings
from landfall.contracts import EventType, new_event, partition_key
from landfall.errors import InvalidEventError, RetryableError
from landfall.ingress import batch_id_for
from landfall.kafka_clients import event_codec, kafka_client_config
from landfall.processing import Headers
from landfall.run_ids import new_run_id
from landfall.telemetry import inject_context, tracer

__all__ = ["EventWatcher", "featurized_event", "publish_data_landed", "publish_event"]


def publish_data_landed(
    settings: Settings,
    dataset: str,
    partition: str,
    *,
    path: str | None = None,
    data_format: str | None = None,
    run_id: str | None = None,
    model_version: str | None = None,
    producer_name: str = f"landfall-cli/{landfall.__version__}",
) -> dict[str, Any]:
    """Publish a data-landed event as an upstream system would; return the event.

    ``model_version`` pins the version of the dataset's model that scores this batch.
    """
    record = new_event(
        EventType.DATA_LANDED,
        dataset=dataset,
        partition=partition,
        batch_id=batch_id_for(dataset, partition),
        run_id=run_id or new_run_id(),
        producer=producer_name,
        path=path,
        format=data_format,
        model_version=model_version,
    )
    return publish_event(settings, EventType.DATA_LANDED, settings.kafka.topics.landed.name, record)


def publish_event(
    settings: Settings, event_type: EventType, topic: str, record: dict[str, Any]
) -> dict[str, Any]:
    """Publish one event and wait until the broker acknowledged it; return the event.

    Raises RetryableError naming ``kafka.bootstrap`` when no acknowledgement comes.
    """
    codec = event_codec(settings)
    errors: list[KafkaError] = []
    producer = Producer({**kafka_client_config(settings), "acks": "all"})
    dataset, partition = record["dataset"], record["partition"]
    # Publishing data-landed roots the run's trace: every service's spans descend from it.
    # Span names stay few (no partition in them): the batch is in the attributes.
    with tracer().start_as_current_span(
        f"publish {_kebab(event_type)}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "landfall.dataset": dataset,
            "landfall.partition": partition,
            "landfall.run_id": record["run_id"],
        },
    ):
        producer.produce(
            topic,
            key=partition_key(record),
            value=codec.encode(event_type, record, topic=topic),
            headers=inject_context(),
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
        # Flushed in short steps: a refused login or TLS handshake is raised by the
        # client's error callback at the end of a step, not after the whole wait.
        deadline = time.monotonic() + 30
        try:
            while producer.flush(1.0) and time.monotonic() < deadline:
                pass
            unacknowledged = len(producer)
        finally:
            # An error raised out of flush keeps this frame, and so the client, alive
            # in its traceback; the client would go on dialling the broker.
            del producer
        if unacknowledged or errors:
            raise RetryableError(
                f"the broker at {settings.kafka.bootstrap} did not acknowledge the "
                f"{_kebab(event_type)} event within 30s (kafka.bootstrap): "
                f"{errors or 'no answer'}"
            )
    return record


def _kebab(event_type: EventType) -> str:
    """DataLanded -> data-landed: how people and span names call an event."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", event_type.short_name).lower()


def featurized_event(
    settings: Settings,
    dataset: str,
    partition: str,
    *,
    rows: int,
    features: list[str],
    producer_name: str,
    **fields: Any,
) -> dict[str, Any]:
    """The batch-featurized event for a features partition already in the lake.

    What the featurizer would have announced: for scoring a feature table written by
    other means (benchmarks, tests) without running the stages before it. Every run
    is new.
    """
    from landfall.lake import Lake

    lake = Lake.from_settings(settings)
    target = lake.partition_dir(dataset, "features", partition)
    return new_event(
        EventType.BATCH_FEATURIZED,
        batch_id=batch_id_for(dataset, partition),
        run_id=new_run_id(),
        dataset=dataset,
        partition=partition,
        producer=producer_name,
        causation_id=str(uuid.uuid4()),
        output_path=lake.relative(target),
        manifest_path=lake.relative(target / "_manifest.json"),
        rows=rows,
        features=features,
        duration_ms=0,
        **fields,
    )


class EventWatcher:
    """Reads landfall topics from the beginning, in a private group, decoding events."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.codec = event_codec(settings)
        self._consumer = Consumer(
            {
                **kafka_client_config(settings),
                "group.id": f"landfall-watch-{uuid.uuid4().hex[:12]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": settings.kafka.session_timeout_ms,
            }
        )
        self._consumer.subscribe(topics)
        self.seen: list[tuple[str, EventType, dict[str, Any]]] = []
        self.undecodable: list[tuple[str, bytes | None, Headers]] = []

    def wait_for(
        self,
        predicate: Callable[[str, EventType, dict[str, Any]], bool],
        timeout: float,
        *,
        alive: Callable[[], None] | None = None,
    ) -> tuple[str, EventType, dict[str, Any]]:
        """Poll until an event matches ``predicate``; ``alive`` may raise to give up early."""
        for seen in self.seen:
            if predicate(*seen):
                return seen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            message = self._consumer.poll(0.5)
            if message is None or message.error():
                continue
            topic = message.topic() or ""
            try:
                event_type, record = self.codec.decode(message.value(), topic=topic)
            except InvalidEventError:
                headers = message.headers()
                self.undecodable.append(
                    (topic, message.value(), headers if isinstance(headers, list) else [])
                )
                continue
            self.seen.append((topic, event_type, record))
            if predicate(topic, event_type, record):
                return topic, event_type, record
        raise TimeoutError(f"no matching event within {timeout:.0f}s (saw {len(self.seen)})")

    def close(self) -> None:
        """Leave the private group."""
        self._consumer.close()
