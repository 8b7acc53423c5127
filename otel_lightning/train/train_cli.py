"""`otel-lightning train CONFIG`: the one command from tasks to a better model (see otel_lightning.train.fit).

otel-lightning train examples/calc_agent/train.yaml
otel-lightning train my_agent/train.yaml --set grpo.steps=20 --set model.name=smollm2
otel-lightning train my_agent/train.yaml --resume runs/my_agent     # continue a stopped run
otel-lightning train my_agent/train.yaml --dry-run                  # check everything, start nothing
"""

from __future__ import annotations

import argparse
import logging
import sys


def _train(args: argparse.Namespace) -> int:
    from otel_lightning.train.config import ConfigError
    from otel_lightning.train.fit import fit
    from otel_lightning.train.stages import StageError
    from otel_lightning.train.trainer import CollectAbortedError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        fit(args.config, args.set, resume=args.resume, dry_run=args.dry_run)
    except ConfigError as error:
        print(f"otel-lightning train: {error}", file=sys.stderr)
        return 2
    except (CollectAbortedError, StageError) as error:
        print(f"otel-lightning train: stopped: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an agent's model from a config: SFT and GRPO stages, evaluation, a Hugging Face checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="the run's YAML or TOML file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the config (repeatable), e.g. --set grpo.steps=20 --set model.device=cuda",
    )
    parser.add_argument("--resume", metavar="DIR", help="continue the run whose output folder this is")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config, its files and code (with verl: build and validate verl's config, print the"
        " command), start nothing",
    )
    parser.set_defaults(run=_train)
