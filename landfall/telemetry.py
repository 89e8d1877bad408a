"""Telemetry for every service: Prometheus metrics and OpenTelemetry traces (DESIGN §7).

**Metrics** live in the process's default Prometheus registry and are served on
``telemetry.metrics_port`` (``/metrics``). Their names follow Prometheus's practice:
``landfall_`` first, the unit last (``_seconds``, ``_rows``, ``_messages``; ``_total``
after it on a counter), and are the ones the operators' dashboards and alert rules use:
``landfall_batch_processing_duration_seconds``, ``landfall_processed_rows_total``,
``landfall_processing_errors_total``, ``landfall_quarantined_rows_total``,
``landfall_last_success_timestamp_seconds``, ``landfall_consumer_lag_messages``,
``landfall_batches_in_progress`` and ``landfall_batch_runs_stuck``. The ``dataset``
label only takes configured dataset names (anything else is ``unknown``), so a stream
of bad events cannot blow up the number of series. Each observation of the batch
duration carries the batch's trace id as an exemplar (:func:`trace_exemplar`;
OpenMetrics exposition only). The loops record them through hooks
(landfall/hooks_prometheus.py).

**Traces**: one trace per batch run, from the data-landed event to the report, across
the four processes. The W3C ``traceparent``/``tracestate`` Kafka headers carry the
context from one event to the events it causes; each service adds a consume span, a
span for its stage (dataset, partition, run, rows, model version) and a produce span
per event it publishes (landfall/hooks_tracing.py). Spans are exported over OTLP/HTTP
(``telemetry.otlp_endpoint``, e.g. Jaeger's ``http://jaeger:4318/v1/traces``) and/or as
JSON lines to ``<telemetry.trace_dir>/<service>.jsonl``; with neither, the context
still travels, so a downstream service with an exporter keeps the trace whole.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from landfall.config import Settings
from landfall.errors import ConfigError
from landfall.redact import redact

__all__ = [
    "BATCH_DURATION",
    "BATCHES_IN_PROGRESS",
    "CONSUMER_LAG",
    "LAST_SUCCESS",
    "RUNS_STUCK",
    "PROCESSING_ERRORS",
    "RECORDS_PROCESSED",
    "ROWS_QUARANTINED",
    "TRACE_HEADERS",
    "dataset_label",
    "extract_context",
    "init_telemetry",
    "inject_context",
    "record_spark_jobs",
    "redacted_span",
    "trace_exemplar",
    "tracer",
]

log = logging.getLogger(__name__)

TRACE_HEADERS = ("traceparent", "tracestate")

# Names: landfall_ first, the unit last (``unit=`` also declares it to OpenMetrics).
# Seconds: a batch takes from a few seconds (a small partition) to an hour (a big one).
_DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

BATCH_DURATION = Histogram(
    "landfall_batch_processing_duration_seconds",
    "Time from taking an event to having published what it caused, per batch",
    ["service", "dataset", "outcome"],
    buckets=_DURATION_BUCKETS,
    unit="seconds",
)
RECORDS_PROCESSED = Counter(
    "landfall_processed_rows",
    "Rows a stage processed (landed rows validated, rows featurized, scored, reported)",
    ["service", "dataset"],
    unit="rows",
)
PROCESSING_ERRORS = Counter(
    "landfall_processing_errors",
    "Errors: batches failed, attempts retried, messages dead-lettered",
    ["service", "dataset", "kind"],
)
ROWS_QUARANTINED = Counter(
    "landfall_quarantined_rows",
    "Rows the validator quarantined",
    ["service", "dataset"],
    unit="rows",
)
LAST_SUCCESS = Gauge(
    "landfall_last_success_timestamp_seconds",
    "When the service last finished a batch of the dataset successfully (Unix time)",
    ["service", "dataset"],
    unit="seconds",
)
CONSUMER_LAG = Gauge(
    "landfall_consumer_lag_messages",
    "Messages on the partition the service's group has not consumed yet",
    ["service", "topic", "partition"],
    unit="messages",
)
RUNS_STUCK = Gauge(
    "landfall_batch_runs_stuck",
    "Unfinished batch runs with no progress for reporting.stuck_after_s (the reporter "
    "counts them in the results database; landfall reconcile re-drives them)",
    ["dataset"],
)
BATCHES_IN_PROGRESS = Gauge(
    "landfall_batches_in_progress", "Batches the service is working on now", ["service"]
)

_lock = threading.Lock()
_initialised: dict[str, Any] = {}


def dataset_label(settings: Settings, dataset: Any) -> str:
    """The dataset as a label value: a configured name, or ``unknown``."""
    return dataset if isinstance(dataset, str) and dataset in settings.datasets else "unknown"


def init_telemetry(settings: Settings, service: str, *, metrics: bool = True) -> int | None:
    """Start this process's metrics endpoint and trace exporters (once); return the port.

    Returns the port ``/metrics`` is served on, or None when metrics are off (not
    configured, or ``metrics=False``: a command line tool has nothing to be scraped for).
    """
    with _lock:
        if "service" in _initialised:
            return _initialised.get("port")
        _initialised["service"] = service
        _init_tracing(settings, service)
        port = None
        config = settings.telemetry
        if metrics and config.metrics_port is not None:
            try:
                server, _thread = start_http_server(config.metrics_port, addr=config.metrics_host)
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve metrics on {config.metrics_host}:{config.metrics_port} "
                    f"(telemetry.metrics_port): {exc.strerror or exc}; give each service on "
                    "this machine its own port, e.g. LANDFALL_TELEMETRY__METRICS_PORT"
                ) from exc
            port = int(server.server_port)
            log.info("metrics on http://%s:%d/metrics", config.metrics_host, port)
        _initialised["port"] = port
        return port


def _init_tracing(settings: Settings, service: str) -> None:
    config = settings.telemetry
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"landfall-{service}", "service.namespace": "landfall"}
        ),
        sampler=ParentBasedTraceIdRatio(config.trace_sample_ratio),
    )
    if config.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint, timeout=10)
        provider.add_span_processor(BatchSpanProcessor(_Redacting(exporter)))
        log.info("exporting traces to %s", config.otlp_endpoint)
    if config.trace_dir is not None:
        config.trace_dir.mkdir(parents=True, exist_ok=True)
        path = config.trace_dir / f"{service}.jsonl"
        # Written as each span ends: a crashed process still leaves its spans behind.
        provider.add_span_processor(SimpleSpanProcessor(_Redacting(_JsonLinesExporter(path))))
    trace.set_tracer_provider(provider)


def _redacted_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple | list):
        return tuple(_redacted_value(item) for item in value)
    return value


def _redacted_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: _redacted_value(value) for key, value in (attributes or {}).items()}


def redacted_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of a finished span whose name, attributes, events and status are redacted."""
    status = span.status
    if status.description:
        status = Status(status.status_code, redact(status.description))
    return ReadableSpan(
        name=redact(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_redacted_attributes(span.attributes),
        # An exception's event carries its message and stack trace.
        events=[
            Event(redact(event.name), _redacted_attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class _Redacting(SpanExporter):
    """Hands an exporter redacted copies of the spans: no secret leaves in a trace.

    Span text comes from everywhere (error statuses, recorded exceptions, attributes
    set by any code), so it is redacted here, once, on its way out of the process.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._exporter.export([redacted_span(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class _JsonLinesExporter(SpanExporter):
    """Finished spans as JSON lines, one file per service process."""

    def __init__(self, path: Path) -> None:
        self._out: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                self._out.write(span.to_json(indent=None) + "\n")
            self._out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._out.close()


def trace_exemplar() -> dict[str, str] | None:
    """The current span's trace as a Prometheus exemplar, or None outside a sampled span.

    Observed with a batch's duration, it lets a dashboard link a slow batch to its trace
    (exemplars are served only in the OpenMetrics exposition, which Prometheus asks for
    when its exemplar storage is on). ``trace_id`` is the label name Grafana looks for.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }


# How long to wait for Spark's listener bus to record the end of a job the stage saw
# finish: the bus is asynchronous, so the last job's end can arrive a moment later.
_JOB_END_WAIT_S = 1.0


def record_spark_jobs(spark_context: Any, job_group: str) -> int:
    """Add a child span of the current span for each Spark job run under ``job_group``.

    A stage's span then shows where its time went: each job with its own start and end
    (from Spark's status store on the driver, so it holds on a cluster too), its status
    and its task counts. The span name is fixed ("spark job"), the job's id and call
    site are attributes. Returns how many spans were added (none outside a recording
    span: nothing is asked of Spark then).
    """
    if not trace.get_current_span().is_recording():
        return 0
    job_ids = sorted(spark_context.statusTracker().getJobIdsForGroup(job_group))
    if not job_ids:
        return 0
    store = spark_context._jsc.sc().statusStore()
    deadline = time.monotonic() + _JOB_END_WAIT_S
    added = 0
    for job_id in job_ids:
        try:
            job = store.job(job_id)
            while not job.completionTime().isDefined() and time.monotonic() < deadline:
                time.sleep(0.05)
                job = store.job(job_id)
        except Exception as exc:  # noqa: BLE001 - evicted from the store, or Spark stopping
            log.debug("no status for Spark job %s: %s", job_id, exc)
            continue
        submitted = job.submissionTime()
        if not submitted.isDefined():
            continue  # never submitted (skipped entirely): nothing ran
        completed = job.completionTime()
        end_ns = completed.get().getTime() * 1_000_000 if completed.isDefined() else time.time_ns()
        status = str(job.status().toString())
        span = tracer().start_span(
            "spark job",
            start_time=submitted.get().getTime() * 1_000_000,
            attributes={
                "spark.job.id": job_id,
                "spark.job.group": job_group,
                "spark.job.call_site": str(job.name()),
                "spark.job.status": status,
                "spark.job.stages": job.numCompletedStages() + job.numSkippedStages(),
                "spark.job.tasks": job.numTasks(),
                "spark.job.tasks.completed": job.numCompletedTasks(),
                "spark.job.tasks.failed": job.numFailedTasks(),
                "spark.job.tasks.skipped": job.numSkippedTasks(),
            },
        )
        if status == "FAILED":
            span.set_status(Status(StatusCode.ERROR, f"Spark job {job_id} failed"))
        span.end(end_time=end_ns)
        added += 1
    return added


def tracer() -> trace.Tracer:
    """landfall's tracer (a no-op one until ``init_telemetry`` ran)."""
    return trace.get_tracer("landfall")


def extract_context(headers: Sequence[tuple[str, Any]] | Mapping[str, Any] | None) -> Context:
    """The trace context a Kafka record's headers carry (an empty one if none)."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    carrier = {}
    for key, value in items:
        if key in TRACE_HEADERS and value is not None:
            carrier[key] = value.decode() if isinstance(value, bytes) else str(value)
    return propagate.extract(carrier)


def inject_context() -> list[tuple[str, str | bytes | None]]:
    """The current trace context as Kafka headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode()) for key, value in carrier.items() if key in TRACE_HEADERS]


@contextmanager
def attached(parent: Context) -> Iterator[None]:
    """Make ``parent`` the current context in this thread for the block."""
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)
