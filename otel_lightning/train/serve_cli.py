"""`otel-lightning policy-server`: serve a policy on an OpenAI-compatible endpoint (Ctrl-C stops it).

otel-lightning policy-server --model tiny --checkpoint runs/calc_agent/checkpoint.pt --port 8000
otel-lightning policy-server --model smollm2
"""

from __future__ import annotations

import argparse
import os
import threading


def _serve(args: argparse.Namespace) -> int:
    from otel_lightning.train.policies import build_policy
    from otel_lightning.train.policy_server import PolicyServer
    from otel_lightning.train.trainer import load_policy

    policy = build_policy(args.model, hidden=args.hidden, layers=args.layers)
    if args.checkpoint:
        load_policy(policy, args.checkpoint)
    with PolicyServer(
        policy,
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        tls_cert_file=args.tls_cert or None,
        tls_key_file=args.tls_key or None,
        allow_remote=args.allow_remote,
    ) as server:
        print(f"policy {policy.name} (version {policy.version}) at {server.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from otel_lightning.train.policies import MODELS

    parser = subparsers.add_parser("policy-server", help="serve a policy on an OpenAI-compatible endpoint")
    parser.add_argument("--model", choices=MODELS, default="tiny", help="smollm2: `make install-smollm2` first")
    parser.add_argument("--checkpoint", help="checkpoint.pt of a training run (its weights and policy version)")
    parser.add_argument("--hidden", type=int, default=64, help="tiny model: hidden size (as trained)")
    parser.add_argument("--layers", type=int, default=2, help="tiny model: layers (as trained)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--allow-remote", action="store_true", help="allow a --host other machines can reach")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LIGHTNING_POLICY_API_KEY", ""),
        help="require this key from clients (their OPENAI_API_KEY) (env LIGHTNING_POLICY_API_KEY)",
    )
    parser.add_argument("--tls-cert", default=os.environ.get("LIGHTNING_TLS_CERT", ""), help="PEM certificate: HTTPS")
    parser.add_argument("--tls-key", default=os.environ.get("LIGHTNING_TLS_KEY", ""), help="PEM private key")
    parser.set_defaults(run=_serve)
