"""Prompt optimisation in the spirit of APO / textual gradients, through the model gateway.

Each round, for each prompt of the beam: rollouts on the training tasks; the optimiser model reads the
worst of them (every turn, tool calls, rewards, from the collector's transition stream) and answers a
critique and K edited prompts; every new prompt is scored on the validation tasks; the best B prompts
(old or new) survive. A round whose optimiser answers are unusable keeps the beam it had.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from otel_lightning.optimize.candidates import Candidate, SystemPrompt
from otel_lightning.optimize.eval_runner import EvalRun, EvalSettings, RewardFunction, embedded_collector, run_eval
from otel_lightning.optimize.optimizer_model import (
    OptimizerError,
    ask_optimizer,
    build_request,
    describe_rollout,
    parse_proposal,
)
from otel_lightning.optimize.progress import RolloutProgress
from otel_lightning.optimize.report import summarize

logger = logging.getLogger(__name__)


@dataclass
class SearchSettings:
    base_url: str
    optimizer_url: str
    optimizer_model: str
    model: str | None = None
    initial_prompt: str = ""  # "": the agent's own system prompt
    mode: str = "replace"
    rounds: int = 3
    beam: int = 2
    branch: int = 2
    worst: int = 3
    concurrency: int = 4
    collector: str | None = None
    rollout_timeout_s: float = 300.0
    instrument: bool = False
    progress: bool = True


@dataclass
class Scored:
    name: str
    prompt: str
    val_reward: float | None
    success_rate: float
    round: int
    parent: str | None = None

    def key(self) -> tuple[float, float]:
        return (-1.0 if self.val_reward is None else self.val_reward, self.success_rate)


class PromptSearch:
    def __init__(
        self,
        train: list[tuple[str, Any]],
        val: list[tuple[str, Any]],
        command: list[str],
        reward: RewardFunction | None,
        settings: SearchSettings,
        collector: str,
    ) -> None:
        if settings.rounds < 0 or settings.beam < 1 or settings.branch < 1 or settings.worst < 1:
            raise ValueError("rounds >= 0, and beam, branch and worst >= 1")
        self.train, self.val, self.command, self.reward, self.settings = train, val, command, reward, settings
        self.collector = collector
        self.console = Console(quiet=not settings.progress)
        self.history: dict[str, Any] = {"settings": _settings_view(settings), "rounds": [], "prompts": []}
        self.optimizer_calls = 0
        self.rollouts = 0

    def _candidate(self, name: str, prompt: str) -> Candidate:
        system = SystemPrompt(mode=self.settings.mode, text=prompt) if prompt else None
        return Candidate(name=name, base_url=self.settings.base_url, model=self.settings.model, system_prompt=system)

    def _run(self, named: dict[str, str], tasks: list[tuple[str, Any]], label: str) -> EvalRun:
        candidates = [self._candidate(name, prompt) for name, prompt in named.items()]
        settings = EvalSettings(
            concurrency=self.settings.concurrency,
            collector=self.collector,
            rollout_timeout_s=self.settings.rollout_timeout_s,
            instrument=self.settings.instrument,
        )
        with RolloutProgress(list(named), len(tasks), enabled=self.settings.progress, label=label) as progress:
            run = run_eval(candidates, tasks, self.command, self.reward, settings, on_result=progress.update)
        self.rollouts += len(candidates) * len(tasks)
        return run

    def _validate(self, named: dict[str, str], round_number: int, parents: dict[str, str]) -> list[Scored]:
        summary = summarize(self._run(named, self.val, f"round {round_number} validation: "))
        scored = []
        for entry in summary["candidates"]:
            scored.append(
                Scored(
                    entry["name"],
                    named[entry["name"]],
                    entry["mean_reward"],
                    entry["success_rate"],
                    round_number,
                    parents.get(entry["name"]),
                )
            )
            self.history["prompts"].append({**vars(scored[-1]), "statuses": entry["statuses"]})
        return scored

    def _propose(self, parent: Scored, run: EvalRun, round_number: int, index: int) -> dict[str, str]:
        """New prompts the optimiser proposes from `parent`'s worst training rollouts (name -> prompt)."""
        inputs = dict(self.train)
        mine = [r for r in run.results if r.candidate == parent.name]
        # Failed rollouts first (they are the worst), then by reward.
        worst = sorted(mine, key=lambda r: (r.reward is not None, r.reward or 0.0))[: self.settings.worst]
        entry: dict[str, Any] = {
            "round": round_number,
            "parent": parent.name,
            "worst_rollouts": [r.rollout_id for r in worst],
            "train_mean_reward": _mean([r.reward for r in mine if r.reward is not None]),
        }
        self.history["rounds"][-1]["proposals"].append(entry)
        if not worst:
            entry["error"] = "no training rollout of this prompt came back to critique"
            logger.error("round %d, prompt %s: %s", round_number, parent.name, entry["error"])
            return {}
        described = [describe_rollout(i, r, inputs.get(r.task_id)) for i, r in enumerate(worst, start=1)]
        request = build_request(parent.prompt, described, self.settings.branch, self.settings.optimizer_model)
        self.optimizer_calls += 1
        try:
            proposal = parse_proposal(ask_optimizer(self.settings.optimizer_url, request), self.settings.branch)
        except OptimizerError as error:
            entry["error"] = str(error)
            self.console.print(f"[red]round {round_number}, prompt {parent.name}: {error}; the round goes on[/red]")
            return {}
        entry["critique"] = proposal.critique
        names = {f"r{round_number}-{index}-{k}": prompt for k, prompt in enumerate(proposal.prompts, start=1)}
        entry["prompts"] = names
        return names

    def run(self) -> dict[str, Any]:
        settings = self.settings
        self.console.print(f"round 0: scoring the initial prompt on {len(self.val)} validation tasks")
        beam = self._validate({"initial": settings.initial_prompt}, 0, {})
        self.history["rounds"].append(self._round_view(0, beam, 0, 0))
        for round_number in range(1, settings.rounds + 1):
            calls_before, rollouts_before = self.optimizer_calls, self.rollouts
            self.history["rounds"].append({"round": round_number, "proposals": []})
            named = {p.name: p.prompt for p in beam}
            train_run = self._run(named, self.train, f"round {round_number} training: ")
            children: dict[str, str] = {}
            parents: dict[str, str] = {}
            seen = {p.prompt for p in beam} | {p["prompt"] for p in self.history["prompts"]}
            for index, parent in enumerate(beam, start=1):
                for name, prompt in self._propose(parent, train_run, round_number, index).items():
                    if prompt not in seen:
                        children[name], parents[name] = prompt, parent.name
                        seen.add(prompt)
            scored = self._validate(children, round_number, parents) if children else []
            beam = sorted(beam + scored, key=Scored.key, reverse=True)[: settings.beam]
            view = self._round_view(
                round_number, beam, self.optimizer_calls - calls_before, self.rollouts - rollouts_before
            )
            self.history["rounds"][-1].update(view)
            best = beam[0]
            self.console.print(
                f"round {round_number}: {len(children)} new prompt(s); best {best.name} validation reward"
                f" {_figure(best.val_reward)} ({view['optimizer_calls']} optimiser calls, {view['rollouts']} rollouts)"
            )
        best = max(beam, key=Scored.key)
        self.history["best"] = vars(best)
        self.history["optimizer_calls"] = self.optimizer_calls
        self.history["rollouts"] = self.rollouts
        return self.history

    def _round_view(self, round_number: int, beam: list[Scored], calls: int, rollouts: int) -> dict[str, Any]:
        return {
            "round": round_number,
            "beam": [{"name": p.name, "val_reward": p.val_reward} for p in beam],
            "best_val_reward": max((p.val_reward for p in beam if p.val_reward is not None), default=None),
            "optimizer_calls": calls,
            "rollouts": rollouts,
        }


def run_prompt_search(
    train: list[tuple[str, Any]],
    val: list[tuple[str, Any]],
    command: list[str],
    reward: RewardFunction | None,
    settings: SearchSettings,
    out: Path,
) -> dict[str, Any]:
    """Search; writes out/best_prompt.txt, out/history.json and out/prompt_search.png; returns the history."""
    with contextlib.ExitStack() as stack:
        collector = settings.collector or stack.enter_context(embedded_collector())
        history = PromptSearch(train, val, command, reward, settings, collector).run()
    out.mkdir(parents=True, exist_ok=True)
    (out / "best_prompt.txt").write_text(history["best"]["prompt"] + "\n")
    (out / "history.json").write_text(json.dumps(history, indent=2))
    plot_rounds(history, out / "prompt_search.png")
    return history


def plot_rounds(history: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    prompts = [p for p in history["prompts"] if p["val_reward"] is not None]
    axis.scatter([p["round"] for p in prompts], [p["val_reward"] for p in prompts], alpha=0.5, label="each prompt")
    rounds = [r for r in history["rounds"] if r.get("best_val_reward") is not None]
    axis.plot([r["round"] for r in rounds], [r["best_val_reward"] for r in rounds], marker="o", label="best so far")
    axis.set_xlabel("round")
    axis.set_ylabel("validation reward")
    axis.set_ylim(-0.05, 1.05)
    axis.set_title("prompt search")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _figure(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _settings_view(settings: SearchSettings) -> dict[str, Any]:
    return {key: value for key, value in vars(settings).items() if key != "progress"}
