"""Assembly through the dialects: one step per model call (gateway and client spans merged), token
ids from the gateway, evaluations as rewards, and bad input that ends one rollout malformed."""

from __future__ import annotations

import json
import os

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_lightning import semconv
from otel_lightning_collector.credit import credit_rule
from otel_lightning_collector.spans import key_value
from otel_lightning_collector.transitions import MALFORMED, SUCCEEDED, build_rollout

TRACE = os.urandom(16)
ROOT = os.urandom(8)


def _span(
    name: str, attributes: dict, start: int, end: int, parent: bytes = ROOT, span_id: bytes | None = None
) -> Span:
    span = Span(
        trace_id=TRACE,
        span_id=span_id or os.urandom(8),
        parent_span_id=parent,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
    )
    span.attributes.extend(key_value(k, v) for k, v in attributes.items())
    return span


def _root() -> Span:
    return _span(semconv.ROLLOUT_SPAN_NAME, {semconv.SPAN_KIND: semconv.SPAN_KIND_ROLLOUT}, 0, 10_000, b"", ROOT)


def _client(question: str, answer: str, start: int, end: int, response_id: str = "", **extra) -> Span:
    """A client-side LLM span from another instrumentor (GenAI names, parts form, no token ids)."""
    attributes = {
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_AGENT_NAME: "solver",
        semconv.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "parts": [{"type": "text", "content": question}]}]),
        semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]
        ),
        **extra,
    }
    if response_id:
        attributes[semconv.GEN_AI_RESPONSE_ID] = response_id
    return _span("chat stub", attributes, start, end)


def _gateway(question: str, answer: str, start: int, end: int, response_id: str = "", parent: bytes = ROOT) -> Span:
    attributes = {
        semconv.SPAN_KIND: semconv.SPAN_KIND_LLM,
        semconv.LLM_SOURCE: semconv.LLM_SOURCE_GATEWAY,
        semconv.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "content": question}]),
        semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps([{"role": "assistant", "content": answer}]),
        semconv.PROMPT_TOKEN_IDS: list(question.encode()),
        semconv.RESPONSE_TOKEN_IDS: list(answer.encode()),
        semconv.POLICY_VERSION: "v7",
    }
    if response_id:
        attributes[semconv.GEN_AI_RESPONSE_ID] = response_id
    return _span("chat stub", attributes, start, end, parent)


def _build(*spans: Span, credit: str = "auto", **kwargs):
    return build_rollout("r1", "t1", 0, [s.SerializeToString() for s in spans], credit_rule(credit), **kwargs)


def test_gateway_sibling_is_merged_by_response_id_and_its_token_ids_win() -> None:
    built = _build(
        _root(),
        _client("2+2?", "4", 100, 900, response_id="chatcmpl-1"),
        _gateway("2+2?", "4", 200, 800, response_id="chatcmpl-1"),
    )
    (step,) = built.transitions
    assert built.completed.status == SUCCEEDED
    assert bytes(step.prompt_token_ids) == b"2+2?" and bytes(step.response_token_ids) == b"4"
    assert step.agent == "solver" and step.policy_version == "v7" and not step.token_ids_absent
    assert json.loads(step.state_json)["messages"] == [{"role": "user", "content": "2+2?"}]


def test_gateway_child_of_the_client_span_is_one_step() -> None:
    client = _client("2+2?", "4", 100, 900)
    built = _build(_root(), client, _gateway("2+2?", "4", 200, 800, parent=client.span_id))
    (step,) = built.transitions
    assert step.agent == "solver" and bytes(step.response_token_ids) == b"4"


def test_gateway_siblings_without_response_ids_pair_by_time_and_request() -> None:
    built = _build(
        _root(),
        _client("2+2?", "4", 100, 900),
        _gateway("2+2?", "4", 200, 800),
        _client("3+3?", "6", 1000, 1900),
        _gateway("3+3?", "6", 1100, 1800),
    )
    assert [bytes(t.response_token_ids) for t in built.transitions] == [b"4", b"6"]
    assert built.completed.steps_without_token_ids == 0


def test_an_unmatched_gateway_span_is_a_step_of_its_own() -> None:
    """An agent with no tracing at all: the gateway's span is all there is."""
    built = _build(_root(), _gateway("2+2?", "4", 200, 800))
    (step,) = built.transitions
    assert step.agent == semconv.DEFAULT_AGENT_NAME and bytes(step.response_token_ids) == b"4"


def test_steps_without_token_ids_are_counted_and_the_fix_is_named() -> None:
    built = _build(_root(), _client("2+2?", "4", 100, 900))
    (step,) = built.transitions
    assert step.token_ids_absent and list(step.response_token_ids) == []
    assert built.completed.status == SUCCEEDED  # the messages are good; the trainer decides (and says so)
    assert built.completed.steps_without_token_ids == 1
    assert "gateway" in built.completed.token_ids_note and "not trained on" in built.completed.token_ids_note


def _structured(key: str, value: list[dict]) -> KeyValue:
    """An OTLP array of kvlists (the structured form the conventions prefer for messages)."""

    def any_value(item, holder):
        if isinstance(item, dict):
            for k, v in item.items():
                entry = holder.kvlist_value.values.add(key=k)
                any_value(v, entry.value)
        elif isinstance(item, list):
            holder.array_value.SetInParent()
            for v in item:
                any_value(v, holder.array_value.values.add())
        else:
            holder.string_value = str(item)

    kv = KeyValue(key=key)
    any_value(value, kv.value)
    return kv


def test_structured_messages_build_transitions() -> None:
    client = _client("x", "y", 100, 900)
    del client.attributes[:]
    client.attributes.extend(
        [
            key_value(semconv.GEN_AI_OPERATION_NAME, "chat"),
            _structured(
                semconv.GEN_AI_INPUT_MESSAGES, [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
            ),
            _structured(
                semconv.GEN_AI_OUTPUT_MESSAGES, [{"role": "assistant", "parts": [{"type": "text", "content": "yo"}]}]
            ),
        ]
    )
    (step,) = _build(_root(), client).transitions
    assert json.loads(step.state_json)["messages"] == [{"role": "user", "content": "hi"}]
    assert json.loads(step.action_json) == {"role": "assistant", "content": "yo"}


def test_unreadable_messages_end_the_rollout_malformed_with_the_reason() -> None:
    for bad in ("{not json", json.dumps([1, 2]), json.dumps({"role": "user", "parts": 3})):
        broken = _client("x", "y", 100, 900)
        broken.attributes.append(key_value(semconv.GEN_AI_INPUT_MESSAGES, bad))  # the last value wins
        built = _build(_root(), broken)
        assert built.completed.status == MALFORMED, bad
        assert "unreadable messages" in built.completed.error_message
        assert built.completed.error_span_id == broken.span_id.hex()
        assert built.transitions == []


def test_an_evaluation_span_event_rewards_the_step_it_rates() -> None:
    first = _client("2+2?", "5", 100, 900)
    second = _client("3+3?", "6", 1000, 1900)
    rated = first.events.add(name="gen_ai.evaluation.result", time_unix_nano=5000)
    rated.attributes.extend(
        [key_value("gen_ai.evaluation.name", "correctness"), key_value("gen_ai.evaluation.score.value", -1.0)]
    )
    built = _build(_root(), first, second, credit="per_step")
    assert [t.reward for t in built.transitions] == [-1.0, 0.0]
    assert built.completed.has_reward and built.completed.total_reward == -1.0


_KEYS = [
    "openinference.span.kind",
    "llm.input_messages.0.message.role",
    "llm.input_messages.0.message.content",
    "llm.input_messages.0.message.tool_calls.0.tool_call.function.arguments",
    "llm.input_messages.1",
    "llm.output_messages.0.message.contents.0.message_content.text",
    "llm.tools.0.tool.json_schema",
    "gen_ai.operation.name",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
    "gen_ai.response.finish_reasons",
    "gen_ai.prompt.0.role",
    "gen_ai.completion.0.tool_calls.0.arguments",
    "llm.request.type",
    "metadata",
    semconv.SPAN_KIND,
    semconv.PROMPT_TOKEN_IDS,
    semconv.LLM_SOURCE,
]


def _values():
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.sampled_from(["LLM", "chat", "llm", "gateway", "[1]", '[{"role": "user", "parts": 3}]', "{", "[]"]),
        st.text(max_size=8),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=True),
        st.booleans(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
        max_leaves=8,
    )


def test_any_dialect_input_ends_in_a_status_never_an_exception() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.sampled_from(_KEYS), _values(), max_size=8))
    def check(found: dict) -> None:
        span = _span("chat stub", {}, 100, 900)
        span.attributes.extend(
            _structured(key, value) if isinstance(value, (list, dict)) else key_value(key, value)
            for key, value in found.items()
        )
        built = _build(_root(), span)
        assert built.completed.status in (SUCCEEDED, MALFORMED)

    check()
