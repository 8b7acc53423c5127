"""The two-agent loop (examples/calc_agent/two_agents.py) in one process, without the servers: for trying
learning rates and KL weights in a minute or two instead of a quarter of an hour.

The same policy, warm start, prompts (tokenizer.encode_prompt as the policy server builds them), adapters
and GRPOTrainer as `train.py --app triage --policy-per-agent`; the agents' turns are generated in lockstep
batches per agent instead of through HTTP, and rollouts go straight to the trainer instead of through the
collector. Besides rewards it counts what each agent got right, which is what explains a collapse:

    handoff   triage handed the question off          expr_ok  ...with the question's expression
    mcall     math called the calculator              copy_ok  ...and repeated its result exactly

    python benchmarks/two_agents_inprocess.py --lr 2e-3 --kl-to-base 0.1 --steps 30
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.calc_agent import two_agents
from examples.calc_agent.agent import calculator
from examples.calc_agent.tasks import make_tasks
from otel_lightning.train.adapters import LoraSettings
from otel_lightning.train.policies import build_policy
from otel_lightning.train.policy import Generation, GenerationRequest, TorchPolicy
from otel_lightning.train.sft import warm_start
from otel_lightning.train.trainer import GRPOTrainer, RolloutRecord, TrainerConfig, rollout_stats
from otel_lightning.v1 import transitions_pb2 as pb

MAX_TOKENS = 24  # two_agents.ask's default
COUNTS = ("handoff", "expr_ok", "mcall", "copy_ok")


def generate(policy: TorchPolicy, prompts: list[list[int]], agent: str, rng: random.Random) -> list[Generation]:
    requests = [GenerationRequest(p, MAX_TOKENS, 1.0, rng.randrange(1 << 30), agent) for p in prompts]
    return [g for i in range(0, len(requests), 64) for g in policy.generate_batch(requests[i : i + 64])[0]]


def run_groups(
    policy: TorchPolicy, tasks: list[tuple[str, dict[str, Any]]], group_size: int, rng: random.Random, counts: dict
) -> dict[str, list[RolloutRecord]]:
    """Every task `group_size` times through triage -> (math -> calculator -> math), as two_agents.run does."""
    tokenizer = policy.tokenizer
    rows = [(task_id, task, index) for task_id, task in tasks for index in range(group_size)]
    turns: dict[int, list[tuple[str, list[int], Generation]]] = {k: [] for k in range(len(rows))}
    answers: dict[int, str] = {}

    triage = [[{"role": "system", "content": "triage"}, {"role": "user", "content": t["question"]}] for _, t, _ in rows]
    prompts = [tokenizer.encode_prompt(m, "transfer_to_math") for m in triage]
    handed, expressions = [], []
    for k, (prompt, generation) in enumerate(zip(prompts, generate(policy, prompts, "triage", rng), strict=True)):
        turns[k].append(("triage", prompt, generation))
        text, calls = tokenizer.parse_completion(generation.token_ids, "transfer_to_math")
        if not calls:
            answers[k] = text
            continue
        expression = calls[0].argument if calls[0].name == "transfer_to_math" else ""
        counts["handoff"] += 1
        counts["expr_ok"] += expression == rows[k][1]["question"].removeprefix("What is ").removesuffix("?")
        handed.append(k)
        expressions.append(expression)

    math = [[{"role": "system", "content": "math"}, {"role": "user", "content": f"What is {e}?"}] for e in expressions]
    prompts = [tokenizer.encode_prompt(m, "calculator") for m in math]
    called, after_call = [], []
    for k, messages, prompt, generation in zip(
        handed, math, prompts, generate(policy, prompts, "math", rng), strict=True
    ):
        turns[k].append(("math", prompt, generation))
        text, calls = tokenizer.parse_completion(generation.token_ids, "calculator")
        if not calls:
            answers[k] = text
            continue
        counts["mcall"] += 1
        arguments = json.dumps({"expression": calls[0].argument})
        call = {"id": "c", "type": "function", "function": {"name": calls[0].name, "arguments": arguments}}
        assistant: dict[str, Any] = {"role": "assistant", "tool_calls": [call], **({"content": text} if text else {})}
        called.append(k)
        result = {"role": "tool", "tool_call_id": "c", "content": calculator(arguments)}
        after_call.append([*messages, assistant, result])

    prompts = [tokenizer.encode_prompt(m, "calculator") for m in after_call]
    for k, messages, prompt, generation in zip(
        called, after_call, prompts, generate(policy, prompts, "math", rng), strict=True
    ):
        turns[k].append(("math", prompt, generation))
        answers[k] = tokenizer.parse_completion(generation.token_ids, "calculator")[0]
        counts["copy_ok"] += answers[k].strip() == messages[-1]["content"]

    groups: dict[str, list[RolloutRecord]] = {}
    for k, (task_id, task, index) in enumerate(rows):
        reward = float(answers[k].strip() == task["answer"])  # agent.correct; every turn gets it (final_to_all)
        rollout_id = f"{task_id}-{index}"
        transitions = [
            pb.Transition(
                rollout_id=rollout_id,
                task_id=task_id,
                agent=agent,
                reward=reward,
                prompt_token_ids=prompt,
                response_token_ids=generation.token_ids,
                response_logprobs=generation.logprobs,
            )
            for agent, prompt, generation in turns[k]
        ]
        groups.setdefault(task_id, []).append(RolloutRecord(rollout_id, task_id, "succeeded", reward, transitions))
    return groups


def evaluate(policy: TorchPolicy, heldout: list, rng: random.Random) -> dict[str, Any]:
    """Held-out reward, two samples per task as train.py's headline figure, per agent as rollout_stats."""
    counts = dict.fromkeys(COUNTS, 0)
    records = [r for members in run_groups(policy, heldout, 2, rng, counts).values() for r in members]
    stats = rollout_stats(records)
    agents = {name: round(figures["reward_mean"], 2) for name, figures in stats["agents"].items()}
    return {"reward": round(stats["mean_reward"], 3), "agents": agents, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-start-steps", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kl-to-base", type=float, default=0.1)
    parser.add_argument("--tasks-per-step", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--cache", default="runs/two_agents_inprocess", help="warm-started weights are kept here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as train.py does for the tiny model

    policy = build_policy("tiny", seed=args.seed)
    cache = Path(args.cache) / f"warm-seed{args.seed}-steps{args.warm_start_steps}.pt"
    if cache.exists():
        policy.model.load_state_dict(torch.load(cache, weights_only=True))
    else:
        started = time.perf_counter()
        examples = two_agents.demonstrations(policy.tokenizer, 4000, args.seed)
        loss = warm_start(policy, examples, steps=args.warm_start_steps, lr=3e-3, seed=args.seed)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(policy.model.state_dict(), cache)
        print(f"warm start: {time.perf_counter() - started:.0f}s, loss {loss:.3f}", flush=True)
    policy.lora_settings = LoraSettings(rank=args.rank, alpha=args.alpha)
    rng = random.Random(args.seed)
    heldout = make_tasks(100, seed=10_000 + args.seed, prefix="heldout")
    print("held-out before:", evaluate(policy, heldout, rng), flush=True)

    trainer = GRPOTrainer(policy, TrainerConfig(lr=args.lr, kl_to_base=args.kl_to_base), policy_per_agent=True)
    started = time.perf_counter()
    for step in range(args.steps):
        counts = dict.fromkeys(COUNTS, 0)
        tasks = make_tasks(args.tasks_per_step, seed=args.seed * 1000 + step, prefix=f"train-{step}")
        stats = trainer.step(run_groups(policy, tasks, args.group_size, rng, counts))
        agents = {
            name: {"reward": round(f["reward_mean"], 2), "kl_to_base": round(f.get("kl_to_base", 0.0), 3)}
            for name, f in stats["agents"].items()
        }
        print(f"step {step}: reward {stats['mean_reward']:.2f} {counts} {agents}", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            figures = evaluate(policy, heldout, rng)
            print(f"held-out after {step + 1} steps ({time.perf_counter() - started:.0f}s):", figures, flush=True)


if __name__ == "__main__":
    main()
