"""The gateway in front of our own policy server (which cannot stream; token ids always): with
`upstream_streams=False` streamed callers still get a stream, Responses callers their events, and each
span the policy's exact ids."""

from __future__ import annotations

import openai

from otel_lightning import semconv
from otel_lightning_gateway import Gateway
from tests.gateway.support import QUESTION, llm_spans


def test_streamed_and_responses_calls_to_the_policy_server(policy_server, gateway_provider, gateway_exporter):
    with Gateway(policy_server.base_url, tracer_provider=gateway_provider, upstream_streams=False) as gateway:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        plain = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8, temperature=0)
        chunks = list(
            client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8, temperature=0, stream=True)
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == plain.choices[0].message.content
        with client.responses.stream(model="tiny", input=QUESTION, max_output_tokens=8, temperature=0) as stream:
            events = list(stream)
        # Cut at max_output_tokens (the tiny policy rarely stops by itself): `incomplete`, as OpenAI says it.
        finished = plain.choices[0].finish_reason
        assert events[0].type == "response.created"
        assert events[-1].type == ("response.completed" if finished == "stop" else "response.incomplete")
        assert events[-1].response.output_text == plain.choices[0].message.content
    spans = llm_spans(gateway_exporter, 3)
    ids = [tuple(s.attributes[semconv.RESPONSE_TOKEN_IDS]) for s in spans]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) > 0  # greedy: the same ids each time, recorded exactly
    assert all(s.attributes[semconv.POLICY_VERSION] for s in spans)
    assert len({tuple(s.attributes[semconv.PROMPT_TOKEN_IDS]) for s in spans}) == 1
