"""The default policy model: a randomly initialised tiny Qwen2, built in code (no download)."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from otel_lightning.train.tokenizer import ByteChatTokenizer


def tiny_qwen2(tokenizer: ByteChatTokenizer, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Qwen2ForCausalLM:
    """A Qwen2 of ~0.1-2 M parameters (hidden 64, 2 layers: ~0.1 M) over the byte tokenizer."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_id,
        eos_token_id=tokenizer.eos_id,
        bos_token_id=tokenizer.eos_id,
    )
    model = Qwen2ForCausalLM(config)
    model.eval()
    return model


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
