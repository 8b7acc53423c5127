"""`otel-lightning feedback`: record a reward for a rollout or episode, maybe long complete.

    otel-lightning feedback --collector 127.0.0.1:4317 --trace-id 4bf92f... --score 1 --name thumbs_up

The reward joins the rollout's completion if it is still open; otherwise the transition stream
carries a `reward_update` event (`otel-lightning transitions --json`: "type": "reward_update").
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

from otel_lightning.channels import open_channel
from otel_lightning.v1 import feedback_pb2 as fb
from otel_lightning.v1 import feedback_pb2_grpc as fb_grpc


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("feedback", help="record a (late) reward for a rollout, trace or model response")
    parser.add_argument("--collector", default=os.environ.get("LIGHTNING_COLLECTOR", "127.0.0.1:4317"))
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--trace-id", default="", help="the trace of the rollout or episode (32 hex digits)")
    target.add_argument("--rollout-id", default="", help="the rollout id")
    target.add_argument("--response-id", default="", help="gen_ai.response.id of one of its model calls")
    parser.add_argument("--score", type=float, required=True, help="the reward")
    parser.add_argument("--name", default="", help="the reward's name (default: the rollout's reward)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    request = fb.FeedbackRequest(
        trace_id=args.trace_id,
        rollout_id=args.rollout_id,
        response_id=args.response_id,
        score=args.score,
        name=args.name,
    )
    channel = open_channel(args.collector)
    try:
        response = fb_grpc.FeedbackStub(channel).Record(request, timeout=10)
    except grpc.RpcError as error:
        print(f"otel-lightning feedback: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        channel.close()
    if not response.rollout_id:
        print("recorded; no rollout has that trace or response yet: the reward joins it when it completes")
    elif response.rollout_completed:
        print(f"recorded for rollout {response.rollout_id} (complete): streamed as a reward_update")
    else:
        print(f"recorded for rollout {response.rollout_id} (open): part of its completion")
    return 0
