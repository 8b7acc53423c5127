#!/usr/bin/env bash
# Collector + a vLLM-like stub model server + the model gateway in front of it + the agent under
# opentelemetry-instrument, then print the transitions (with the token ids the gateway captured).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${VENV:-.venv}/bin
STORE=$(mktemp -d)/quickstart.db
COLLECTOR_PORT=${COLLECTOR_PORT:-4317}
MODEL_PORT=${MODEL_PORT:-8000}
GATEWAY_PORT=${GATEWAY_PORT:-8001}

wait_for_port() {  # until something listens on 127.0.0.1:$1 (30 s at most)
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# The gateway exports its spans from its own process: a rollout waits 1 s after its root span for them.
"$BIN/otel-lightning" collector --listen "127.0.0.1:$COLLECTOR_PORT" --store "$STORE" --settle-ms 1000 &
COLLECTOR=$!
"$BIN/python" -m otel_lightning.testing.openai_stub --port "$MODEL_PORT" &
STUB=$!
"$BIN/otel-lightning" gateway --listen "127.0.0.1:$GATEWAY_PORT" --upstream "http://127.0.0.1:$MODEL_PORT/v1" \
  --collector "127.0.0.1:$COLLECTOR_PORT" &
GATEWAY=$!
trap 'kill $GATEWAY $COLLECTOR $STUB 2>/dev/null' EXIT
wait_for_port "$COLLECTOR_PORT" && wait_for_port "$MODEL_PORT" && wait_for_port "$GATEWAY_PORT"

OPENAI_BASE_URL="http://127.0.0.1:$GATEWAY_PORT/v1" OPENAI_API_KEY=unused \
OTEL_SERVICE_NAME=quickstart-agent \
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$COLLECTOR_PORT" OTEL_EXPORTER_OTLP_INSECURE=true \
  "$BIN/opentelemetry-instrument" "$BIN/python" examples/quickstart/agent.py

sleep 2  # the gateway exports its spans within 0.2 s of each call; rollouts settle for 1 s
echo "--- transitions stored by the collector ($STORE):"
"$BIN/otel-lightning" transitions --collector "127.0.0.1:$COLLECTOR_PORT"
