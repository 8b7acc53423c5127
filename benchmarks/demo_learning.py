"""Why the demo learns as fast as it does: its policy, warm start, agent logic, reward and GRPO trainer in one
process, without the servers (seconds per GRPO step instead of the demo's several), to try settings quickly.

Prints after the warm start what its policy does on held-out questions (first turns calling the calculator,
expressions copied right, results repeated right after a calculator reply, direct answers right), then the
held-out reward (two samples per question, as the demo's headline; greedy beside it) before and after GRPO.

    python benchmarks/demo_learning.py --seed 1 [--warm-start-steps 2500] [--steps 12 --tasks 16 --group 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.calc_agent.tasks import demonstrations, heldout_tasks, make_tasks
from otel_lightning.testing.arithmetic import evaluate, format_number
from otel_lightning.train.policies import build_policy
from otel_lightning.train.policy import GenerationRequest, TorchPolicy
from otel_lightning.train.sft import warm_start
from otel_lightning.train.trainer import GRPOTrainer, RolloutRecord, TrainerConfig
from otel_lightning.v1 import transitions_pb2 as pb

TOOL = "calculator"
MAX_TOKENS = 24  # the agent's CALC_AGENT_MAX_TOKENS


class Rollouts:
    """The calc agent's two turns (answer, or call the calculator and answer after its reply), batched."""

    def __init__(self, policy: TorchPolicy) -> None:
        self.policy = policy
        self.tokenizer = policy.tokenizer
        self.calls = 0

    def _generate(self, prompts: list[list[int]]) -> list[Any]:
        self.calls += 1
        requests = [GenerationRequest(p, MAX_TOKENS, 1.0, self.calls * 100_000 + i) for i, p in enumerate(prompts)]
        return self.policy.generate_batch(requests)[0]

    def run(self, tasks: list[tuple[str, dict]], samples: int, greedy: bool = False) -> dict[str, list]:
        self.policy.greedy = greedy
        try:
            items = [(task_id, task) for task_id, task in tasks for _ in range(samples)]
            conversations = [[{"role": "user", "content": task["question"]}] for _, task in items]
            prompts = [self.tokenizer.encode_prompt(c, TOOL) for c in conversations]
            firsts = self._generate(prompts)
            steps = [
                [pb.Transition(prompt_token_ids=p, response_token_ids=g.token_ids, response_logprobs=g.logprobs)]
                for p, g in zip(prompts, firsts, strict=True)
            ]
            answers: list[str] = [""] * len(items)
            seconds: list[tuple[int, list[int]]] = []
            for index, generation in enumerate(firsts):
                text, calls = self.tokenizer.parse_completion(generation.token_ids, TOOL)
                if not calls:
                    answers[index] = text
                    continue
                try:
                    result = format_number(evaluate(calls[0].argument))
                except ValueError as error:
                    result = f"error: {error}"
                call = {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": TOOL, "arguments": {"expression": calls[0].argument}}}],
                }
                conversation = [*conversations[index], call, {"role": "tool", "content": result}]
                seconds.append((index, self.tokenizer.encode_prompt(conversation, TOOL)))
            if seconds:
                for (index, prompt), generation in zip(seconds, self._generate([p for _, p in seconds]), strict=True):
                    answers[index] = self.tokenizer.parse_completion(generation.token_ids, TOOL)[0]
                    steps[index].append(
                        pb.Transition(
                            prompt_token_ids=prompt,
                            response_token_ids=generation.token_ids,
                            response_logprobs=generation.logprobs,
                        )
                    )
        finally:
            self.policy.greedy = False
        groups: dict[str, list] = {}
        for index, (task_id, task) in enumerate(items):
            reward = float(answers[index].strip() == task["answer"])
            groups.setdefault(task_id, []).append(
                RolloutRecord(f"r{index}", task_id, "succeeded", reward, steps[index])
            )
        return groups


def mean_reward(groups: dict[str, list]) -> float:
    rewards = [record.reward for members in groups.values() for record in members]
    return sum(rewards) / max(len(rewards), 1)


def skills(policy: TorchPolicy, tasks: list[tuple[str, dict]]) -> dict[str, float]:
    """Sampled first turns: share calling the calculator, expressions right among the calls, direct answers
    right among the rest; results repeated right after a (right) calculator reply."""
    tokenizer = policy.tokenizer
    generate = Rollouts(policy)._generate
    firsts = generate([tokenizer.encode_prompt([{"role": "user", "content": t["question"]}], TOOL) for _, t in tasks])
    parsed = [tokenizer.parse_completion(g.token_ids, TOOL) for g in firsts]
    expressions = [t["question"].removeprefix("What is ").removesuffix("?") for _, t in tasks]
    called = [i for i, (_, calls) in enumerate(parsed) if calls]
    direct = [i for i, (_, calls) in enumerate(parsed) if not calls]
    replies = []
    for (_, task), expression in zip(tasks, expressions, strict=True):
        call = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": TOOL, "arguments": {"expression": expression}}}],
        }
        user = {"role": "user", "content": task["question"]}
        replies.append(tokenizer.encode_prompt([user, call, {"role": "tool", "content": task["answer"]}], TOOL))
    repeated = [tokenizer.parse_completion(g.token_ids, TOOL)[0].strip() for g in generate(replies)]
    return {
        "calls_calculator": len(called) / len(tasks),
        "expression_right": sum(parsed[i][1][0].argument == expressions[i] for i in called) / max(len(called), 1),
        "result_repeated_right": sum(r == t["answer"] for r, (_, t) in zip(repeated, tasks, strict=True)) / len(tasks),
        "direct_answer_right": sum(parsed[i][0].strip() == tasks[i][1]["answer"] for i in direct) / max(len(direct), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm-start-steps", type=int, default=2500)
    parser.add_argument("--warm-start-lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--tasks", type=int, default=16, help="questions per GRPO step")
    parser.add_argument("--group", type=int, default=4, help="answers per question")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--heldout", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the demo: one thread for the tiny model
    policy = build_policy("tiny", seed=args.seed)
    began = time.perf_counter()
    warm_start(
        policy,
        demonstrations(policy.tokenizer, 4000, args.seed),
        steps=args.warm_start_steps,
        lr=args.warm_start_lr,
        seed=args.seed,
    )
    warm_s = time.perf_counter() - began
    # The demo's held-out questions: none among the demonstrations' or the GRPO steps' questions.
    trained_on = {task["question"] for _, task in make_tasks(4000, args.seed, "demo")}
    for step in range(args.steps):
        trained_on |= {task["question"] for _, task in make_tasks(args.tasks, args.seed * 1000 + step, "train")}
    heldout = heldout_tasks(args.heldout, seed=10_000 + args.seed, prefix="heldout", trained_on=trained_on)
    figures: dict[str, Any] = {**vars(args), "warm_start_s": round(warm_s, 1), "skills": skills(policy, heldout)}
    rollouts = Rollouts(policy)

    def held_out() -> dict[str, float]:
        return {"sampled": mean_reward(rollouts.run(heldout, 2)), "greedy": mean_reward(rollouts.run(heldout, 1, True))}

    figures["before"] = held_out()
    trainer = GRPOTrainer(policy, TrainerConfig(lr=args.lr))
    curve = []
    for step in range(args.steps):
        tasks = make_tasks(args.tasks, seed=args.seed * 1000 + step, prefix=f"train-{step}")  # as the demo draws them
        groups = rollouts.run(tasks, args.group)
        curve.append(round(mean_reward(groups), 2))
        trainer.step(groups)
    figures.update(training_reward=curve, after=held_out(), after_skills=skills(policy, heldout))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
