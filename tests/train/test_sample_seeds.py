"""Requests without a seed sample the same tokens run after run, whatever order they arrive in."""

from __future__ import annotations

import openai

from otel_lightning.train.policies import build_policy
from otel_lightning.train.policy_server import PolicyServer
from otel_lightning.train.sample_seeds import SampleSeeds


def test_the_same_request_gets_a_new_seed_each_time_and_the_same_ones_in_any_order():
    first, second = SampleSeeds(), SampleSeeds()
    asked = [("math", [1, 2, 3]), ("triage", [1, 2, 3]), ("math", [1, 2, 3]), ("math", [4])]
    one = [first.next(1, agent, 1.0, prompt) for agent, prompt in asked]
    other = [second.next(1, agent, 1.0, prompt) for agent, prompt in reversed(asked)]
    assert len(set(one)) == 4  # repeated questions get different samples
    assert sorted(one) == sorted(other)  # the same set of seeds, whatever the order
    assert first.next(2, "math", 1.0, [1, 2, 3]) not in one  # a new policy version draws anew


def answers(order: list[str]) -> dict[str, list[str]]:
    """Each question's sampled answers from a fresh server on the same checkpoint, asked in `order`."""
    found: dict[str, list[str]] = {}
    with PolicyServer(build_policy("tiny", hidden=32, layers=1, seed=1)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        for question in order:
            reply = client.chat.completions.create(
                model="policy", messages=[{"role": "user", "content": question}], max_tokens=8
            )
            found.setdefault(question, []).append(reply.choices[0].message.content or "")
    return found


def test_two_runs_asking_in_different_orders_sample_the_same_answers():
    order = ["2+3?", "2+3?", "2+3?", "7*6?", "7*6?"]
    one, other = answers(order), answers(list(reversed(order)))
    assert {q: sorted(a) for q, a in one.items()} == {q: sorted(a) for q, a in other.items()}
    assert len(set(one["2+3?"])) > 1 or len(set(one["7*6?"])) > 1  # sampled, not one fixed answer
