"""Policies as Hugging Face model folders: what `save_pretrained` writes, so any HF tool can read them.

    folder/config.json, model.safetensors     the base model (no LoRA layers), AutoModelForCausalLM loads it
    folder/tokenizer.json, tokenizer_config…  AutoTokenizer loads it (the byte tokenizer as a real fast tokenizer)
    folder/adapters/                          each agent's LoRA adapter (adapters.save_adapters), if any
    folder/otel_lightning.json                the policy's name and version, and which chat tokenizer to use

`load_hf_policy` reads such a folder back, or any local HF causal-LM folder (then with its chat template).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otel_lightning.train.adapters import AGENTS_FILE, load_adapters, save_adapters
from otel_lightning.train.hf_chat import HFChatTokenizer
from otel_lightning.train.policy import TorchPolicy, resolve_dtype
from otel_lightning.train.tokenizer import SPECIAL_TOKENS, ByteChatTokenizer

METADATA_FILE = "otel_lightning.json"
ADAPTERS_FOLDER = "adapters"
BYTE_TOKENIZER = "byte"  # METADATA_FILE's "tokenizer": ByteChatTokenizer reads the folder (exact tool-call form)
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")

# ByteChatTokenizer.encode_prompt as a chat template. A tool call's argument is the first value of its
# arguments (a JSON string is written as it is: jinja cannot parse it), its name left out for the first tool.
BYTE_CHAT_TEMPLATE = (
    "{%- set default_tool = (tools[0].function.name if tools[0].function is defined else tools[0].name)"
    " if tools else none -%}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'assistant' -%}{{ '<assistant>' }}"
    "{%- elif message.role in ('system', 'developer') -%}{{ '<system>' }}"
    "{%- elif message.role == 'tool' -%}{{ '<tool>' }}"
    "{%- else -%}{{ '<user>' }}{%- endif -%}"
    "{%- if message.content is string -%}{{ message.content }}"
    "{%- elif message.content -%}"
    "{%- for part in message.content -%}{{ part.text if part.text is defined else '' }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- if message.role == 'assistant' -%}"
    "{%- for call in message.tool_calls or [] -%}"
    "{%- set function = call.function if call.function is defined else call -%}"
    "{%- set arguments = function.arguments -%}"
    "{%- if arguments is mapping -%}{%- set argument = (arguments.values() | list | first) if arguments else '' -%}"
    "{%- else -%}{%- set argument = arguments or '' -%}{%- endif -%}"
    "{{ '<call>' }}{{ argument if function.name == default_tool else function.name ~ ':' ~ argument }}"
    "{{ '</call>' }}"
    "{%- endfor -%}"
    "{{ '<eos>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<assistant>' }}{%- endif -%}"
)


def byte_hf_tokenizer() -> Any:
    """ByteChatTokenizer as a transformers fast tokenizer with the same ids: 0-255 bytes, 256+ SPECIAL_TOKENS.

    Two differences: a special token's name inside text is that token here, its bytes in ByteChatTokenizer;
    and AutoTokenizer loads a Qwen2 folder's tokenizer as Qwen2Tokenizer, which NFC-normalises text first
    (the same ids for text already in NFC, as nearly all is).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    # Byte-level BPE without merges: every byte is one token, under GPT-2's printable stand-in for it.
    vocab = {character: byte for byte, character in bytes_to_unicode().items()}
    vocab.update({name: 256 + index for index, name in enumerate(SPECIAL_TOKENS)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<eos>",
        pad_token="<pad>",
        # Qwen2Tokenizer would add its own "<|endoftext|>" as unk: id 264, past the model's embeddings.
        unk_token="<pad>",
        additional_special_tokens=[name for name in SPECIAL_TOKENS if name not in ("<eos>", "<pad>")],
        chat_template=BYTE_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def _base_model(policy: TorchPolicy) -> Any:
    """The transformers model under peft's wrapper (its LoRA layers still inside)."""
    return policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model


def save_hf_checkpoint(policy: TorchPolicy, folder: str | Path) -> Path:
    """Write `policy` as a Hugging Face model folder (see the module docstring); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with policy.lock:
        model = _base_model(policy)
        # Plain names without LoRA layers (as trainer._base_weights): what a model without peft loads.
        weights = {
            key.replace(".base_layer.", "."): value for key, value in model.state_dict().items() if ".lora_" not in key
        }
        model.save_pretrained(str(folder), state_dict=weights)
        if isinstance(policy.tokenizer, ByteChatTokenizer):
            byte_hf_tokenizer().save_pretrained(str(folder))
            tokenizer = BYTE_TOKENIZER
        elif isinstance(policy.tokenizer, HFChatTokenizer):
            policy.tokenizer.tokenizer.save_pretrained(str(folder))
            tokenizer = "hf"
        else:
            raise TypeError(f"cannot save a {type(policy.tokenizer).__name__} as a Hugging Face tokenizer")
        if policy.adapters:
            save_adapters(policy, folder / ADAPTERS_FOLDER)
        metadata = {
            "name": policy.name,
            "version": policy.version,
            "tokenizer": tokenizer,
            # Named, so that an adapters folder left from an earlier save into this folder is not loaded.
            "adapters": ADAPTERS_FOLDER if policy.adapters else None,
        }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return folder


def _metadata(folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}  # a folder from elsewhere (the hub, another trainer)
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read: {error}") from error
    if not isinstance(metadata, dict):
        raise ValueError(f"{path} is not a JSON object (save_hf_checkpoint writes one)")
    return metadata


def check_model_directory(folder: str | Path) -> None:
    """Refuse, without loading weights, a folder that is not a local HF causal LM: one line says why."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING, AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"model directory {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: not a Hugging Face model folder (save_pretrained writes one)")
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{folder / 'config.json'} is not a model config transformers knows: {reason}") from error
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures:  # what save_pretrained recorded: the class the weights belong to
        names = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type) or ()
        names = (names,) if isinstance(names, str) else tuple(names)
        causal = any(name.endswith("ForCausalLM") or name in names for name in architectures)
    else:
        causal = type(config) in MODEL_FOR_CAUSAL_LM_MAPPING
        if type(config) in MODEL_FOR_MASKED_LM_MAPPING or getattr(config, "is_encoder_decoder", False):
            # BERT-style encoders have a causal-LM class too, but are a causal LM only with is_decoder set.
            causal = causal and bool(getattr(config, "is_decoder", False))
    if not causal:
        kind = ", ".join(architectures) or config.model_type
        raise ValueError(f"{folder} holds a {kind} model, not a causal language model (AutoModelForCausalLM)")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ValueError(f"{folder} has no weights (model.safetensors or pytorch_model.bin)")
    byte = _metadata(folder).get("tokenizer") == BYTE_TOKENIZER
    if not byte and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{folder} has no tokenizer (tokenizer.json or tokenizer_config.json)")


def load_hf_policy(folder: str | Path, *, device: str = "cpu", dtype: str | None = None) -> TorchPolicy:
    """A policy from a Hugging Face model folder: its weights, its tokenizer (ByteChatTokenizer where
    save_hf_checkpoint marked it, else the folder's own with its chat template), adapters and version.

    dtype: "float32" (None), "bfloat16", "float16", or "auto" (bf16 on a CUDA device that has it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    metadata = _metadata(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=resolve_dtype(dtype, device))
    if metadata.get("tokenizer") == BYTE_TOKENIZER:
        tokenizer: ByteChatTokenizer | HFChatTokenizer = ByteChatTokenizer()
    else:
        tokenizer = HFChatTokenizer(AutoTokenizer.from_pretrained(str(folder)))
    policy = TorchPolicy(model, tokenizer, name=folder.resolve().name)
    # A folder from elsewhere has no metadata: an adapters folder of save_adapters' form is taken as ours.
    found = ADAPTERS_FOLDER if (folder / ADAPTERS_FOLDER / AGENTS_FILE).is_file() else None
    adapters = metadata.get("adapters") if metadata else found
    if adapters:
        load_adapters(policy, folder / adapters)
    policy.version = int(metadata.get("version", 0))
    policy.to(device)
    return policy
