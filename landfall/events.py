"""Publishing and awaiting events from outside the services: the CLI, demo and tests."""

from __future__ import annotations

import re
import threading
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

__all__ = [
    "EventProducer",
    "EventWatcher",
    "data_landed_event",
    "featurized_event",
    "publish_data_landed",
    "publish_event",
]


def data_landed_event(
    dataset: str,
    partition: str,
    *,
    path: str | None = None,
    data_format: str | None = None,
    run_id: str | None = None,
    model_version: str | None = None,
    producer_name: str = f"landfall-cli/{landfall.__version__}",
) -> dict[str, Any]:
    """A new data-landed event, as an upstream system would announce a partition.

    ``model_version`` pins the version of the dataset's model that scores this batch.
    """
    return new_event(
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
    """Publish a data-landed event (:func:`data_landed_event`); return the event."""
    record = data_landed_event(
        dataset,
        partition,
        path=path,
        data_format=data_format,
        run_id=run_id,
        model_version=model_version,
        producer_name=producer_name,
    )
    return publish_event(settings, EventType.DATA_LANDED, settings.kafka.topics.landed.name, record)


def publish_event(
    settings: Settings, event_type: EventType, topic: str, record: dict[str, Any]
) -> dict[str, Any]:
    """Publish one event with a producer of its own; return the event.

    For one-off publishers (the CLI, reconciliation); a long-lived one (the job API)
    keeps an :class:`EventProducer` instead of paying a connection per event.
    """
    producer = EventProducer(settings)
    try:
        return producer.publish(event_type, topic, record)
    finally:
        producer.close()


class EventProducer:
    """One Kafka producer for many events; each publish waits for its acknowledgement.

    Thread-safe: the job API's requests publish through one instance at once.
    """

    def __init__(self, settings: Settings, *, ack_timeout_s: float = 30.0) -> None:
        self._bootstrap = settings.kafka.bootstrap
        self._codec = event_codec(settings)
        self._ack_timeout_s = ack_timeout_s
        self._producer: Producer | None = Producer({**kafka_client_config(settings), "acks": "all"})

    def publish(self, event_type: EventType, topic: str, record: dict[str, Any]) -> dict[str, Any]:
        """Publish ``record`` and wait until the broker acknowledged it; return it.

        Raises RetryableError naming ``kafka.bootstrap`` when no acknowledgement comes.
        """
        producer = self._producer
        if producer is None:
            raise RetryableError("the event producer is closed")
        acknowledged = threading.Event()
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)
            acknowledged.set()

        # Publishing data-landed roots the run's trace: every service's spans descend
        # from it. Span names stay few (no partition in them): the batch is in the
        # attributes.
        with tracer().start_as_current_span(
            f"publish {_kebab(event_type)}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": topic,
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "landfall.dataset": record["dataset"],
                "landfall.partition": record["partition"],
                "landfall.run_id": record["run_id"],
            },
        ):
            producer.produce(
                topic,
                key=partition_key(record),
                value=self._codec.encode(event_type, record, topic=topic),
                headers=inject_context(),
                on_delivery=on_delivery,
            )
            # Polled in short steps: a refused login or TLS handshake is raised by the
            # client's error callback at the end of a step, not after the whole wait.
            # Another thread's poll may serve this callback: the flag is what counts.
            deadline = time.monotonic() + self._ack_timeout_s
            while not acknowledged.is_set() and time.monotonic() < deadline:
                producer.poll(0.2)
            if errors or not acknowledged.is_set():
                raise RetryableError(
                    f"the broker at {self._bootstrap} did not acknowledge the "
                    f"{_kebab(event_type)} event within {self._ack_timeout_s:g}s "
                    f"(kafka.bootstrap): {errors or 'no answer'}"
                )
        return record

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then release the client.

        Dropping the client matters: one kept alive (by a traceback, say) would go on
        dialling the broker.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.flush(timeout_s)
        finally:
            # close() waits for every queued message, with no limit: what the flush
            # could not deliver (the broker is gone) is dropped first.
            producer.purge()
            producer.flush(0)
            producer.close()


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
