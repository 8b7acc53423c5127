"""The `otel-lightning` command. Parts installed separately (the collector, ...) add subcommands
through the `otel_lightning.commands` entry point group: a callable that takes the subparsers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import entry_points

from otel_lightning.stream_client import TransitionStreamClient, event_to_dict

DEFAULT_COLLECTOR = os.environ.get("LIGHTNING_COLLECTOR", "127.0.0.1:4317")


def _print_event(event_dict: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event_dict, ensure_ascii=False), flush=True)
        return
    if event_dict["type"] == "reward_update":
        name = f" {event_dict['name']}" if event_dict["name"] else ""
        print(
            f"#{event_dict['sequence']} reward update rollout {event_dict['rollout_id'][:8]}"
            f" task={event_dict['task_id']}{name}={event_dict['value']:g} ({event_dict['origin']})",
            flush=True,
        )
        return
    if event_dict["type"] == "transition":
        action = event_dict["action"] or {}
        said = action.get("content") or ""
        calls = [c.get("function", {}).get("name") for c in action.get("tool_calls") or []]
        shown = said if not calls else f"{said} [tool calls: {', '.join(map(str, calls))}]"
        print(
            f"#{event_dict['sequence']} task={event_dict['task_id']} rollout={event_dict['rollout_id'][:8]}"
            f" step={event_dict['step']} agent={event_dict['agent']} reward={event_dict['reward']:g}"
            f" done={event_dict['done']} tokens={len(event_dict['prompt_token_ids'])}+"
            f"{len(event_dict['response_token_ids'])} action={shown!r}",
            flush=True,
        )
    else:
        error = (
            f" error={event_dict['error_type']}: {event_dict['error_message']}" if event_dict["error_message"] else ""
        )
        print(
            f"#{event_dict['sequence']} rollout {event_dict['rollout_id'][:8]} task={event_dict['task_id']}"
            f" {event_dict['status']} reward={event_dict['total_reward']:g}"
            f" transitions={event_dict['transition_count']}{error}",
            flush=True,
        )


def _transitions(args: argparse.Namespace) -> int:
    client = TransitionStreamClient(
        args.collector,
        consumer=args.consumer,
        follow=args.follow,
        start_after=args.start_after,
        auto_ack=True,
        reward_updates=True,
    )
    try:
        for event in client:
            _print_event(event_to_dict(event), args.json)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-lightning", description="Train agents with RL from their traces.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    transitions = subparsers.add_parser("transitions", help="print the transitions a collector has built")
    transitions.add_argument(
        "--collector", default=DEFAULT_COLLECTOR, help="collector address (env LIGHTNING_COLLECTOR)"
    )
    transitions.add_argument("--follow", action="store_true", help="keep printing new transitions as they come")
    transitions.add_argument("--json", action="store_true", help="one JSON object per line")
    transitions.add_argument("--consumer", default="", help="durable consumer name: resume after its last ack")
    transitions.add_argument("--start-after", type=int, default=0, help="sequence to start after (no --consumer)")
    transitions.set_defaults(run=_transitions)
    from otel_lightning.worker_cli import register as register_worker

    register_worker(subparsers)
    from otel_lightning.submit_cli import register as register_submit

    register_submit(subparsers)
    try:
        from otel_lightning.train.serve_cli import register as register_policy_server
    except ImportError:  # the train extra is not installed
        pass
    else:
        register_policy_server(subparsers)
        from otel_lightning.train.train_cli import register as register_train

        register_train(subparsers)
    from otel_lightning.optimize.cli import register as register_optimize

    register_optimize(subparsers)  # eval, optimize-prompt
    for entry_point in entry_points(group="otel_lightning.commands"):
        entry_point.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
