"""A plain OpenAI-client agent. The only otel-lightning code: a reward function and the rollout scope.

Run it under `opentelemetry-instrument` (see README.md beside this file); the OpenAI instrumentor
is picked up automatically and every LLM call becomes a span with token ids.
"""

from __future__ import annotations

import os

import openai

import otel_lightning as ol

QUESTIONS = [
    ("What is 12*7?", "84"),
    ("What is 230+45?", "275"),
    ("What is 9-14?", "-5"),
    ("What is the capital of France?", "Paris"),
]


@ol.reward
def correct(answer: str, expected: str) -> float:
    return float(expected in answer)


def answer(client: openai.OpenAI, question: str) -> str:
    reply = client.chat.completions.create(
        model=os.environ.get("QUICKSTART_MODEL", "stub"),
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}],
    )
    return reply.choices[0].message.content or ""


def main() -> None:
    client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment
    for index, (question, expected) in enumerate(QUESTIONS):
        with ol.rollout(task_id=f"quickstart-{index}"):
            reply = answer(client, question)
            print(f"{question} -> {reply} (reward {correct(reply, expected):g})")


if __name__ == "__main__":
    main()
