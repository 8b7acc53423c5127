"""`otel-lightning export`: the store's rollouts as training sets for other tools.

    otel-lightning export --store otel-lightning.db --format sharegpt --out sft.jsonl --min-reward 1
    otel-lightning export --store otel-lightning.db --format openai --out chats.jsonl --agent 'coder*' --since 24h
    otel-lightning export --store otel-lightning.db --format verl --out train.parquet --status any

sharegpt (LLaMA-Factory) and openai (OpenAI fine-tuning, TRL): JSON lines, one per conversation: the
final state of each agent of each rollout (its last model call's messages and answer, so multi-turn
tool use comes out whole), or one per transition with --per-step. Each line also carries rollout_id,
task_id, agent, status and reward (the rollout's, late feedback included; with --per-step the step's
credit, and step). verl: a parquet file, one row per task (the messages of its first model call as
the prompt), shaped as examples/verl/make_dataset.py writes them.

Filters apply in this order, each left-out item counted under the first that leaves it out, and the
one line printed says so: status, --since/--until (completion time), --min-reward, rollouts without
transitions, --agent, conversations the format cannot hold, --limit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector import dataset_formats, export_store
from otel_lightning_collector.export_filters import (
    AGENT,
    LAYOUT,
    LIMIT,
    RETENTION,
    ExportError,
    LeftOut,
    Selection,
    count,
    parse_statuses,
    parse_time,
)
from otel_lightning_collector.export_store import StoredRollout
from otel_lightning_collector.transitions import STATUSES, agent_selector

FORMATS = ("sharegpt", "openai", "verl")
_VERL_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info", "agent_name")


@dataclass(frozen=True)
class Wanted:
    """What to write from the selected rollouts."""

    format: str
    per_step: bool = False
    agent: Callable[[str], bool] | None = None
    agent_text: str = ""
    data_source: str = "otel_lightning"
    ability: str = "agent"


def _conversation(transition: pb.Transition) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages up to and with the step's answer, and the tools offered."""
    state = json.loads(transition.state_json or "{}")
    action = json.loads(transition.action_json or "{}")
    return [*state.get("messages", []), *([action] if action else [])], state.get("tools", [])


def _final_steps(steps: list[pb.Transition]) -> list[pb.Transition]:
    """The last step of each agent of one rollout, in the order those came."""
    last: dict[str, pb.Transition] = {}
    for step in steps:
        last.pop(step.agent, None)
        last[step.agent] = step
    return list(last.values())


def _note_missing(rollouts: dict[str, StoredRollout], seen: set[str], left_out: LeftOut) -> None:
    # Retention deletes events by sequence: it may have taken a rollout's transitions and left its completion.
    missing = len(set(rollouts) - seen)
    if missing:
        left_out.add(RETENTION, "rollout", "whose transitions retention deleted", missing)


def jsonl_records(
    db: sqlite3.Connection, rollouts: dict[str, StoredRollout], wanted: Wanted, left_out: LeftOut
) -> Iterator[tuple[dict[str, Any], int]]:
    """(record, assistant texts sharegpt had to drop) for each conversation, or each step."""
    unit = "step" if wanted.per_step else "conversation"
    seen: set[str] = set()
    for steps in export_store.transitions(db, set(rollouts)):
        rollout = rollouts[steps[0].rollout_id]
        seen.add(rollout.rollout_id)
        for step in steps if wanted.per_step else _final_steps(steps):
            if wanted.agent is not None and not wanted.agent(step.agent):
                left_out.add(AGENT, unit, f"of an agent not matching {wanted.agent_text}")
                continue
            messages, tools = _conversation(step)
            dropped = 0
            try:
                if wanted.format == "sharegpt":
                    record = dataset_formats.sharegpt_record(messages, tools)
                    dropped = dataset_formats.texts_beside_tool_calls(messages)
                else:
                    record = dataset_formats.openai_record(messages, tools)
            except dataset_formats.FormatError as error:
                left_out.add(LAYOUT, unit, f"{wanted.format} cannot hold ({error})")
                continue
            record.update(
                rollout_id=rollout.rollout_id,
                task_id=rollout.task_id,
                agent=step.agent,
                status=rollout.status,
                reward=step.reward if wanted.per_step else rollout.reward,
            )
            if wanted.per_step:
                record["step"] = step.step
            yield record, dropped
    _note_missing(rollouts, seen, left_out)


def verl_rows(
    db: sqlite3.Connection,
    rollouts: dict[str, StoredRollout],
    wanted: Wanted,
    left_out: LeftOut,
    samples: dict[str, str],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(task id, row), one per task: the first selected rollout's first step (of a selected agent) gives the
    prompt. `samples` gets the task of each rollout that is a sample of a row's prompt."""
    inputs = export_store.task_inputs(db)
    done: set[str] = set()
    seen: set[str] = set()
    for steps in export_store.transitions(db, set(rollouts)):
        rollout_id, task_id = steps[0].rollout_id, steps[0].task_id
        seen.add(rollout_id)
        if task_id in done:
            samples[rollout_id] = task_id  # another sample of the row's prompt
            continue
        first = next((step for step in steps if wanted.agent is None or wanted.agent(step.agent)), None)
        if first is None:
            left_out.add(AGENT, "rollout", f"with no agent matching {wanted.agent_text}")
            continue
        messages = json.loads(first.state_json or "{}").get("messages", [])
        try:
            row = dataset_formats.verl_row(
                len(done), task_id, messages, inputs.get(task_id), wanted.data_source, wanted.ability
            )
        except dataset_formats.FormatError as error:
            left_out.add(LAYOUT, "rollout", f"verl cannot hold ({error})")
            continue
        done.add(task_id)
        samples[rollout_id] = task_id
        yield task_id, row
    _note_missing(rollouts, seen, left_out)


def _limited(items: Iterator[Any], limit: int | None, unit: str, left_out: LeftOut) -> Iterator[Any]:
    for index, item in enumerate(items):
        if limit is not None and index >= limit:
            left_out.add(LIMIT, unit, f"over --limit {limit}")
            continue
        yield item


@contextlib.contextmanager
def _replacing(out: Path) -> Iterator[Path]:
    """A temporary file beside `out` that becomes `out` only once written whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(name)
        os.replace(name, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa  # only verl needs it
    import pyarrow.parquet as pq

    try:
        if rows:
            table = pa.Table.from_pylist(rows)
        else:
            table = pa.table({name: pa.array([], pa.null()) for name in _VERL_COLUMNS})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ExportError(
            f"the tasks' rows do not fit one parquet schema ({error}); export fewer with filters"
        ) from None
    pq.write_table(table, path)


def _write_jsonl(records: Iterator[tuple[dict[str, Any], int]], path: Path, left_out: LeftOut) -> int:
    written = 0
    with path.open("w", encoding="utf-8") as file:
        for record, dropped in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
            written += 1
            if dropped:
                left_out.add(LAYOUT, "assistant text", "beside tool calls (sharegpt keeps the calls)", dropped)
    return written


def _selected_rollouts(db: sqlite3.Connection, selection: Selection, left_out: LeftOut) -> dict[str, StoredRollout]:
    """The completed rollouts the selection keeps, by id; each one left out is counted with its reason."""
    rollouts, without_events = export_store.completed_rollouts(db)
    if without_events:
        left_out.add(RETENTION, "rollout", "whose events retention deleted", without_events)
    selected = {}
    for rollout in rollouts:
        found = selection.reason_to_leave_out(rollout)
        if found is None:
            selected[rollout.rollout_id] = rollout
        else:
            left_out.add(found[0], "rollout", found[1])
    return selected


def export(store: str | Path, out: Path, selection: Selection, wanted: Wanted, limit: int | None = None) -> str:
    """Write the dataset to `out`; returns the summary line."""
    left_out = LeftOut()
    with export_store.open_store(store) as db:
        selected = _selected_rollouts(db, selection, left_out)
        with _replacing(out) as path:
            if wanted.format == "verl":
                unit, samples = "task", {}
                kept = dict(_limited(verl_rows(db, selected, wanted, left_out, samples), limit, unit, left_out))
                _write_parquet(list(kept.values()), path)
                written = len(kept)
                source = f" (from {count(sum(task in kept for task in samples.values()), 'rollout')})"
            else:
                unit, source = ("step" if wanted.per_step else "conversation"), ""
                records = _limited(jsonl_records(db, selected, wanted, left_out), limit, unit, left_out)
                written = _write_jsonl(records, path, left_out)
    return f"wrote {count(written, unit)}{source} to {out} ({left_out})"


def conversations_from_store(
    store: str | Path, *, min_reward: float, statuses: frozenset[str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The conversations (OpenAI layout: messages, tools) of the store's rollouts and episodes whose reward,
    late feedback and evaluations included, reaches `min_reward`; with why the others were left out."""
    left_out = LeftOut()
    selection = Selection(statuses=statuses, min_reward=min_reward)
    wanted = Wanted(format="openai")
    with export_store.open_store(store) as db:
        selected = _selected_rollouts(db, selection, left_out)
        conversations = [
            {"messages": record["messages"], "tools": record.get("tools") or None}
            for record, _ in jsonl_records(db, selected, wanted, left_out)
        ]
    reasons = {f"{unit}s {reason}": n for (_, unit, reason), n in left_out.counts.items()}
    return conversations, reasons


def _fail(message: str) -> NoReturn:
    print(f"otel-lightning export: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _run(args: argparse.Namespace) -> int:
    try:
        selection = Selection(statuses=parse_statuses(args.status or ["succeeded"]), min_reward=args.min_reward)
        if args.since:
            selection.since_ns, selection.since_text = parse_time(args.since), args.since
        if args.until:
            selection.until_ns, selection.until_text = parse_time(args.until), args.until
        if args.limit is not None and args.limit < 0:
            raise ExportError(f"--limit must be 0 or more, not {args.limit}")
        agent = agent_selector([pattern.strip() for pattern in args.agent.split(",")])
        wanted = Wanted(args.format, args.per_step, agent, args.agent, args.data_source, args.ability)
        print(export(args.store, Path(args.out), selection, wanted, args.limit), flush=True)
    except (ExportError, export_store.StoreReadError, OSError) as error:
        _fail(str(error))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=os.environ.get("LIGHTNING_STORE", "otel-lightning.db"),
        help="the collector's SQLite store (env LIGHTNING_STORE); read only, a running collector may keep writing",
    )
    parser.add_argument(
        "--format", required=True, choices=FORMATS, metavar="FORMAT", help="sharegpt, openai (JSON lines) or verl"
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write (replaced once written whole)")
    parser.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help=f"rollout status to keep, repeatable or comma-separated: {', '.join(STATUSES)}, or any"
        " (default succeeded)",
    )
    parser.add_argument(
        "--min-reward", type=float, metavar="X", help="keep rollouts whose reward (late feedback too) is at least X"
    )
    parser.add_argument(
        "--agent", default="", metavar="NAME", help="keep the agents matching these name patterns ('coder,math*')"
    )
    parser.add_argument(
        "--since", metavar="TIME", help="completed at or after: ISO-8601 time, or a duration before now (24h, 30m)"
    )
    parser.add_argument(
        "--until", metavar="TIME", help="completed at or before: ISO-8601 time, or a duration before now"
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="write at most N records (conversations, steps or tasks)"
    )
    parser.add_argument("--per-step", action="store_true", help="sharegpt/openai: one record per transition")
    parser.add_argument("--data-source", default="otel_lightning", metavar="NAME", help="verl: the rows' data_source")
    parser.add_argument("--ability", default="agent", metavar="NAME", help="verl: the rows' ability")
    # Usage errors are one line, like the others (argparse would print its usage first).
    parser.error = _fail  # type: ignore[method-assign]
    parser.set_defaults(run=_run)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the store's rollouts as a dataset: sharegpt, openai (JSONL) or verl (parquet)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="otel-lightning export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
