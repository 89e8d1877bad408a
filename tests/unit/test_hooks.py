"""What the loops' hooks record: Prometheus metrics and OpenTelemetry spans (landfall/hooks*.py)."""

from __future__ import annotations

import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from landfall.contracts import EventType
from landfall.errors import RetryableError
from landfall.hooks import CombinedHooks, Delivery
from landfall.hooks_prometheus import PrometheusHooks
from landfall.hooks_tracing import TracingHooks
from landfall.processing import Outgoing
from landfall.telemetry import inject_context

RECORD = {"dataset": "demo", "partition": "2026-11-02", "batch_id": "b-1", "run_id": "r-1"}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_report_counts_its_scored_rows_and_a_failure_counts_an_error() -> None:
    labels = {"service": "unit-reporter", "dataset": "demo"}
    hooks = PrometheusHooks("unit-reporter")
    reported = Outgoing(
        "reported",
        EventType.BATCH_REPORTED,
        {"rows_landed": 400, "rows_valid": 380, "rows_scored": 380},
    )
    hooks.on_batch_done("demo", [reported], False, 1.5)
    assert _sample("landfall_processed_rows_total", **labels) == 380
    last = _sample("landfall_last_success_timestamp_seconds", **labels)
    assert last == pytest.approx(time.time(), abs=5)
    hooks.on_batch_done("demo", [], True, 0.5)
    assert _sample("landfall_processing_errors_total", **labels, kind="batch_failed") == 1
    durations = "landfall_batch_processing_duration_seconds_count"
    assert _sample(durations, **labels, outcome="failed") == 1
    assert _sample(durations, **labels, outcome="succeeded") == 1


def test_a_validated_batch_counts_its_quarantined_rows_and_what_went_wrong_is_counted() -> None:
    labels = {"service": "unit-validator", "dataset": "demo"}
    hooks = PrometheusHooks("unit-validator")
    validated = Outgoing(
        "validated", EventType.BATCH_VALIDATED, {"rows_landed": 10, "rows_quarantined": 3}
    )
    hooks.on_batch_done("demo", [validated], False, 2.0)
    assert _sample("landfall_quarantined_rows_total", **labels) == 3
    assert _sample("landfall_processed_rows_total", **labels) == 10
    hooks.on_retry("demo", 1, RetryableError("away"))
    hooks.on_revoked("demo")
    hooks.on_unpublished("demo", RetryableError("no ack"))
    hooks.on_dead_letter("poison_pill", "crashed twice")
    errors = "landfall_processing_errors_total"
    for kind in ("retry", "revoked", "unpublished"):
        assert _sample(errors, **labels, kind=kind) == 1, kind
    assert _sample(errors, service="unit-validator", dataset="unknown", kind="poison_pill") == 1
    hooks.on_stage_start("demo")
    assert _sample("landfall_batches_in_progress", service="unit-validator") == 1
    hooks.on_stage_end("demo")
    assert _sample("landfall_batches_in_progress", service="unit-validator") == 0


def test_a_message_is_one_consume_span_continuing_its_producers_trace(spans) -> None:
    provider, exporter = spans
    hooks = TracingHooks("featurizer", "featurization", provider=provider)
    with provider.get_tracer("upstream").start_as_current_span("produce upstream"):
        inbound = inject_context()
    delivery = Delivery("landfall.batch-validated", 2, 41, inbound, "landfall-featurizer")
    with hooks.consuming(delivery):
        with hooks.working(EventType.BATCH_VALIDATED, RECORD):
            hooks.on_retry("demo", 1, RetryableError("executor lost"))
            hooks.on_stage_result([Outgoing("featurized", EventType.BATCH_FEATURIZED, {"rows": 7})])
        with hooks.producing("landfall.batch-featurized", EventType.BATCH_FEATURIZED) as carried:
            produce_id = trace.get_current_span().get_span_context().span_id
    found = _by_name(exporter)
    upstream, consume = found["produce upstream"], found["consume landfall.batch-validated"]
    work, produce = found["featurization"], found["produce landfall.batch-featurized"]
    assert consume.context.trace_id == upstream.context.trace_id
    assert consume.parent is not None and consume.parent.span_id == upstream.context.span_id
    assert work.parent is not None and work.parent.span_id == consume.context.span_id
    assert produce.parent is not None and produce.parent.span_id == consume.context.span_id
    assert consume.kind is trace.SpanKind.CONSUMER and produce.kind is trace.SpanKind.PRODUCER
    assert consume.attributes is not None and work.attributes is not None
    assert consume.attributes["messaging.destination.name"] == "landfall.batch-validated"
    assert consume.attributes["messaging.destination.partition.id"] == "2"
    assert consume.attributes["messaging.kafka.offset"] == 41
    assert consume.attributes["messaging.consumer.group.name"] == "landfall-featurizer"
    assert (work.attributes["landfall.run_id"], work.attributes["landfall.rows"]) == ("r-1", 7)
    assert [event.name for event in work.events] == ["retry"]
    # What the produced event carries on names the produce span: its consumers continue it.
    traceparent = dict(carried)["traceparent"]
    assert isinstance(traceparent, bytes)
    assert traceparent.decode().split("-")[2] == trace.format_span_id(produce_id)


def test_a_message_that_went_wrong_marks_its_span_failed(spans) -> None:
    provider, exporter = spans
    hooks = TracingHooks("validator", "validation", provider=provider)
    for topic, went_wrong in (
        ("dead", lambda: hooks.on_dead_letter("dead_letter", "not an event")),
        ("moved", lambda: hooks.on_revoked("demo")),
        ("stopped", lambda: hooks.on_abandoned("demo")),
    ):
        with hooks.consuming(Delivery(topic, None, None, None)):
            went_wrong()
    with hooks.consuming(Delivery("fine", 0, 0, None)):
        pass
    with pytest.raises(ValueError), hooks.working(EventType.DATA_LANDED, RECORD):
        raise ValueError("bad rows")
    found = _by_name(exporter)
    assert found["consume dead"].status.description == "not an event"
    assert found["consume moved"].status.description == "partition revoked"
    assert found["consume stopped"].status.description == "abandoned on shutdown"
    assert found["consume fine"].status.status_code is StatusCode.UNSET
    assert found["validation"].status.status_code is StatusCode.ERROR
    assert "messaging.kafka.offset" not in (found["consume dead"].attributes or {})


def test_combined_hooks_call_each_and_a_batch_duration_names_the_message_trace(spans) -> None:
    provider, _exporter = spans
    hooks = CombinedHooks(
        PrometheusHooks("unit-combined"), TracingHooks("unit-combined", provider=provider)
    )
    with hooks.consuming(Delivery("in", 0, 0, None)):
        trace_id = trace.format_trace_id(trace.get_current_span().get_span_context().trace_id)
        hooks.on_stage_start("demo")
        assert _sample("landfall_batches_in_progress", service="unit-combined") == 1
        hooks.on_stage_end("demo")
        with hooks.producing("out", EventType.BATCH_PREDICTED) as carried:
            assert [key for key, _ in carried] == ["traceparent"]
        hooks.on_batch_done("demo", [], False, 4.0)
    exposition = openmetrics_latest(REGISTRY).decode()
    exemplars = [
        sample.exemplar
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.exemplar is not None and sample.labels.get("service") == "unit-combined"
    ]
    assert [exemplar.labels["trace_id"] for exemplar in exemplars] == [trace_id]


def test_every_metric_is_named_landfall_then_its_unit() -> None:
    from landfall import telemetry

    families = [
        family
        for metric in vars(telemetry).values()
        if callable(getattr(metric, "describe", None)) and hasattr(metric, "_name")
        for family in metric.describe()
    ]
    assert len(families) == 8
    for family in families:
        assert family.name.startswith("landfall_"), family.name
        if family.unit:
            assert family.name.endswith(f"_{family.unit}"), family.name
    units = {family.name: family.unit for family in families}
    assert units["landfall_batch_processing_duration_seconds"] == "seconds"
    assert units["landfall_processed_rows"] == units["landfall_quarantined_rows"] == "rows"
    assert units["landfall_consumer_lag_messages"] == "messages"
