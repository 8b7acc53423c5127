"""Whether and how much content (prompts, completions, tool inputs and outputs) goes on spans."""

from __future__ import annotations

import json
import os
from typing import Any

from otel_lightning import semconv

# Tool inputs and outputs longer than this are cut (LLM messages are kept whole: they are the state).
MAX_TOOL_CONTENT_CHARS = 16_384


def capture_content_enabled() -> bool:
    """False when LIGHTNING_CAPTURE_CONTENT is off: prompts may hold private data."""
    return os.environ.get(semconv.ENV_CAPTURE_CONTENT, "true").strip().lower() not in ("0", "false", "no", "off")


def bounded(value: Any, limit: int = MAX_TOOL_CONTENT_CHARS) -> str:
    """`value` as text (JSON where it is not a string), cut to `limit` characters with a marker."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else f"{text[:limit]}…[{len(text) - limit} more characters]"
