"""What every stage service shares: its context (settings, lake, Spark) and manifests.

Stage code in ``services/`` receives a ``StageContext`` and never touches Kafka; this
keeps each stage testable on a local Spark session without a broker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import landfall
from landfall.codec import EventCodec
from landfall.config import Settings
from landfall.contracts import EventType, follow_up
from landfall.deliveries import current_replay
from landfall.errors import InvalidEventError
from landfall.lake import ANNOUNCED_NAME, MANIFEST_NAME, Lake, LakePath, PartitionOutput, Zone
from landfall.object_store import lake_spark_conf
from landfall.runner import Outgoing
from landfall.spark import create_spark_session
from landfall.telemetry import record_spark_jobs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "ANNOUNCED_NAME",
    "StageContext",
    "StageService",
    "Stopwatch",
    "schema_fingerprint",
    "spark_job_group",
    "write_parquet",
]

# ANNOUNCED_NAME: the completion event announced for a committed output, kept beside
# its manifest (in Avro single-object encoding) so a redelivery can repeat it word for word.
# Stored events name their writer schema by fingerprint; no registry is involved.
_ANNOUNCEMENT_CODEC = EventCodec()

log = logging.getLogger(__name__)


class Stopwatch:
    """Named wall-clock timings in milliseconds, for manifests and events."""

    def __init__(self) -> None:
        self.timings_ms: dict[str, int] = {}
        self._started = time.monotonic()

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Time the block under ``name``."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings_ms[name] = int((time.monotonic() - start) * 1000)

    @property
    def total_ms(self) -> int:
        """Milliseconds since the stopwatch was made."""
        return int((time.monotonic() - self._started) * 1000)


def schema_fingerprint(frame: DataFrame) -> str:
    """A stable fingerprint of a DataFrame's schema, for manifests."""
    return hashlib.sha256(frame.schema.json().encode()).hexdigest()[:16]


def write_parquet(frame: DataFrame, path: object) -> None:
    """Write ``frame`` as a stage's parquet output at ``path`` (a lake path or folder).

    Dictionary encoding is off for floating-point columns: parquet tries it on every
    column and gives up only once a page's dictionary is full, which for measurements
    and computed features (values that rarely repeat) is work thrown away. Measured on
    the e2e bench's 5M-row feature table (32 doubles): the write took 7.3-8.1 s instead
    of 9.7-15.2 s, for files 3% larger. Other columns (ids, categories) keep it.
    """
    writer = frame.write.mode("overwrite")
    for field in frame.schema.fields:
        if field.dataType.typeName() in ("double", "float"):
            writer = writer.option(f"parquet.enable.dictionary#{field.name}", "false")
    writer.parquet(str(path))


@contextmanager
def spark_job_group(spark: SparkSession, description: str) -> Iterator[Callable[[], int]]:
    """Tag the Spark jobs run in the block; yields a function counting them so far.

    Stages report how many jobs (Spark actions) they run, the figure to watch when
    making a stage do its work in fewer passes over the data; and each job becomes a
    child span of the stage's span, so a slow stage can be explained from its trace.
    """
    context = spark.sparkContext
    group = f"landfall-{description}-{uuid.uuid4().hex[:12]}"
    enclosing = context.getLocalProperty("spark.jobGroup.id")
    # interruptOnCancel: a shutdown's cancelAllJobs stops running tasks too.
    context.setJobGroup(group, description, interruptOnCancel=True)
    try:
        yield lambda: len(context.statusTracker().getJobIdsForGroup(group))
    finally:
        context.setLocalProperty("spark.jobGroup.id", enclosing)  # type: ignore[arg-type]
        try:
            record_spark_jobs(context, group)
        except Exception as exc:  # noqa: BLE001 - tracing must never fail a stage
            log.warning("could not trace the Spark jobs of %s: %s", description, exc)


class StageContext:
    """A service's settings, lake and (one, lazily built) Spark session."""

    def __init__(self, settings: Settings, service_name: str, spark: SparkSession | None = None):
        self.settings = settings
        self.service_name = service_name
        self.producer = f"{service_name}/{landfall.__version__}"
        self.lake = Lake.from_settings(settings)
        self.topics = settings.kafka.topics
        self._spark = spark
        self._owns_spark = spark is None
        self._lock = threading.Lock()

    @property
    def spark(self) -> SparkSession:
        """The service's SparkSession, built on first use and kept for its life."""
        with self._lock:
            if self._spark is None:
                self._spark = create_spark_session(
                    self.settings.spark,
                    f"landfall-{self.service_name}",
                    # The s3a connector and the store's settings, when the lake is there
                    # (on HDFS: its user, if configured).
                    lake_spark_conf(
                        self.settings.lake_uri, self.settings.object_store, self.settings.hdfs
                    ),
                )
            return self._spark

    def remove_abandoned_outputs(self) -> list[str]:
        """Remove the uncommitted outputs a crashed process of this service left here.

        Called once at start: only this host's processes of this service that are gone,
        so a live replica's output in progress stays. ``landfall gc`` removes the rest
        (other hosts' leftovers) after the retention.
        """
        try:
            removed = self.lake.remove_abandoned(self.service_name)
        except OSError as exc:  # the store may be unreachable now: not a reason to stop
            log.warning("could not look for outputs a crash left behind: %s", exc)
            return []
        for folder in removed:
            log.info("removed %s: a crashed %s left it uncommitted", folder, self.service_name)
        return removed

    def cancel(self) -> None:
        """Cancel running Spark jobs so a shutdown does not wait for them."""
        if self._spark is not None:
            self._spark.sparkContext.cancelAllJobs()

    def close(self) -> None:
        """Stop the Spark session if this context built it."""
        if self._spark is not None and self._owns_spark:
            self._spark.stop()
            self._spark = None

    def manifest(
        self,
        record: dict[str, Any],
        *,
        stage: str,
        output: PartitionOutput,
        inputs: list[LakePath],
        rows: dict[str, int],
        schema: str,
        timings_ms: dict[str, int],
        **extra: Any,
    ) -> dict[str, Any]:
        """The ``_manifest.json`` of one stage output (DESIGN.md §3)."""
        return {
            "stage": stage,
            "dataset": record["dataset"],
            "partition": record["partition"],
            "batch_id": record["batch_id"],
            "run_id": record["run_id"],
            "event_id": record["event_id"],
            "path": output.target.rel,
            "inputs": [self._input_entry(path) for path in inputs],
            "rows": rows,
            "schema_fingerprint": schema,
            "code_version": self.producer,
            "timings_ms": timings_ms,
            "committed_at": datetime.now(UTC).isoformat(),
            **extra,
        }

    def _input_entry(self, path: LakePath) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.lake.relative(path)}
        try:
            upstream = json.loads((path / MANIFEST_NAME).read_bytes())
        except (OSError, ValueError):
            return entry  # a landed partition has no manifest
        if isinstance(upstream, dict):
            entry.update(run_id=upstream.get("run_id"), stage=upstream.get("stage"))
        return entry

    def staged(self, dataset: str, zone: Zone, partition: str, run_id: str) -> PartitionOutput:
        """A fresh attempt folder for one output of this stage."""
        # A replay redoes the work on purpose: usually as a new run, which the fencing
        # orders after the earlier one; a run it redoes under its own id (an event
        # the group had not handled yet, a redelivery inside the pass) replaces its own.
        return self.lake.stage_output(
            dataset,
            zone,
            partition,
            run_id,
            writer=self.service_name,
            supersede=current_replay() is not None,
        )


class StageService:
    """What the four stage services share: stage an output, commit it, announce it.

    A subclass sets ``name``, ``stage`` and ``consumes`` and implements ``handle``;
    ``cancel`` and ``close`` reach its Spark session through the context.
    """

    name: ClassVar[str]
    stage: ClassVar[str]

    def __init__(self, context: StageContext) -> None:
        self.context = context

    def start(self) -> None:
        """Work done once before the first event, with Spark running (none by default)."""

    @contextmanager
    def staging(self, record: dict[str, Any], zone: Zone) -> Iterator[PartitionOutput]:
        """A staging directory for the batch's output in ``zone``; removed if the work fails."""
        output = self.context.staged(record["dataset"], zone, record["partition"], record["run_id"])
        try:
            yield output
        except BaseException:
            self.context.lake.discard(output)
            raise

    def commit(
        self,
        record: dict[str, Any],
        output: PartitionOutput,
        *,
        inputs: list[LakePath],
        rows: dict[str, int],
        schema: str,
        watch: Stopwatch,
        **extra: Any,
    ) -> None:
        """Write the output's manifest and commit it (its pointer, written last).

        If another writer committed the same run first, ``output.target`` becomes that
        output, which is what this stage then announces.
        """
        manifest = self.context.manifest(
            record,
            stage=self.stage,
            output=output,
            inputs=inputs,
            rows=rows,
            schema=schema,
            timings_ms={**watch.timings_ms, "total": watch.total_ms},
            **extra,
        )
        self.context.lake.commit_partition(output, manifest)

    def announce(
        self,
        event_type: EventType,
        topic: str,
        record: dict[str, Any],
        output: PartitionOutput,
        **fields: Any,
    ) -> list[Outgoing]:
        """The completion event for a committed output, caused by ``record``."""
        lake = self.context.lake
        event = follow_up(
            event_type,
            record,
            producer=self.context.producer,
            output_path=lake.relative(output.target),
            manifest_path=lake.relative(output.target / MANIFEST_NAME),
            **fields,
        )
        self._keep_announcement(output.target, event_type, event, topic)
        return [Outgoing(topic, event_type, event)]

    def repeat_of(self, record: dict[str, Any], zone: Zone, topic: str) -> list[Outgoing] | None:
        """The events announced when ``record`` was handled before, if its output stands.

        A second delivery of the same event in the same run (a crash before the offset
        was committed, a publish the broker did not acknowledge, upstream publishing
        twice) finds its committed output in ``zone`` and repeats the completion event
        it announced then, same id, instead of redoing the work and replacing an output
        that downstream may be reading. None: do the work (a replay always does).
        """
        if current_replay() is not None:
            return None
        # The run's own output, even when a newer run's is the committed one now: every
        # run keeps its own, so a late copy of an older run's event repeats, not redoes.
        lake = self.context.lake
        own = [
            c
            for c in lake.commits(record["dataset"], zone, record["partition"])
            if c.run_id == record["run_id"] and c.succeeded
        ]
        if not own:
            return None
        target = own[-1].path
        try:
            manifest = json.loads((target / MANIFEST_NAME).read_bytes())
            stored = (target / ANNOUNCED_NAME).read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or (manifest.get("run_id"), manifest.get("event_id")) != (
            record["run_id"],
            record["event_id"],
        ):
            return None
        try:
            event_type, event = _ANNOUNCEMENT_CODEC.decode(stored, topic=topic)
        except InvalidEventError as exc:  # a stored file damaged: redo rather than fail
            log.warning("cannot repeat the announcement in %s (%s); redoing", target.rel, exc)
            return None
        log.info(
            "%s of run %s was done already (event %s): repeating its announcement",
            self.stage,
            record["run_id"],
            record["event_id"],
        )
        return [Outgoing(topic, event_type, event)]

    def _keep_announcement(
        self, target: LakePath, event_type: EventType, event: dict[str, Any], topic: str
    ) -> None:
        """Store the completion event beside the committed output (best effort)."""
        try:
            (target / ANNOUNCED_NAME).write_bytes(
                _ANNOUNCEMENT_CODEC.encode(event_type, event, topic=topic)
            )
        except OSError as exc:  # without it, a redelivery redoes the work: still correct
            log.warning("cannot keep the announcement of %s: %s", target.rel, exc)

    def cancel(self) -> None:
        """Cancel the running Spark jobs."""
        self.context.cancel()

    def close(self) -> None:
        """Stop the Spark session."""
        self.context.close()
