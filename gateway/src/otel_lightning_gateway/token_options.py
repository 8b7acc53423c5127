"""Asking the upstream for token ids and logprobs, and taking back out what the caller did not ask for.

The caller gets the answer it would have had without the gateway: fields the gateway alone asked for
(vLLM's `prompt_token_ids` / `token_ids`, `logprobs`: null, as vLLM sends them when not asked; the
streamed usage chunk: dropped), everything
else passes through as the upstream sent it. A caller that asked for them itself gets them untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHAT = "chat.completions"
COMPLETIONS = "completions"


@dataclass(frozen=True)
class Asked:
    """What the caller itself asked for (so it is kept in the answer)."""

    token_ids: bool
    logprobs: bool
    usage: bool  # stream_options.include_usage

    @property
    def everything(self) -> bool:
        return self.token_ids and self.logprobs and self.usage


def ask_for_tokens(api: str, body: dict[str, Any]) -> Asked:
    """Add vLLM's `return_token_ids`, logprobs and (streamed) the usage chunk to `body`, in place;
    return what the caller had asked for."""
    stream_options = body.get("stream_options") or {}
    asked = Asked(
        token_ids=bool(body.get("return_token_ids")),
        logprobs=body.get("logprobs") not in (None, False),
        usage=bool(stream_options.get("include_usage")) or not body.get("stream"),
    )
    body["return_token_ids"] = True
    if not asked.logprobs:
        # chat: a flag; completions: how many top alternatives (1 keeps the sampled token's own).
        body["logprobs"] = True if api == CHAT else 1
    if body.get("stream") and not asked.usage:
        body["stream_options"] = {**stream_options, "include_usage": True}
    return asked


def strip(answer: dict[str, Any], asked: Asked) -> tuple[dict[str, Any] | None, bool]:
    """`answer` (a response or one streamed chunk of chat/completions) without what only the gateway
    asked for, and whether anything changed (if not, the upstream's bytes can go out as they came);
    None when the whole chunk goes (the usage chunk nobody asked for). `answer` itself is left as it
    is (the span reads it after the caller has its copy): what changes is copied."""
    choices = answer.get("choices")
    if not asked.usage and not choices and answer.get("usage") is not None:
        return None, True
    kept = dict(answer)
    changed = False
    # Set to null, not removed: vLLM names these fields (null) in answers that did not ask for them.
    if not asked.token_ids and answer.get("prompt_token_ids") is not None:
        kept["prompt_token_ids"] = None
        changed = True
    if isinstance(choices, list):
        kept_choices = [_strip_choice(choice, asked) for choice in choices]
        changed = changed or any(new is not old for new, old in zip(kept_choices, choices, strict=True))
        kept["choices"] = kept_choices
    return kept, changed


_ID_FIELDS = ("token_ids", "prompt_token_ids")


def _strip_choice(choice: Any, asked: Asked) -> Any:
    """The choice without token ids (completions carry the prompt's per choice) or logprobs the caller
    did not ask for: a copy if anything goes, else the choice itself."""
    if not isinstance(choice, dict):
        return choice
    dropped = [] if asked.token_ids else [key for key in _ID_FIELDS if choice.get(key) is not None]
    if not asked.logprobs and choice.get("logprobs") is not None:
        dropped.append("logprobs")
    return {**choice, **dict.fromkeys(dropped)} if dropped else choice
