"""A batch's duration names its trace: exemplars in the OpenMetrics exposition."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from landfall.telemetry import trace_exemplar


def test_an_observation_inside_a_span_carries_its_trace_id_as_an_exemplar() -> None:
    registry = CollectorRegistry()
    duration = Histogram("batch_seconds", "a batch", ["service"], registry=registry)
    with TracerProvider().get_tracer("test").start_as_current_span("batch") as span:
        duration.labels("validator").observe(3.0, exemplar=trace_exemplar())
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
    exposition = openmetrics_latest(registry).decode()
    exemplars = [
        sample.exemplar
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.exemplar is not None
    ]
    assert len(exemplars) == 1, exposition
    assert exemplars[0].labels["trace_id"] == trace_id
    assert exemplars[0].value == 3.0


def test_no_exemplar_outside_a_span_or_in_an_unsampled_one() -> None:
    assert trace_exemplar() is None
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with unsampled.start_as_current_span("batch"):
        assert trace_exemplar() is None
