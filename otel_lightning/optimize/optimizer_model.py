"""Talking to the optimiser model: show it the worst rollouts, read back a critique and edited prompts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from otel_lightning.optimize.results import RolloutResult, transition_view

_PROMPT = re.compile(r"<prompt>(.*?)</prompt>", re.DOTALL | re.IGNORECASE)
# What one rollout may take of the optimiser's context (characters per message shown).
MAX_FIELD_CHARS = 1200

INSTRUCTIONS = """You improve the system prompt of an AI agent.
You are shown the current system prompt and the agent's worst rollouts on training tasks: every model call of
every turn (the messages the agent's model saw, what it answered, the tools it called and their results), and
the reward each rollout earned (higher is better; failed rollouts say why they failed).
Answer with a short critique of what went wrong and why, then {branch} improved system prompts, each between
<prompt> and </prompt>. Each prompt is used as the agent's whole system prompt; keep what works."""


class OptimizerError(RuntimeError):
    """The optimiser could not be asked, or its answer holds no usable prompt."""


@dataclass
class Proposal:
    critique: str
    prompts: list[str]
    raw: str


def parse_proposal(text: str, branch: int) -> Proposal:
    """Critique (the text outside the tags) and up to `branch` distinct non-empty prompts."""
    prompts: list[str] = []
    for found in _PROMPT.findall(text):
        prompt = found.strip()
        if prompt and prompt not in prompts:
            prompts.append(prompt)
    if not prompts:
        shown = " ".join(text.split())[:200]
        raise OptimizerError(f"the optimiser's answer has no <prompt>...</prompt> with text in it: {shown!r}")
    critique = _PROMPT.sub("", text).strip()
    return Proposal(critique, prompts[:branch], text)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + f"… ({len(text)} characters)"


def describe_rollout(index: int, result: RolloutResult, task_input: Any) -> str:
    """One rollout as the optimiser reads it: the task, outcome, and each model call (new messages only)."""
    reward = "not scored" if result.reward is None else f"{result.reward:g}"
    lines = [f"### Rollout {index}: task {result.task_id}, status {result.status}, reward {reward}"]
    lines.append(f"Task input: {_short(task_input)}")
    if result.error:
        lines.append(f"Error: {_short(result.error)}")
    shown = 0  # messages of the conversation already shown (each call's state repeats the earlier ones)
    for transition in sorted(result.transitions, key=lambda t: t.step):
        view = transition_view(transition)
        messages = (view["state"] or {}).get("messages", []) if isinstance(view["state"], dict) else []
        new = messages[shown:] if len(messages) >= shown else messages
        shown = len(messages) + 1
        lines.append(f"Model call {view['step']} (agent {view['agent'] or 'default'}, step reward {view['reward']:g}):")
        for message in new:
            if isinstance(message, dict):
                lines.append(f"  [{message.get('role', '?')}] {_short(_content(message))}")
        lines.append(f"  [answer] {_short(_content(view['action']) if isinstance(view['action'], dict) else '')}")
    if not result.transitions:
        lines.append("(no model call was recorded)")
    return "\n".join(lines)


def _content(message: dict[str, Any]) -> str:
    parts = []
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") or p.get("content", "") for p in content if isinstance(p, dict))
    if content:
        parts.append(str(content))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or call
        parts.append(f"calls tool {function.get('name')}({function.get('arguments')})")
    if message.get("role") == "tool" and not content:
        parts.append(json.dumps(message, ensure_ascii=False))
    return " ".join(parts) or "(empty)"


def build_request(prompt: str, rollouts: list[str], branch: int, model: str) -> dict[str, Any]:
    current = prompt or "(none: the agent runs with its own system prompt, if any)"
    user = f"Current system prompt:\n<current>\n{current}\n</current>\n\nWorst rollouts:\n\n" + "\n\n".join(rollouts)
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS.format(branch=branch)},
            {"role": "user", "content": user},
        ],
    }


def ask_optimizer(url: str, request: dict[str, Any], timeout_s: float = 120.0) -> str:
    """The optimiser's answer text; OptimizerError when it cannot be had."""
    try:
        response = httpx.post(f"{url.rstrip('/')}/chat/completions", json=request, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise OptimizerError(f"cannot reach the optimiser at {url}: {type(error).__name__}: {error}") from None
    if response.status_code != 200:
        raise OptimizerError(f"the optimiser at {url} answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        return response.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise OptimizerError(f"the optimiser at {url} answered no chat completion: {response.text[:200]!r}") from None
