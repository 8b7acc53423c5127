"""A plain OpenAI-client agent for the optimisation tests: no system prompt, one calculator tool.

Reads the task ({"question": ...}) on stdin, prints its final answer. No otel-lightning code.
"""

from __future__ import annotations

import json
import sys

import openai

from otel_lightning.testing.arithmetic import calculator

TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


def main() -> None:
    task = json.load(sys.stdin)
    client = openai.OpenAI(max_retries=0)
    messages = [{"role": "user", "content": task["question"]}]
    for _ in range(3):
        reply = client.chat.completions.create(model="stub", messages=messages, tools=[TOOL]).choices[0].message
        if not reply.tool_calls:
            print(reply.content)
            return
        messages.append(reply.model_dump(exclude_none=True))
        for call in reply.tool_calls:
            result = calculator(json.loads(call.function.arguments)["expression"])
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    print("no answer")


if __name__ == "__main__":
    main()
