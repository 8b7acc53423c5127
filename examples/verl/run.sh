#!/usr/bin/env bash
# GRPO with verl on one GPU: verl's vLLM replicas serve the policy, the unmodified calc agent runs in
# otel-lightning workers, and LightningAgentLoop hands verl the transitions from the agent's spans.
# Needs a GPU machine with `pip install -e ".[verl]" -e collector -e instrumentors/openai "verl[vllm]==0.9.1"`.
set -euo pipefail
cd "$(dirname "$0")/../.."

MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}  # a local directory works too
OUT=${OUT:-runs/verl}
export LIGHTNING_COLLECTOR=127.0.0.1:4317
mkdir -p "$OUT"

python examples/verl/make_dataset.py --out "$OUT/data"
otel-lightning collector --listen "$LIGHTNING_COLLECTOR" --store "$OUT/collector.db" &
COLLECTOR=$!
# The agent asks for the model by the name vLLM serves it under (verl serves it under its path).
CALC_AGENT_MODEL=$MODEL CALC_AGENT_MAX_TOKENS=256 \
  otel-lightning worker --collector "$LIGHTNING_COLLECTOR" --concurrency 64 -- python examples/calc_agent/agent.py &
WORKER=$!
trap 'kill $WORKER $COLLECTOR' EXIT

python -m verl.trainer.main_ppo \
  trainer.use_v1=True \
  algorithm.adv_estimator=grpo \
  data.train_files="$OUT/data/train.parquet" \
  data.val_files="$OUT/data/val.parquet" \
  data.train_batch_size=32 \
  data.max_prompt_length=512 \
  data.max_response_length=512 \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.ppo_mini_batch_size=32 \
  actor_rollout_ref.actor.use_kl_loss=True \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.mode=async \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.calculate_log_probs=True \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.5 \
  actor_rollout_ref.rollout.agent.agent_loop_config_path=examples/verl/agent_loop.yaml \
  actor_rollout_ref.rollout.agent.default_agent_loop=otel_lightning \
  trainer.n_gpus_per_node=1 \
  trainer.nnodes=1 \
  trainer.total_epochs=1 \
  trainer.logger=console \
  trainer.project_name=otel-lightning \
  trainer.experiment_name=calc-agent "$@"
