"""The stages of `otel-lightning train`, each a function of the run: `sft` (demonstrations, a teacher's traces
or a store's episodes) and `grpo` (groups from the pool, exact token ids, the status policy)."""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from otel_lightning.train.config import GRPOConfig, SFTConfig, TrainConfig
from otel_lightning.train.demonstrations import conversation_of_step, encode_conversations
from otel_lightning.train.rollouts import evaluate_both, run_tasks
from otel_lightning.train.services import TrainingServices
from otel_lightning.train.sft import Example, warm_start
from otel_lightning.train.task_source import TaskRecord
from otel_lightning.train.trainer import GRPOTrainer, RolloutRecord

logger = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage that cannot go on (nothing to train on); the message says why."""


def demonstrations_from_teacher(
    services: TrainingServices, sft: SFTConfig, tasks: list[TaskRecord], seed: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rejection sampling: the agent on the train tasks against the teacher (through the gateway); the steps of
    rollouts whose reward reaches the threshold, as conversations. Returns them with why the others were not kept."""
    teacher = sft.teacher
    assert teacher is not None
    chosen = list(tasks)
    if teacher.tasks:
        chosen = random.Random(seed).sample(chosen, min(teacher.tasks, len(chosen)))
    previous = os.environ.get("OPENAI_BASE_URL")
    if services.agent_function is not None:  # an in-process agent reads the environment's base URL
        os.environ["OPENAI_BASE_URL"] = teacher.url.rstrip("/")
    try:
        collected = run_tasks(
            services,
            chosen,
            label="teacher",
            group_size=teacher.samples,
            timeout_s=services.config.agent.timeout_s + 60,
            openai_base_url=teacher.url.rstrip("/"),
        )
    finally:
        if services.agent_function is not None and previous is not None:
            os.environ["OPENAI_BASE_URL"] = previous
    conversations, left_out = [], Counter()
    for members in collected.values():
        for record in members:
            if record.status != "succeeded":
                left_out[f"status {record.status}"] += 1
            elif record.reward < teacher.min_reward:
                left_out[f"reward < {teacher.min_reward:g}"] += 1
            elif not record.transitions:
                left_out["no model call recorded"] += 1
            else:
                steps = [conversation_of_step(t.state_json, t.action_json) for t in record.transitions]
                conversations += [step for step in steps if step is not None]
                left_out["steps without readable messages"] += sum(step is None for step in steps)
    missing = len(chosen) * teacher.samples - sum(len(m) for m in collected.values())
    if missing:
        left_out["rollouts that never reported"] += missing
    return conversations, {reason: count for reason, count in left_out.items() if count}


def run_sft(
    services: TrainingServices | None,
    config: TrainConfig,
    conversations: list[dict[str, Any]],
    train_tasks: list[TaskRecord],
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Supervised fine-tuning on the assistant turns, re-encoded with the student's chat template."""
    sft = config.sft
    assert sft is not None
    policy = services.policy if services is not None else None
    figures: dict[str, Any] = {"source": "demonstrations"}
    if sft.teacher is not None:
        assert services is not None
        conversations, left_out = demonstrations_from_teacher(services, sft, train_tasks, config.seed)
        figures = {"source": "teacher", "kept_conversations": len(conversations), "left_out": left_out}
    elif sft.episodes is not None:
        from otel_lightning_collector.export_datasets import conversations_from_store

        conversations, left_out = conversations_from_store(
            config.path(sft.episodes.store), min_reward=sft.episodes.min_reward
        )
        figures = {"source": "episodes", "kept_conversations": len(conversations), "left_out": left_out}
    else:
        figures["conversations"] = len(conversations)
    assert policy is not None
    examples: list[Example] = encode_conversations(policy.tokenizer, conversations)
    figures["examples"] = len(examples)
    if figures.get("left_out"):
        shown = ", ".join(f"{count} {reason}" for reason, count in figures["left_out"].items())
        tqdm.write(f"sft: kept {len(conversations)} conversations ({len(examples)} turns); left out: {shown}")
    if not examples:
        left_out = ", ".join(f"{count} {reason}" for reason, count in (figures.get("left_out") or {}).items())
        raise StageError(f"sft: nothing to train on from the {figures['source']} (left out: {left_out or 'none'})")
    bar = tqdm(total=sft.steps, desc=f"sft ({figures['source']})", unit="step", mininterval=1.0)

    def step(index: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if on_step is not None:
            on_step(index, loss)

    started = time.perf_counter()
    loss = warm_start(
        policy,
        examples,
        steps=sft.steps,
        lr=sft.lr,
        batch_size=sft.batch_size,
        seed=config.seed,
        warmup_steps=min(sft.warmup_steps, max(sft.steps - 1, 0)),
        on_step=step,
    )
    bar.close()
    return {**figures, "steps": sft.steps, "final_loss": loss, "wall_s": time.perf_counter() - started}


def step_tasks(tasks: list[TaskRecord], grpo: GRPOConfig, step: int, seed: int, shuffle: bool) -> list[TaskRecord]:
    """The tasks of GRPO step `step`: the next `tasks_per_step` of the list, in its order or in a seeded
    shuffle per pass over it, cycling when the steps need more than it has."""
    chosen = []
    for slot in range(step * grpo.tasks_per_step, (step + 1) * grpo.tasks_per_step):
        epoch, index = divmod(slot, len(tasks))
        order = list(range(len(tasks)))
        if shuffle:
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
        chosen.append(tasks[order[index]])
    return chosen


def group_key(record: RolloutRecord) -> tuple:
    """An order of a group's rollouts that does not depend on when they arrived (same samples, same update)."""
    return (record.status, record.reward, [list(t.response_token_ids) for t in record.transitions])


def run_grpo_step(
    services: TrainingServices,
    trainer: GRPOTrainer,
    config: TrainConfig,
    tasks: list[TaskRecord],
    step: int,
) -> dict[str, Any]:
    grpo = config.grpo
    assert grpo is not None
    waited = time.perf_counter()
    collected = run_tasks(
        services, tasks, label=f"grpo-{step}", group_size=grpo.group_size, timeout_s=grpo.group_timeout_s
    )
    wait_s = time.perf_counter() - waited
    ordered = {task: sorted(members, key=group_key) for task, members in collected.items()}
    updated = time.perf_counter()
    stats = trainer.step(ordered)
    update_s = time.perf_counter() - updated
    stats["wait_s"] = wait_s
    stats["step_s"] = wait_s + update_s
    stats["rollouts_per_s"] = stats["rollouts"] / max(wait_s, 1e-9)
    return stats


def evaluate_phase(services: TrainingServices, config: TrainConfig, tasks: list[TaskRecord], label: str) -> dict:
    evaluation = config.evaluation
    return evaluate_both(
        services,
        tasks,
        label=label,
        samples=evaluation.samples,
        greedy=evaluation.greedy,
        timeout_s=config.agent.timeout_s + 120,
    )
