"""`otel-lightning worker`: run an agent for each task of a collector's pool.

otel-lightning worker --collector 127.0.0.1:4317 --openai-base-url URL -- python my_agent.py
otel-lightning worker --collector 127.0.0.1:4317 --openai-base-url URL --reward my_rewards:correct -- node agent.js
otel-lightning worker --collector 127.0.0.1:4317 --concurrency 8 my_agent:run
otel-lightning worker --collector 10.0.0.5:4317 --ray 16 my_agent:run     # 16 Ray actors
"""

from __future__ import annotations

import argparse
import logging
import os
import signal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="claim tasks from a collector and run an agent on each")
    parser.add_argument("--collector", default=os.environ.get("LIGHTNING_COLLECTOR", "127.0.0.1:4317"))
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("LIGHTNING_CONCURRENCY", "4")))
    parser.add_argument(
        "--openai-base-url",
        default=os.environ.get("LIGHTNING_POLICY_URL"),
        help="the policy server the agent's OpenAI client should use (env LIGHTNING_POLICY_URL)",
    )
    parser.add_argument(
        "--no-gateway",
        dest="gateway",
        action="store_false",
        help="do not put a model gateway in front of the model server (then only agents instrumented with"
        " OpenTelemetry give token ids, and only when their client asks the server for them)",
    )
    parser.add_argument(
        "--no-auto-instrument",
        dest="auto_instrument",
        action="store_false",
        help="run a Python agent command as it is, not under opentelemetry-instrument (the gateway still records"
        " its model calls; the agent's own structure, tools and agents, is not traced)",
    )
    parser.add_argument(
        "--reward",
        metavar="MODULE:FUNCTION",
        default=None,
        help="called as FUNCTION(task_input, output) after each rollout (output: the command's stdout, or the"
        " agent function's return value); its number, or dict of named numbers, is the rollout's reward",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a rollout may take")
    parser.add_argument("--lease", type=float, default=60.0, help="lease length; heartbeats renew it")
    parser.add_argument(
        "--ray",
        type=int,
        metavar="N",
        default=0,
        help="start N worker actors on Ray (the cluster at RAY_ADDRESS, else a local one), each with"
        " --concurrency slots; Ctrl-C stops them",
    )
    parser.add_argument(
        "agent",
        nargs=argparse.REMAINDER,
        help="MODULE:FUNCTION for an in-process agent, or -- COMMAND... for a subprocess agent",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from otel_lightning.worker import Worker
    from otel_lightning.worker_setup import build_worker_parts, setup_worker_tracing

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = args.agent[1:] if args.agent[:1] == ["--"] else args.agent
    if not command:
        raise SystemExit("name the agent: MODULE:FUNCTION, or -- COMMAND ...")
    if args.ray:
        return _run_on_ray(args, command)
    setup_worker_tracing(args.collector)
    parts = build_worker_parts(
        command,
        collector=args.collector,
        openai_base_url=args.openai_base_url,
        timeout_s=args.timeout,
        gateway=args.gateway,
        reward=args.reward,
        auto_instrument=args.auto_instrument,
    )
    worker = Worker(
        args.collector,
        parts.agent,
        concurrency=args.concurrency,
        lease_s=args.lease,
        task_timeout_s=args.timeout,
        gateway=parts.gateway,
        reward=parts.reward,
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        stats = worker.run()
    except KeyboardInterrupt:
        worker.stop()
        stats = worker.stats
    finally:
        if parts.gateway is not None:
            parts.gateway.stop()
    print(f"worker done: {stats.succeeded} succeeded, {stats.failed} failed, {stats.lost_leases} leases lost")
    return 0


def _run_on_ray(args: argparse.Namespace, command: list[str]) -> int:
    import threading

    import ray

    from otel_lightning.ray_workers import RayWorkerFleet

    # The actors import the agent from where this command runs, as a plain worker would.
    ray.init(address=os.environ.get("RAY_ADDRESS"), runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}})
    fleet = RayWorkerFleet(
        args.collector,
        command,
        args.ray,
        concurrency=args.concurrency,
        lease_s=args.lease,
        task_timeout_s=args.timeout,
        openai_base_url=args.openai_base_url,
        gateway=args.gateway,
        reward=args.reward,
    ).start()
    print(f"{args.ray} Ray worker actor(s) claiming tasks from {args.collector}; Ctrl-C stops them", flush=True)
    stopped = threading.Event()
    # Ctrl-C and SIGTERM end the wait; the actors then finish their rollouts in progress.
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stopped.set())
    while not stopped.wait(1.0):
        pass
    stats = fleet.stop()
    total = {key: sum(s[key] for s in stats) for key in ("succeeded", "failed", "lost_leases")}
    print(f"workers done: {total['succeeded']} succeeded, {total['failed']} failed, {total['lost_leases']} leases lost")
    return 0
