#!/usr/bin/env bash
# Stop the qwen-server started by start_server.sh, gracefully.
#
#   bash scripts/stop_server.sh
#
# Sends SIGTERM: the server answers 503 to new requests, lets requests in flight finish
# (server.shutdown_timeout_s), then exits. After STOP_TIMEOUT seconds (90) it is killed with
# SIGKILL. Removes the PID file. Running it when nothing runs is fine (exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${RUN_DIR:-run}
STOP_TIMEOUT=${STOP_TIMEOUT:-90}
PID_FILE="$RUN_DIR/qwen-server.pid"

if [ ! -f "$PID_FILE" ]; then
  echo "qwen-server is not running (no $PID_FILE)"
  exit 0
fi
pid=$(cat "$PID_FILE" 2>/dev/null || true)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  echo "qwen-server is not running (stale PID file removed)"
  rm -f "$PID_FILE"
  exit 0
fi

echo "==> stopping qwen-server (pid $pid): draining requests in flight"
kill -TERM "$pid"
deadline=$((SECONDS + STOP_TIMEOUT))
while kill -0 "$pid" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then
    echo "still running after ${STOP_TIMEOUT}s: sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    break
  fi
  sleep 0.5
done
rm -f "$PID_FILE"
echo "==> qwen-server stopped"
