"""A production app's agent with no otel-lightning code, run under `opentelemetry-instrument`.

    opentelemetry-instrument python tests/collector/production_agent.py BASE_URL CONVERSATION_ID

Handles one request (a span of its own, as a web framework's instrumentation would make) with the
two-call calculator conversation through the plain OpenAI client, then records the GenAI
conventions' feedback event, `gen_ai.evaluation.result`, as a log record in the request's trace.
Prints the trace id.
"""

from __future__ import annotations

import sys
from pathlib import Path

from opentelemetry import _logs, trace

sys.path.insert(0, str(Path(__file__).parent))
from dialect_recorder import _openai_conversation


def main() -> None:
    base_url, conversation_id = sys.argv[1:3]
    tracer = trace.get_tracer("production-app")
    with tracer.start_as_current_span("POST /chat") as span:
        span.set_attribute("gen_ai.conversation.id", conversation_id)
        _openai_conversation(base_url)
        _logs.get_logger("production-app").emit(
            event_name="gen_ai.evaluation.result",
            attributes={"gen_ai.evaluation.name": "correctness", "gen_ai.evaluation.score.value": 0.75},
        )
        print(format(span.get_span_context().trace_id, "032x"), flush=True)


if __name__ == "__main__":
    main()
