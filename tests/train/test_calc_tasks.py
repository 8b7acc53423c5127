"""The calc demo's held-out questions are unseen: none among the warm start's or the GRPO steps' questions."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.calc_agent.tasks import heldout_tasks, make_tasks


def test_heldout_tasks_leave_out_the_questions_trained_on_and_keep_the_rest_in_order():
    drawn = make_tasks(100, seed=10_000, prefix="heldout")
    trained_on = {task["question"] for _, task in make_tasks(4000, seed=0, prefix="demo")}
    overlapping = [task_id for task_id, task in drawn if task["question"] in trained_on]
    assert overlapping  # the seed-0 demonstrations do share questions with the plain draw (11 of 100)

    heldout = heldout_tasks(100, seed=10_000, prefix="heldout", trained_on=trained_on)
    assert len(heldout) == 100
    assert len({task_id for task_id, _ in heldout}) == 100
    assert not any(task["question"] in trained_on for _, task in heldout)
    kept = [(task_id, task) for task_id, task in drawn if task_id not in overlapping]
    assert heldout[: len(kept)] == kept  # the same stream, the trained-on questions skipped


def test_heldout_tasks_with_nothing_trained_on_are_the_plain_draw():
    assert heldout_tasks(20, seed=3, prefix="h", trained_on=set()) == make_tasks(20, seed=3, prefix="h")
