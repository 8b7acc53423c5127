"""Flattened attribute keys (`llm.input_messages.0.message.role`) back into nested lists and dicts."""

from __future__ import annotations

from typing import Any


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(key, int) for key in node):
        return [_listify(node[index]) for index in sorted(node)]
    return {key: _listify(value) for key, value in node.items()}


def unflatten(attributes: dict[str, Any], prefix: str) -> list[Any]:
    """The list under `prefix` (e.g. `llm.input_messages.`): numeric key parts are list indices, in
    index order (gaps closed up); other parts are dict keys. [] when no key has the prefix."""
    root: dict[Any, Any] = {}
    for key, value in attributes.items():
        if not key.startswith(prefix):
            continue
        node = root
        parts = [int(part) if part.isdigit() else part for part in key[len(prefix) :].split(".")]
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    result = _listify(root)
    return result if isinstance(result, list) else []


def has_prefix(attributes: dict[str, Any], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in attributes)
