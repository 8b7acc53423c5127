"""`otel-lightning eval` and `otel-lightning optimize-prompt`: training-free optimisation of an unchanged agent.

otel-lightning eval --tasks tasks.jsonl --candidates candidates.yaml --reward my_rewards:correct \\
    --repeats 3 --out runs/eval -- python my_agent.py
otel-lightning optimize-prompt --tasks train.jsonl --val-tasks val.jsonl --base-url URL --model NAME \\
    --optimizer-url URL --optimizer-model NAME --reward my_rewards:correct --out runs/prompt -- python my_agent.py
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_CONCURRENCY = int(os.environ.get("LIGHTNING_CONCURRENCY", "4"))


def agent_command(remainder: list[str]) -> list[str]:
    command = remainder[1:] if remainder[:1] == ["--"] else list(remainder)
    if not command:
        raise SystemExit("name the agent command after --, e.g. -- python my_agent.py")
    if command[0] in ("python", "python3"):
        command[0] = sys.executable  # this environment's, where the instrumentors are installed
    return command


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reward",
        help="MODULE:FUNCTION called as FUNCTION(task_input, output) after each rollout, output being the agent's"
        " stdout; without it, the rewards the agent records itself (otel_lightning.reward)",
    )
    parser.add_argument(
        "--instrument",
        action="store_true",
        help="run the agent under opentelemetry-instrument (its own spans: agent names, tools); the gateway"
        " records every model call without it",
    )
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="rollouts at once")
    parser.add_argument(
        "--collector",
        default=os.environ.get("LIGHTNING_COLLECTOR") or None,
        help="use this collector (host:port); default: an embedded one on a temporary store",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one rollout may take")
    parser.add_argument("--out", required=True, help="directory for the results")
    parser.add_argument("agent", nargs=argparse.REMAINDER, help="-- COMMAND...: the agent, run once per rollout")


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "eval", help="evaluate candidates (models, checkpoints, prompts, sampling) on tasks, agent unchanged"
    )
    evaluate.add_argument("--tasks", required=True, help='JSON lines: {"task_id": ..., "input": ...}')
    evaluate.add_argument("--candidates", required=True, help="candidates YAML (see otel_lightning.optimize)")
    evaluate.add_argument("--repeats", type=int, default=1, help="rollouts per task and candidate")
    _common(evaluate)
    evaluate.set_defaults(run=_eval)

    search = subparsers.add_parser("optimize-prompt", help="search for a better system prompt with an optimiser model")
    search.add_argument(
        "--tasks", required=True, help="training tasks (JSON lines): their worst rollouts are critiqued"
    )
    search.add_argument("--val-tasks", required=True, help="validation tasks (JSON lines): candidates are scored here")
    search.add_argument("--base-url", required=True, help="the agent's model server (OpenAI-compatible)")
    search.add_argument("--model", default=None, help="model name to send upstream (default: the agent's)")
    search.add_argument("--optimizer-url", required=True, help="the optimiser model's server (OpenAI-compatible)")
    search.add_argument("--optimizer-model", required=True)
    search.add_argument("--initial-prompt", default="", help="the prompt to start from (default: the agent's own)")
    search.add_argument("--mode", choices=("replace", "prepend"), default="replace", help="how prompts are applied")
    search.add_argument("--rounds", type=int, default=3)
    search.add_argument("--beam", type=int, default=2, help="prompts kept after each round")
    search.add_argument("--branch", type=int, default=2, help="edited prompts asked of the optimiser per parent")
    search.add_argument("--worst", type=int, default=3, help="worst training rollouts shown to the optimiser")
    _common(search)
    search.set_defaults(run=_optimize_prompt)


def _warn_unscored(args: argparse.Namespace) -> None:
    if not args.reward and not args.instrument:
        print(
            "warning: no --reward, and the agent runs without --instrument: rewards it records itself cannot"
            " reach the collector, so its rollouts will end `no_reward` (counted, not scored)",
            file=sys.stderr,
        )


def _eval(args: argparse.Namespace) -> int:
    from otel_lightning.optimize.candidates import CandidateError, load_candidates
    from otel_lightning.optimize.eval_runner import EvalSettings, run_eval
    from otel_lightning.optimize.inputs import InputError, load_function, load_tasks
    from otel_lightning.optimize.progress import RolloutProgress
    from otel_lightning.optimize.report import print_table, summarize, write_report

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = agent_command(args.agent)
    _warn_unscored(args)
    try:
        candidates = load_candidates(args.candidates)
        tasks = load_tasks(args.tasks)
        reward = load_function(args.reward) if args.reward else None
    except (CandidateError, InputError) as error:
        raise SystemExit(f"error: {error}") from None
    settings = EvalSettings(
        repeats=args.repeats,
        concurrency=args.concurrency,
        collector=args.collector,
        rollout_timeout_s=args.timeout,
        instrument=args.instrument,
    )
    with RolloutProgress([c.name for c in candidates], len(tasks) * args.repeats) as progress:
        run = run_eval(candidates, tasks, command, reward, settings, on_result=progress.update)
    summary = summarize(run)
    out = Path(args.out)
    write_report(summary, out)
    print_table(summary)
    print(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")
    return 0 if summary["best"] is not None else 1


def _optimize_prompt(args: argparse.Namespace) -> int:
    from otel_lightning.optimize.inputs import InputError, load_function, load_tasks
    from otel_lightning.optimize.prompt_search import SearchSettings, run_prompt_search

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = agent_command(args.agent)
    _warn_unscored(args)
    try:
        train, val = load_tasks(args.tasks), load_tasks(args.val_tasks)
        reward = load_function(args.reward) if args.reward else None
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
    settings = SearchSettings(
        base_url=args.base_url,
        model=args.model,
        optimizer_url=args.optimizer_url,
        optimizer_model=args.optimizer_model,
        initial_prompt=args.initial_prompt,
        mode=args.mode,
        rounds=args.rounds,
        beam=args.beam,
        branch=args.branch,
        worst=args.worst,
        concurrency=args.concurrency,
        collector=args.collector,
        rollout_timeout_s=args.timeout,
        instrument=args.instrument,
    )
    history = run_prompt_search(train, val, command, reward, settings, Path(args.out))
    best = history["best"]
    print(f"best prompt (validation reward {best['val_reward']:.3f}) in {Path(args.out) / 'best_prompt.txt'}:")
    print(best["prompt"] or "(the agent's own prompt)")
    return 0
