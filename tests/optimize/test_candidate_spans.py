"""`lightning.candidate` from baggage onto every span of the rollout (the worker side and the agent's)."""

from __future__ import annotations

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

from otel_lightning import rollout, semconv


def test_spans_in_a_candidates_baggage_scope_carry_it(memory_exporter):
    tracer = trace.get_tracer("test")
    with rollout("base/q1"):
        token = otel_context.attach(baggage.set_baggage(semconv.BAGGAGE_CANDIDATE, "careful-prompt"))
        try:
            with tracer.start_as_current_span("tool call"):
                pass
        finally:
            otel_context.detach(token)
        with tracer.start_as_current_span("outside the candidate"):
            pass
    spans = {span.name: span for span in memory_exporter.get_finished_spans()}
    assert spans["tool call"].attributes[semconv.CANDIDATE] == "careful-prompt"
    assert semconv.CANDIDATE not in spans["outside the candidate"].attributes
