"""Whether and how much content (prompts, completions, tool inputs and outputs) goes on spans."""

from __future__ import annotations

import functools
import json
import os
import re
from typing import Any

from otel_lightning import semconv

# Tool inputs and outputs longer than this are cut (LLM messages are kept whole: they are the state).
MAX_TOOL_CONTENT_CHARS = 16_384


def capture_content_enabled() -> bool:
    """False when LIGHTNING_CAPTURE_CONTENT is off: prompts may hold private data."""
    return os.environ.get(semconv.ENV_CAPTURE_CONTENT, "true").strip().lower() not in ("0", "false", "no", "off")


REDACTED = "[REDACTED]"


@functools.lru_cache(maxsize=4)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


def redaction_pattern() -> re.Pattern[str] | None:
    """LIGHTNING_REDACT_PATTERN, compiled: what to blank out of captured content (e.g. e-mail addresses)."""
    return _compiled(os.environ.get(semconv.ENV_REDACT_PATTERN, ""))


def redacted(value: Any) -> Any:
    """`value` with every match of LIGHTNING_REDACT_PATTERN in its strings replaced by [REDACTED]
    (dicts and lists walked, keys kept): JSON made from it stays valid JSON."""
    pattern = redaction_pattern()
    if pattern is None:
        return value
    return redact(value, pattern)


def redact(value: Any, pattern: re.Pattern[str]) -> Any:
    """`redacted` with a pattern already read (the gateway reads it once, not on every call)."""
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {key: redact(item, pattern) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, pattern) for item in value]
    return value


def bounded(value: Any, limit: int = MAX_TOOL_CONTENT_CHARS) -> str:
    """`value` as text (JSON where it is not a string), redacted, cut to `limit` characters with a marker."""
    value = redacted(value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else f"{text[:limit]}…[{len(text) - limit} more characters]"
