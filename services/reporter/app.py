"""The reporter as a faust-streaming app: every stage's event in, batch-reported out.

One agent reads the ingress topic, the three stage-completion topics and batch-failed
as raw bytes and decodes them with :class:`~landfall.contracts.EventCodec`. Each run's
progress (stages reached, timings, figures) lives in the ``batch-progress`` table,
keyed by run id and backed by its changelog topic, so a restarted reporter knows what
it saw. Once a run's predictions are committed, or a stage failed, the agent builds the
report and publishes batch-reported, waits for the broker's acknowledgement, and only
then records the run as reported in the table; the offset is committed after that.

Spark and the results database block, so :class:`BatchReporter` runs in one worker
thread while the event loop keeps the consumer's heartbeats going. Faust shards a
table by the partition of the event that writes it, so every source topic must have
the table's partition count; all events of one partition carry the same key
(``dataset/partition``) and so reach the same shard.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import faust
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy.exc import OperationalError

from landfall.config import Settings
from landfall.contracts import EventType, follow_up, partition_key
from landfall.dead_letters import dead_letter
from landfall.errors import ConfigError, InvalidEventError, RetryableError
from landfall.kafka_clients import event_codec, faust_broker_credentials
from landfall.redact import redact
from landfall.runner import Outgoing
from landfall.stage import StageContext
from landfall.telemetry import (
    BATCH_DURATION,
    BATCHES_IN_PROGRESS,
    LAST_SUCCESS,
    PROCESSING_ERRORS,
    RECORDS_PROCESSED,
    attached,
    dataset_label,
    extract_context,
    inject_context,
    trace_exemplar,
    tracer,
)
from services.reporter.service import (
    FINISHING_EVENTS,
    STAGE_EVENTS,
    BatchReporter,
    reporter_only_topics,
)

__all__ = ["ReporterApp", "expired_runs"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What the reporter accepts from each kind of topic.
_ACCEPTED = {
    "landed": frozenset({EventType.DATA_LANDED}),
    **{
        name: frozenset({event_type})
        for name, event_type in (
            ("validated", EventType.BATCH_VALIDATED),
            ("featurized", EventType.BATCH_FEATURIZED),
            ("predicted", EventType.BATCH_PREDICTED),
        )
    },
    "failed": frozenset({EventType.BATCH_FAILED}),
}


def _header_items(headers: Any) -> list[tuple[str, bytes]]:
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


# Bookkeeping the app adds to each run's progress in the table.
_TOUCHED_AT = "table_touched_at"
_TABLE_PARTITION = "table_partition"


def expired_runs(
    entries: Iterable[tuple[str, Any]], partition: int | None, cutoff: datetime
) -> list[str]:
    """The run ids of ``partition`` whose progress was last written before ``cutoff``."""
    expired = []
    for run_id, state in entries:
        if not isinstance(state, dict) or state.get(_TABLE_PARTITION) != partition:
            continue
        touched = state.get(_TOUCHED_AT)
        if touched is not None and datetime.fromisoformat(touched) < cutoff:
            expired.append(run_id)
    return expired


class ReporterApp:
    """Builds the faust app around a :class:`BatchReporter` and runs it in a worker."""

    def __init__(self, settings: Settings, reporter: BatchReporter | None = None) -> None:
        kafka = settings.kafka
        if not kafka.bootstrap:
            raise ConfigError("the reporter needs a broker: set kafka.bootstrap")
        self.settings = settings
        topics = kafka.topics
        self._sources = {
            getattr(topics, kind).name: accepted for kind, accepted in _ACCEPTED.items()
        }
        counts = {getattr(topics, kind).partitions for kind in _ACCEPTED}
        if len(counts) != 1:
            raise ConfigError(
                "the faust reporter needs the same partition count on "
                + ", ".join(getattr(topics, kind).name for kind in _ACCEPTED)
                + f" (got {sorted(counts)}); align them or set reporting.engine: runner"
            )
        partitions = counts.pop()
        self.context = StageContext(settings, "reporter")
        self.context.remove_abandoned_outputs()
        self.reporter = reporter or BatchReporter(self.context)
        self.codec = event_codec(settings)
        self._ingress = topics.landed.name
        # One thread: Spark sessions and SQLite connections prefer not to be shared.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reporter-work")
        session_s = kafka.session_timeout_ms / 1000
        self.app = faust.App(
            f"{kafka.group_prefix}-reporter",
            broker=[f"kafka://{address.strip()}" for address in kafka.bootstrap.split(",")],
            # kafka.security, as every other client of landfall takes it.
            broker_credentials=faust_broker_credentials(settings),
            store="memory://",
            key_serializer="raw",
            value_serializer="raw",
            # Tansu's group join takes about half the session timeout: keep it short.
            broker_session_timeout=session_s,
            broker_heartbeat_interval=max(session_s / 4, 0.5),
            broker_max_poll_interval=kafka.max_poll_interval_ms / 1000,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            topic_partitions=partitions,
            web_enabled=False,
            datadir=str(settings.home / "faust"),
        )
        self.source = self.app.topic(
            *self._sources, partitions=partitions, key_type=bytes, value_type=bytes
        )
        self.reported = self.app.topic(
            topics.reported.name,
            partitions=topics.reported.partitions,
            key_type=bytes,
            value_type=bytes,
        )
        self.dead_letters = self.app.topic(
            topics.dead_letter.name, key_type=bytes, value_type=bytes
        )
        self._dead_letter_topics = reporter_only_topics(topics)
        self.progress = self.app.Table(
            "batch-progress", default=None, partitions=partitions, key_type=str
        )
        self._swept_at: dict[int | None, float] = {}
        self.app.agent(self.source, name="landfall.reporter")(self._follow)
        self.app.on_before_shutdown.connect(self._on_shutdown)

    # ------------------------------------------------------------------ the agent

    async def _follow(self, stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            await self.process(
                message.topic,
                event.value,
                message.headers,
                message.partition,
                key=event.key,
                offset=message.offset,
            )

    async def process(
        self,
        topic: str,
        value: bytes | None,
        headers: Any,
        partition: int | None = None,
        *,
        key: bytes | None = None,
        offset: int | None = None,
    ) -> None:
        """Handle one message of a source topic (``partition``, ``offset``: the message's)."""
        source = f"{topic}/{partition}@{offset}"
        try:
            size, limit = len(value or b""), self.settings.runner.max_message_bytes
            if size > limit:  # not decoded at all, as the runner does
                raise InvalidEventError(
                    f"message on topic {topic!r} is {size} bytes, over "
                    f"runner.max_message_bytes ({limit})"
                )
            event_type, record = self.codec.decode(
                value, topic=topic, accept_json=topic == self._ingress
            )
            if event_type not in self._sources.get(topic, frozenset()):
                raise InvalidEventError(
                    f"topic {topic} carried a {event_type.short_name} event, but the "
                    "reporter takes only "
                    + ", ".join(sorted(t.short_name for t in self._sources.get(topic, ())))
                    + " there"
                )
        except InvalidEventError as exc:
            await self._set_aside(topic, key, value, headers, source, str(exc))
            return
        if not record.get("run_id") or not record.get("batch_id"):
            # A bare ingress event: the validator gives it its run id, and the reporter
            # will meet the run at its batch-validated event.
            return
        run_id = str(record["run_id"])
        progress = self.progress.get(run_id)
        if event_type in FINISHING_EVENTS and self.reporter.already_reported(record, progress):
            log.info("run %s: %s already reported", run_id, event_type.short_name)
            return
        dataset = dataset_label(self.settings, record.get("dataset"))
        started = time.monotonic()
        span_name = f"reporting {record.get('dataset')}/{record.get('partition')}"
        attributes = {
            "messaging.system": "kafka",
            "messaging.destination.name": topic,
            "landfall.service": "reporter",
            "landfall.event_type": event_type.value,
            "landfall.dataset": str(record.get("dataset")),
            "landfall.partition": str(record.get("partition")),
            "landfall.run_id": run_id,
        }
        # The run's trace continues from the stage event's producer.
        with (
            attached(extract_context(_header_items(headers))),
            tracer().start_as_current_span(
                span_name, kind=SpanKind.CONSUMER, attributes=attributes
            ) as span,
        ):
            BATCHES_IN_PROGRESS.labels("reporter").inc()
            try:
                state = await self._work(self.reporter.observe, event_type, record, progress)
                if event_type in FINISHING_EVENTS:
                    outgoing, state = await self._work(
                        self.reporter.report, event_type, record, state
                    )
                    await self._publish(outgoing)
                    self._count(dataset, outgoing, time.monotonic() - started)
                    span.set_attribute("landfall.status", str(outgoing.record["status"]))
                    log.info("run %s reported %s", run_id, outgoing.record["status"])
            except Exception as exc:
                log.exception("run %s: reporting %s failed", run_id, event_type.short_name)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
                BATCH_DURATION.labels("reporter", dataset, "failed").observe(
                    time.monotonic() - started, exemplar=trace_exemplar()
                )
                PROCESSING_ERRORS.labels("reporter", dataset, "batch_failed").inc()
                await self._report_failure(event_type, record, exc)
                return
            finally:
                BATCHES_IN_PROGRESS.labels("reporter").dec()
        self.progress[run_id] = {
            **state,
            _TOUCHED_AT: datetime.now(UTC).isoformat(),
            _TABLE_PARTITION: partition,
        }
        if event_type in STAGE_EVENTS:
            log.info("run %s: %s done", run_id, STAGE_EVENTS[event_type])
        self._forget_old_runs(partition)

    def _forget_old_runs(self, partition: int | None) -> None:
        """Delete the progress of this partition's runs older than the retention.

        A table deletion is written to the changelog partition of the event being
        processed, so only runs that were written from that same partition are deleted
        here; each partition is swept at most every tenth of the retention (10 minutes
        at most).
        """
        retention_s = self.settings.reporting.progress_retention_hours * 3600
        now = time.monotonic()
        if now - self._swept_at.get(partition, -math.inf) < min(retention_s / 10, 600):
            return
        self._swept_at[partition] = now
        cutoff = datetime.now(UTC) - timedelta(seconds=retention_s)
        expired = expired_runs(self.progress.items(), partition, cutoff)
        for run_id in expired:
            del self.progress[run_id]
        if expired:
            log.info("forgot the progress of %d runs untouched since %s", len(expired), cutoff)

    async def _work(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking work in the worker thread, retrying transient faults with backoff."""
        runner = self.settings.runner
        loop = asyncio.get_running_loop()
        for attempt in range(1, runner.max_attempts + 1):
            try:
                return await loop.run_in_executor(self._executor, function, *args)
            except (RetryableError, OperationalError) as exc:
                if attempt == runner.max_attempts:
                    raise
                delay = min(runner.retry_backoff_s * 2 ** (attempt - 1), runner.retry_backoff_max_s)
                log.warning("attempt %d failed (%s); retrying in %.1fs", attempt, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    def _count(self, dataset: str, outgoing: Outgoing, seconds: float) -> None:
        """A report's metrics, once batch-reported was acknowledged."""
        BATCH_DURATION.labels("reporter", dataset, "succeeded").observe(
            seconds, exemplar=trace_exemplar()
        )
        LAST_SUCCESS.labels("reporter", dataset).set(time.time())
        RECORDS_PROCESSED.labels("reporter", dataset).inc(outgoing.record.get("rows_scored") or 0)

    async def _publish(self, outgoing: Outgoing) -> None:
        value = self.codec.encode(outgoing.event_type, outgoing.record, topic=outgoing.topic)
        with tracer().start_as_current_span(
            f"produce {outgoing.topic}",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": outgoing.topic},
        ):
            headers = [
                *_header_items(inject_context()),
                ("landfall.event_type", outgoing.event_type.value.encode()),
            ]
            pending = await self.reported.send(
                key=partition_key(outgoing.record), value=value, headers=headers
            )
            await pending  # the broker's acknowledgement

    async def _set_aside(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        source: str,
        reason: str,
    ) -> None:
        """Dead-letter a message of a topic only the reporter reads; skip it otherwise.

        Acknowledged before the agent moves on (and so before the offset is committed):
        a dead letter is never lost, and the message is never handled again.
        """
        if topic not in self._dead_letter_topics:
            # The stage that consumes this topic dead-letters it: one letter, not two.
            log.info("skipping %s, dead-lettered by its stage: %s", source, reason)
            return
        log.warning("dead-lettering %s: %s", source, reason)
        PROCESSING_ERRORS.labels("reporter", "unknown", "dead_letter").inc()
        letter = dead_letter(
            value,
            _header_items(headers),
            reason=reason,
            source=source,
            service="reporter",
            keep_bytes=self.settings.runner.dead_letter_max_bytes,
        )
        pending = await self.dead_letters.send(key=key, value=letter.value, headers=letter.headers)
        await pending

    async def _report_failure(
        self, event_type: EventType, record: dict[str, Any], exc: Exception
    ) -> None:
        """Turn a report that could not be built into batch-failed (which gets reported)."""
        if event_type not in FINISHING_EVENTS or event_type is EventType.BATCH_FAILED:
            return  # a stage's progress is also in its manifest; a failure report is best effort
        failed = follow_up(
            EventType.BATCH_FAILED,
            record,
            producer=self.context.producer,
            stage="reporting",
            reason=redact(f"{type(exc).__name__}: {exc}"),
            retryable=isinstance(exc, RetryableError | OperationalError),
            failed_event_type=event_type.value,
        )
        topic = self.settings.kafka.topics.failed.name
        value = self.codec.encode(EventType.BATCH_FAILED, failed, topic=topic)
        pending = await self.app.topic(topic, key_type=bytes, value_type=bytes).send(
            key=partition_key(failed), value=value, headers=_header_items(inject_context())
        )
        await pending

    async def _on_shutdown(self, *_args: Any, **_kwargs: Any) -> None:
        # A report in progress is abandoned, not committed: it is redone after a restart.
        self.context.cancel()

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Run the app in a faust worker until SIGTERM or SIGINT, then release everything."""
        from faust.worker import Worker

        # Start Spark before the first event so the first report does not pay for it.
        _ = self.context.spark
        worker = Worker(self.app, loglevel="INFO", quiet=True)
        try:
            worker.execute_from_commandline()
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self.reporter.close()
