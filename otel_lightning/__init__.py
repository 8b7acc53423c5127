"""otel-lightning: train agents with RL from their OpenTelemetry traces.

import otel_lightning as ol

@ol.reward
def correct(answer, expected):
    return float(answer == expected)

with ol.rollout(task_id="q-1"):
    correct(agent("2+2?"), "4")
"""

from otel_lightning.context import RolloutInfo, agent_scope, current_rollout, rollout
from otel_lightning.processor import RolloutSpanProcessor, ensure_rollout_processor
from otel_lightning.rewards import emit_reward, reward
from otel_lightning.version import __version__

__all__ = [
    "RolloutInfo",
    "RolloutSpanProcessor",
    "__version__",
    "agent_scope",
    "current_rollout",
    "emit_reward",
    "ensure_rollout_processor",
    "reward",
    "rollout",
]
