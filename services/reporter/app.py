"""The reporter as a faust-streaming app: every stage's event in, batch-reported out.

One agent reads the ingress topic, the three stage-completion topics and batch-failed
as raw bytes and decodes them with :class:`~landfall.contracts.EventCodec`. Each run's
progress (stages reached, timings, figures) lives in the ``batch-progress`` table,
keyed by run id and backed by its changelog topic, so a restarted reporter knows what
it saw. Once a run's predictions are committed, or a stage failed, the agent builds the
report and publishes batch-reported, waits for the broker's acknowledgement, and only
then records the run as reported in the table and acknowledges the event to faust,
which commits its offset after that.

Spark and the results database block, so :class:`BatchReporter` runs in one worker
thread while the event loop keeps the consumer's heartbeats going. Faust shards a
table by the partition of the event that writes it, so every source topic must have
the table's partition count; all events of one partition carry the same key
(``dataset/partition``) and so reach the same shard.

Decoding, retries and batch-failed are the shared runner's (:mod:`landfall.processing`),
and so are its metrics and spans: the app calls the same hooks (:mod:`landfall.hooks`).
Stopping follows landfall/shutdown.py: the first SIGTERM or SIGINT lets the report in
flight finish within ``runner.shutdown_grace_s``, past it (or at a second signal) the
report is abandoned and its event left uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError

from landfall.config import Settings, Topics
from landfall.contracts import EventType, partition_key
from landfall.dead_letters import dead_letter
from landfall.errors import ConfigError, InvalidEventError, RetryableError
from landfall.faust_stop import GracefulStop, InFlightApp, wait_forever
from landfall.hooks import Delivery, telemetry_hooks
from landfall.kafka_clients import event_codec, faust_broker_credentials
from landfall.logs import batch_logging
from landfall.processing import (
    Abandoned,
    Outgoing,
    batch_failed,
    call_with_retries,
    decode_incoming,
    outgoing_headers,
)
from landfall.shutdown import ABANDON_WAIT_S, exit_without_stage
from landfall.stage import StageContext
from landfall.telemetry import dataset_label
from services.reporter.service import (
    FINISHING_EVENTS,
    STAGE_EVENTS,
    BatchReporter,
    reporter_only_topics,
)

__all__ = ["ReporterApp", "expired_runs"]

log = logging.getLogger(__name__)

SERVICE = "reporter"
STAGE = "reporting"

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


def _shared_partition_count(topics: Topics) -> int:
    """The partition count of every source topic: the progress table is sharded like them."""
    counts = {getattr(topics, kind).partitions for kind in _ACCEPTED}
    if len(counts) != 1:
        raise ConfigError(
            "the reporter needs the same partition count on "
            + ", ".join(getattr(topics, kind).name for kind in _ACCEPTED)
            + f" (got {sorted(counts)}): its progress table is sharded like them; "
            "set the same kafka.topics.<topic>.partitions on each"
        )
    return counts.pop()


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
        partitions = _shared_partition_count(topics)
        self.context = StageContext(settings, SERVICE)
        self.context.remove_abandoned_outputs()
        self.reporter = reporter or BatchReporter(self.context)
        self.codec = event_codec(settings)
        self.hooks = telemetry_hooks(SERVICE, STAGE)
        # One thread: Spark sessions and SQLite connections prefer not to be shared.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reporter-work")
        self._stop = GracefulStop(SERVICE, settings.runner.shutdown_grace_s, work="report")
        # Set when a stop's grace is over: the report in flight gives up.
        self._interrupt = threading.Event()
        self._abandoned_work: Future[Any] | None = None
        session_s = kafka.session_timeout_ms / 1000
        self.app = InFlightApp(
            f"{kafka.group_prefix}-{SERVICE}",
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
        self._outputs = {
            topic.name: self.app.topic(
                topic.name, partitions=topic.partitions, key_type=bytes, value_type=bytes
            )
            for topic in (topics.reported, topics.failed, topics.dead_letter)
        }
        self._dead_letter_topic = topics.dead_letter.name
        self._dead_letter_topics = reporter_only_topics(topics)
        self.progress = self.app.Table(
            "batch-progress", default=None, partitions=partitions, key_type=str
        )
        self._swept_at: dict[int | None, float] = {}
        self.app.agent(self.source, name="landfall.reporter")(self._follow)

    # ------------------------------------------------------------------ the agent

    async def _follow(self, stream: Any) -> None:
        # Acknowledged by hand: an event is acknowledged (and its offset committed by
        # faust) only once it was handled, never because the agent was cancelled.
        async for event in stream.noack().events():
            if self._stop.requested:
                return await wait_forever()  # taken as the stop came: left for the next owner
            message = event.message
            # Until the event is acknowledged, a stop waits (for the grace at most).
            self.app.in_flight = True
            try:
                await self.process(
                    message.topic,
                    event.value,
                    message.headers,
                    message.partition,
                    key=event.key,
                    offset=message.offset,
                )
                await stream.ack(event)
            except Abandoned:
                log.warning(
                    "abandoned %s/%s@%s on shutdown; it stays uncommitted",
                    message.topic,
                    message.partition,
                    message.offset,
                )
            finally:
                self.app.in_flight = False
            if self._stop.requested:
                return await wait_forever()

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
        """Handle one message of a source topic (``partition``, ``offset``: the message's).

        Raises :class:`Abandoned` when a stop's grace ran out before the report was done:
        nothing of it was published.
        """
        try:
            accepted = self._sources.get(topic, frozenset())
            event_type, record = decode_incoming(
                self.codec, self.settings, topic, value, accepted, SERVICE
            )
        except InvalidEventError as exc:
            await self._set_aside(topic, key, value, headers, f"{topic}/{partition}@{offset}", exc)
            return
        if not record.get("run_id") or not record.get("batch_id"):
            # A bare ingress event: the validator gives it its run id, and the reporter
            # will meet the run at its batch-validated event.
            return
        run_id = str(record["run_id"])
        progress = self.progress.get(run_id)
        if self.reporter.already_reported(record, progress):
            log.info("run %s: %s already reported", run_id, event_type.short_name)
            return
        # The run's trace continues from the stage event's producer.
        group = f"{self.settings.kafka.group_prefix}-{SERVICE}"  # faust's group is the app's id
        delivery = Delivery(topic, partition, offset, _header_items(headers), group)
        # Every line logged for the run carries its ids and its trace (landfall/logs.py).
        with batch_logging(record), self.hooks.consuming(delivery):
            state = await self._follow_run(event_type, record, progress)
            if state is None:
                return
            self.progress[run_id] = {
                **state,
                _TOUCHED_AT: datetime.now(UTC).isoformat(),
                _TABLE_PARTITION: partition,
            }
            if event_type in STAGE_EVENTS:
                log.info("run %s: %s done", run_id, STAGE_EVENTS[event_type])
        self._forget_old_runs(partition)

    async def _follow_run(
        self,
        event_type: EventType,
        record: dict[str, Any],
        progress: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Fold the event into the run's progress; report the run if it is finished.

        Returns the new progress, or None when the work failed (and was reported as
        batch-failed when the event finished the run). A publish the broker does not
        acknowledge raises: the event stays unacknowledged, and so uncommitted.
        """
        dataset = dataset_label(self.settings, record.get("dataset"))
        started = time.monotonic()
        self.hooks.on_stage_start(dataset)
        try:
            try:
                state, outgoing = await self._work(dataset, event_type, record, progress)
            except Abandoned:
                self.hooks.on_abandoned(dataset)
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of a report is reported
                await self._failed(exc, event_type, record)
                self.hooks.on_batch_done(dataset, [], True, time.monotonic() - started)
                return None
            if outgoing is not None:
                await self._publish(outgoing)
                self.hooks.on_batch_done(dataset, [outgoing], False, time.monotonic() - started)
                log.info("run %s reported %s", record["run_id"], outgoing.record["status"])
            return state
        finally:
            self.hooks.on_stage_end(dataset)

    async def _failed(self, exc: Exception, event_type: EventType, record: dict[str, Any]) -> None:
        """A report that could not be built becomes batch-failed (which gets reported).

        A stage's progress is also in its manifest, so failing to record it fails
        nothing; and a failure's own report failing is not reported again. (The span
        of the work already carries the exception.)
        """
        log.exception("run %s: reporting %s failed", record["run_id"], event_type.short_name)
        if event_type in FINISHING_EVENTS and event_type is not EventType.BATCH_FAILED:
            failure = batch_failed(
                exc,
                event_type,
                record,
                settings=self.settings,
                producer=self.context.producer,
                stage=STAGE,
            )
            await self._publish(failure)

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

    # ------------------------------------------------------------------ the worker thread

    async def _work(
        self,
        dataset: str,
        event_type: EventType,
        record: dict[str, Any],
        progress: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], Outgoing | None]:
        """Follow the run in the worker thread, in the span of the work, with retries.

        The event loop keeps the consumer alive meanwhile. Past a stop's grace the
        work is interrupted (its Spark jobs cancelled, again at every round, as a cancel
        reaches only the jobs running then) and :class:`Abandoned` raised, whatever it
        returns; work that does not unwind within ABANDON_WAIT_S is left behind.
        """

        def attempt() -> tuple[dict[str, Any], Outgoing | None]:
            try:
                return self.reporter.follow(event_type, record, progress)
            except OperationalError as exc:  # the results database away or locked
                raise RetryableError(f"the results database: {exc}") from exc

        def in_span() -> tuple[dict[str, Any], Outgoing | None]:
            with self.hooks.working(event_type, record):
                state, outgoing = call_with_retries(
                    attempt,
                    self.settings,
                    service=SERVICE,
                    dataset=dataset,
                    interrupt=self._interrupt,
                    hooks=self.hooks,
                )
                self.hooks.on_stage_result([] if outgoing is None else [outgoing])
                return state, outgoing

        # The worker sees this task's context: its spans are the consume span's children.
        work: Future[tuple[dict[str, Any], Outgoing | None]] = self._executor.submit(
            copy_context().run, in_span
        )
        future = asyncio.wrap_future(work)
        abandoned_at: float | None = None
        while not future.done():
            await asyncio.wait([future], timeout=self.settings.runner.poll_timeout_s)
            if future.done() or not self._stop.overdue:
                continue
            if abandoned_at is None:
                abandoned_at = time.monotonic()
                log.warning(
                    "the reporter is stopping and its report in flight is past its grace "
                    "period: cancelling %s; nothing of it is published or committed",
                    STAGE,
                )
                self._interrupt.set()
            elif time.monotonic() - abandoned_at > ABANDON_WAIT_S:
                self._abandoned_work = work  # it does not unwind: the process goes without it
                raise Abandoned()
            self.context.cancel()
        if abandoned_at is not None:
            future.exception()  # read, so an error of the dropped work is not reported
            raise Abandoned()
        return future.result()

    # ------------------------------------------------------------------ producing

    async def _publish(self, outgoing: Outgoing) -> None:
        """Produce one event and wait for the broker's acknowledgement."""
        value = self.codec.encode(outgoing.event_type, outgoing.record, topic=outgoing.topic)
        with self.hooks.producing(outgoing.topic, outgoing.event_type) as carried:
            headers = _header_items(outgoing_headers(outgoing, carried))
            pending = await self._outputs[outgoing.topic].send(
                key=partition_key(outgoing.record), value=value, headers=headers
            )
            await pending

    async def _set_aside(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        source: str,
        reason: InvalidEventError,
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
        letter = dead_letter(
            value,
            _header_items(headers),
            reason=str(reason),
            source=source,
            service=SERVICE,
            keep_bytes=self.settings.runner.dead_letter_max_bytes,
        )
        pending = await self._outputs[self._dead_letter_topic].send(
            key=key, value=letter.value, headers=letter.headers
        )
        await pending
        self.hooks.on_dead_letter("dead_letter", str(reason))

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Run the app in a faust worker until SIGTERM or SIGINT, then release everything."""
        # Start Spark before the first event so the first report does not pay for it.
        _ = self.context.spark
        worker = self._stop.worker(self.app)
        try:
            worker.execute_from_commandline()
        finally:
            left_running = self._abandoned_work is not None and not self._abandoned_work.done()
            # An abandoned report still running is not waited for: see landfall/shutdown.py.
            self._executor.shutdown(wait=not left_running, cancel_futures=True)
            self.reporter.close()
            log.info("reporter stopped")
            if left_running:
                exit_without_stage(SERVICE)
