"""`make quickstart` (examples/quickstart/run.sh) as a user runs it: against the vLLM-like stub, through the
gateway, every transition has the token ids of its prompt and answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from otel_lightning.testing.openai_stub import token_ids
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_prints_exact_token_counts():
    ports = {name: str(free_port()) for name in ("COLLECTOR_PORT", "MODEL_PORT", "GATEWAY_PORT")}
    run = subprocess.run(
        ["bash", str(ROOT / "examples/quickstart/run.sh")],
        env={**os.environ, **ports, "VENV": str(Path(sys.executable).parents[1])},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if re.match(r"#\d+ task=", line)]
    pattern = re.compile(r"task=(?P<task>\S+) .* tokens=(?P<prompt>\d+)\+(?P<response>\d+)")
    found = {match["task"]: (int(match["prompt"]), int(match["response"])) for match in map(pattern.search, lines)}
    system = "system: Answer briefly.\nuser: "
    assert found == {
        "quickstart-0": (len(token_ids(system + "What is 12*7?")), len(token_ids("The answer is 84."))),
        "quickstart-1": (len(token_ids(system + "What is 230+45?")), len(token_ids("The answer is 275."))),
        "quickstart-2": (len(token_ids(system + "What is 9-14?")), len(token_ids("The answer is -5."))),
        "quickstart-3": (
            len(token_ids(system + "What is the capital of France?")),
            len(token_ids("I can only do arithmetic.")),
        ),
    }
