"""Training: the embedded GRPO trainer, the tiny default policy and its OpenAI-compatible server.

Needs the `train` extra (`pip install 'otel-lightning[train]'`): torch, transformers, fastapi, uvicorn.
"""
