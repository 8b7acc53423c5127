"""Candidates: what the model gateway changes about an agent's model calls, one named set at a time.

A candidates file (YAML)::

    candidates:
      - name: base
        base_url: http://127.0.0.1:8000/v1        # any OpenAI-compatible upstream
        model: Qwen/Qwen2.5-0.5B-Instruct          # replaces the model the agent asks for
      - name: careful-prompt
        base_url: http://127.0.0.1:8000/v1
        system_prompt: {mode: replace, text: "You are careful: check before you answer."}
        temperature: 0.7                            # also top_p, max_tokens
      - name: trained
        policy: runs/calc_agent/checkpoint.pt       # served by our policy server (started for the run)

`system_prompt.mode`: `replace` (the agent's system prompt becomes `text`), `prepend` (`text`, a blank
line, then the agent's), or `sub` (`re.sub(pattern, text, agent's prompt)`: only agents whose prompt
matches change, so each agent of a multi-agent app can get its own). An agent with no system prompt
gets one (for `sub`: when `pattern` matches the empty string).

`rewrite(endpoint, body)` applies a candidate to one request body, a pure function the gateway calls.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"


class CandidateError(ValueError):
    """A candidates file that cannot be used; the message names the candidate and the field."""


class SystemPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["replace", "prepend", "sub"] = "replace"
    text: str
    pattern: str | None = None

    @model_validator(mode="after")
    def _pattern_for_sub(self) -> SystemPrompt:
        if self.mode == "sub":
            if not self.pattern:
                raise ValueError("mode 'sub' needs a `pattern` (a regular expression)")
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {error}") from None
        elif self.pattern is not None:
            raise ValueError(f"`pattern` is only for mode 'sub', not {self.mode!r}")
        return self

    def apply(self, current: str | None) -> str | None:
        """The new system prompt given the agent's (None: it has none); None: leave it without one."""
        if self.mode == "replace":
            return self.text
        if self.mode == "prepend":
            return f"{self.text}\n\n{current}" if current else self.text
        assert self.pattern is not None
        given = current or ""
        if not re.search(self.pattern, given):
            return current
        return re.sub(self.pattern, lambda _: self.text, given)


class PolicyCheckpoint(BaseModel):
    """A checkpoint of our trainer (GRPOTrainer.save), served by an in-process policy server."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: Path
    model: Literal["tiny", "smollm2"] = "tiny"
    # tiny: read from the checkpoint's weights when not given.
    hidden: int | None = None
    layers: int | None = None


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    base_url: str | None = None
    policy: PolicyCheckpoint | None = None
    model: str | None = None
    system_prompt: SystemPrompt | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, gt=0)

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_path(cls, value: Any) -> Any:
        return {"checkpoint": value} if isinstance(value, (str, Path)) else value

    @field_validator("system_prompt", mode="before")
    @classmethod
    def _prompt_text(cls, value: Any) -> Any:
        return {"mode": "replace", "text": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_upstream(self) -> Candidate:
        if (self.base_url is None) == (self.policy is None):
            raise ValueError("give exactly one of `base_url` (an OpenAI-compatible server) or `policy` (a checkpoint)")
        if self.base_url is not None and not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        return self

    def rewrite(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return rewrite(self, endpoint, body)


def parse_candidates(data: Any, source: str = "candidates") -> list[Candidate]:
    """Candidates from parsed YAML/JSON (`{"candidates": [...]}` or a bare list); CandidateError names the bad one."""
    entries = data.get("candidates") if isinstance(data, dict) else data
    if isinstance(data, dict) and set(data) - {"candidates"}:
        raise CandidateError(
            f"{source}: unknown top-level key(s) {sorted(set(data) - {'candidates'})}; expected 'candidates'"
        )
    if not isinstance(entries, list) or not entries:
        raise CandidateError(f"{source}: expected a non-empty list under 'candidates'")
    candidates: list[Candidate] = []
    for index, entry in enumerate(entries, start=1):
        label = f"candidate #{index}"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label = f"candidate {entry['name']!r} (#{index})"
        if not isinstance(entry, dict):
            raise CandidateError(f"{source}: {label}: expected a mapping of fields, got {type(entry).__name__}")
        try:
            candidates.append(Candidate.model_validate(entry))
        except ValidationError as error:
            raise CandidateError(f"{source}: {label}: {_describe(error)}") from None
    names = [c.name for c in candidates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CandidateError(f"{source}: candidate names must be unique; repeated: {', '.join(duplicates)}")
    return candidates


def load_candidates(path: str | Path) -> list[Candidate]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CandidateError(f"cannot read candidates file {path}: {error}") from None
    candidates = parse_candidates(data, str(path))
    for candidate in candidates:  # checkpoints are relative to the file, as a reader of it expects
        if candidate.policy is not None and not candidate.policy.checkpoint.is_absolute():
            candidate.policy.checkpoint = (path.parent / candidate.policy.checkpoint).resolve()
    return candidates


def _describe(error: ValidationError) -> str:
    fields = ", ".join(Candidate.model_fields)
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(candidate)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r} (known fields: {fields})")
        else:
            parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


# --- applying a candidate to a request ------------------------------------------------------------

_SYSTEM_ROLES = ("system", "developer")


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _rewrite_messages(messages: list[Any], prompt: SystemPrompt) -> list[Any]:
    """Chat messages (or Responses `input` items) with the system prompt applied to each system message,
    or one added in front when there is none."""
    found = False
    out = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") in _SYSTEM_ROLES:
            found = True
            new = prompt.apply(_text(message.get("content")))
            message = {**message, "content": new if new is not None else message.get("content")}
        out.append(message)
    if not found:
        new = prompt.apply(None)
        if new is not None:
            out.insert(0, {"role": "system", "content": new})
    return out


def rewrite(candidate: Candidate, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` of a request to `endpoint` (a path ending in chat/completions, completions or responses)
    as `candidate` would send it: its model, system prompt and sampling parameters. `body` is not changed."""
    body = copy.deepcopy(body)
    path = endpoint.rstrip("/")
    chat, responses = path.endswith("chat/completions"), path.endswith("responses")
    completions = path.endswith("completions") and not chat
    if not (chat or responses or completions):
        return body
    if candidate.model is not None:
        body["model"] = candidate.model
    if candidate.temperature is not None:
        body["temperature"] = candidate.temperature
    if candidate.top_p is not None:
        body["top_p"] = candidate.top_p
    if candidate.max_tokens is not None:
        if responses:
            body["max_output_tokens"] = candidate.max_tokens
        elif chat and "max_completion_tokens" in body:
            body["max_completion_tokens"] = candidate.max_tokens
        else:
            body["max_tokens"] = candidate.max_tokens
    prompt = candidate.system_prompt
    if prompt is None:
        return body
    if chat:
        body["messages"] = _rewrite_messages(list(body.get("messages") or []), prompt)
    elif responses:
        given = body.get("input")
        in_input = isinstance(given, list) and any(
            isinstance(item, dict) and item.get("role") in _SYSTEM_ROLES for item in given
        )
        if in_input and body.get("instructions") is None:
            body["input"] = _rewrite_messages(given, prompt)
        else:
            new = prompt.apply(body.get("instructions"))
            if new is not None:
                body["instructions"] = new
    else:
        # The legacy completions API has no system prompt: replace and prepend put the text before the
        # prompt, sub edits the prompt itself.
        given = body.get("prompt")
        if isinstance(given, str):
            body["prompt"] = prompt.apply(given) if prompt.mode == "sub" else f"{prompt.text}\n\n{given}"
    return body
