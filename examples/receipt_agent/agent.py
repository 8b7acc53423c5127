"""A receipt agent: plain OpenAI client code with one tool, nothing of otel-lightning in it.

    echo '{"items": [{"name": "apple", "qty": 3, "price": 4}]}' | OPENAI_BASE_URL=http://HOST/v1 python agent.py

It reads a receipt (JSON on stdin), asks the model for the total with a calculator tool, runs the tool
when asked, and prints the model's final answer. `otel-lightning train train.yaml` trains its model.
"""

import json
import os
import re
import sys

import openai

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression such as 3*4+2*5.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


def calculate(expression: str) -> str:
    if not re.fullmatch(r"[\d+\-*/(). ]+", expression):
        return "error: only numbers and + - * / ( )"
    try:
        return str(eval(expression, {"__builtins__": {}}))
    except (SyntaxError, ZeroDivisionError) as error:
        return f"error: {error}"


def main() -> None:
    receipt = json.load(sys.stdin)
    lines = ", ".join(f"{item['qty']} {item['name']} at {item['price']}" for item in receipt["items"])
    expression = "+".join(f"{item['qty']}*{item['price']}" for item in receipt["items"])
    client = openai.OpenAI(max_retries=0)
    messages = [{"role": "user", "content": f"Receipt: {lines}. What is the total ({expression})?"}]
    for _ in range(3):
        reply = client.chat.completions.create(
            model=os.environ.get("RECEIPT_MODEL", "policy"),
            messages=messages,
            tools=[CALCULATOR],
            max_tokens=int(os.environ.get("RECEIPT_MAX_TOKENS", "32")),
        )
        message = reply.choices[0].message
        if not message.tool_calls:
            print(message.content or "")
            return
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            arguments = json.loads(call.function.arguments or "{}")
            result = calculate(str(arguments.get("expression", "")))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    print("")


if __name__ == "__main__":
    main()
