"""Helpers for tests through verl's own code (verl is installed with the dev extra)."""

from __future__ import annotations

from types import SimpleNamespace

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

from otel_lightning.train.tokenizer import ByteChatTokenizer
from otel_lightning.v1 import transitions_pb2 as pb


def padding_tokenizer() -> PreTrainedTokenizerFast:
    """A Hugging Face tokenizer over ByteChatTokenizer's ids: verl pads with `tokenizer.pad`."""
    byte_chat = ByteChatTokenizer()
    vocab = {f"<{index}>": index for index in range(byte_chat.vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0>"))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=f"<{byte_chat.pad_id}>")


def close_the_loop_verl_took(agent_loop: object) -> None:
    """verl's AgentLoopBase keeps `get_event_loop()` from its constructor. verl builds agent loops inside
    its worker's running loop; these tests build them outside one, so that is a new loop no test runs
    (each runs the agent loop under `asyncio.run`). Closed here: left to the garbage collector, it may
    have its self-pipe closed before it ("Invalid file descriptor: -1")."""
    loop = getattr(agent_loop, "loop", None)
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()


def postprocessing_worker(prompt_length: int, response_length: int) -> AgentLoopWorker:
    """verl's AgentLoopWorker with just what its post-processing reads (no Ray, no LLM servers)."""
    worker = object.__new__(AgentLoopWorker)
    worker.rollout_config = SimpleNamespace(prompt_length=prompt_length, response_length=response_length)
    worker.tokenizer = padding_tokenizer()
    worker.processor = None
    worker.reward_loop_worker_handles = None
    worker.distillation_enabled = False
    worker.mm_processor_kwargs = {}
    return worker


def transition(step: int, prompt: list[int], response: list[int], rollout_id: str = "r1") -> pb.Transition:
    return pb.Transition(
        rollout_id=rollout_id,
        task_id="t1",
        step=step,
        agent="calc",
        state_json='{"messages": [{"role": "user", "content": "q"}]}',
        prompt_token_ids=prompt,
        response_token_ids=response,
        response_logprobs=[-0.5] * len(response),
        policy_version="3",
    )
