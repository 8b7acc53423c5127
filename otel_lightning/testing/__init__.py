"""Helpers for trying otel-lightning offline: a local OpenAI-compatible stub server."""
