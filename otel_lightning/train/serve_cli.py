"""`otel-lightning policy-server`: serve a policy on an OpenAI-compatible endpoint (Ctrl-C stops it).

otel-lightning policy-server --model tiny --checkpoint runs/calc_agent/checkpoint.pt --port 8000
otel-lightning policy-server --model smollm2
otel-lightning policy-server --model runs/calc_agent/hf --device cuda   # a Hugging Face folder (save_hf_checkpoint)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from otel_lightning.train.policies import build_policy, check_model_source
    from otel_lightning.train.policy_server import PolicyServer
    from otel_lightning.train.trainer import load_policy

    api_key = args.api_key
    if args.api_key_file:
        # A key in a file (or the environment) is not on the command line, which every local user sees.
        api_key = Path(args.api_key_file).read_text().strip()
    try:  # a missing or damaged file: one line that names it, not a traceback
        check_model_source(args.model)  # before minutes of loading weights
        policy = build_policy(args.model, hidden=args.hidden, layers=args.layers, device=args.device, dtype=args.dtype)
        if args.checkpoint:
            load_policy(policy, args.checkpoint)  # with its agents' adapters, when it has them
        if args.adapters:
            from otel_lightning.train.adapters import load_adapters

            load_adapters(policy, args.adapters)
    except (OSError, ValueError) as error:
        print(f"otel-lightning policy-server: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    with PolicyServer(
        policy,
        host=args.host,
        port=args.port,
        api_key=api_key or None,
        tls_cert_file=args.tls_cert or None,
        tls_key_file=args.tls_key or None,
        allow_remote=args.allow_remote,
        max_request_bytes=int(args.max_request_mb * 1024 * 1024),
    ) as server:
        print(f"policy {policy.name} (version {policy.version}) at {server.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from otel_lightning.train.policies import MODEL_HELP

    parser = subparsers.add_parser("policy-server", help="serve a policy on an OpenAI-compatible endpoint")
    parser.add_argument("--model", default="tiny", help=MODEL_HELP + " (e.g. one save_hf_checkpoint wrote)")
    parser.add_argument(
        "--device",
        default=os.environ.get("LIGHTNING_POLICY_DEVICE", "cpu"),
        help="torch device of the model: cpu, cuda, cuda:1 (env LIGHTNING_POLICY_DEVICE)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16", "auto"),
        default=os.environ.get("LIGHTNING_POLICY_DTYPE") or None,
        help="weights' dtype; auto: bfloat16 on a CUDA device that has it (env LIGHTNING_POLICY_DTYPE; default"
        " float32)",
    )
    parser.add_argument("--checkpoint", help="checkpoint.pt of a training run (its weights and policy version)")
    parser.add_argument(
        "--adapters",
        help="a folder of per-agent LoRA adapters (otel_lightning.train.adapters.save_adapters): each agent, named"
        " in the request's baggage or as its model, is answered by its own",
    )
    parser.add_argument("--hidden", type=int, default=64, help="tiny model: hidden size (as trained)")
    parser.add_argument("--layers", type=int, default=2, help="tiny model: layers (as trained)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--allow-remote", action="store_true", help="allow a --host other machines can reach")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LIGHTNING_POLICY_API_KEY", ""),
        help="require this key from clients (their OPENAI_API_KEY) (env LIGHTNING_POLICY_API_KEY); a flag is"
        " visible to every local user (ps): prefer --api-key-file or the env",
    )
    parser.add_argument(
        "--api-key-file",
        default=os.environ.get("LIGHTNING_POLICY_API_KEY_FILE", ""),
        help="file holding the key (env LIGHTNING_POLICY_API_KEY_FILE)",
    )
    parser.add_argument(
        "--max-request-mb",
        type=float,
        default=float(os.environ.get("LIGHTNING_POLICY_MAX_REQUEST_MB", "4")),
        help="largest request body; larger ones get 413 (env LIGHTNING_POLICY_MAX_REQUEST_MB). Prompts over the"
        " model's context get 400, alone",
    )
    parser.add_argument("--tls-cert", default=os.environ.get("LIGHTNING_TLS_CERT", ""), help="PEM certificate: HTTPS")
    parser.add_argument("--tls-key", default=os.environ.get("LIGHTNING_TLS_KEY", ""), help="PEM private key")
    parser.set_defaults(run=_serve)
