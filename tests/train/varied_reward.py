"""A worker-side reward that varies with the answer's length: GRPO groups with a spread, whatever the model says
(for tests of the training plumbing, where a barely trained model gets every answer wrong)."""


def by_length(task_input, output: str) -> float:
    return (len(output) % 4) / 3
