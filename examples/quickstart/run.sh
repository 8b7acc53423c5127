#!/usr/bin/env bash
# Collector + stub model server + the agent under opentelemetry-instrument, then print the transitions.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${VENV:-.venv}/bin
STORE=$(mktemp -d)/quickstart.db
COLLECTOR_PORT=${COLLECTOR_PORT:-4317}
MODEL_PORT=${MODEL_PORT:-8000}

"$BIN/otel-lightning" collector --listen "127.0.0.1:$COLLECTOR_PORT" --store "$STORE" &
COLLECTOR=$!
"$BIN/python" -m otel_lightning.testing.openai_stub --port "$MODEL_PORT" &
STUB=$!
trap 'kill $COLLECTOR $STUB 2>/dev/null' EXIT
sleep 1.5

OPENAI_BASE_URL="http://127.0.0.1:$MODEL_PORT/v1" OPENAI_API_KEY=unused \
OTEL_SERVICE_NAME=quickstart-agent \
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$COLLECTOR_PORT" OTEL_EXPORTER_OTLP_INSECURE=true \
  "$BIN/opentelemetry-instrument" "$BIN/python" examples/quickstart/agent.py

sleep 0.5
echo "--- transitions stored by the collector ($STORE):"
"$BIN/otel-lightning" transitions --collector "127.0.0.1:$COLLECTOR_PORT"
