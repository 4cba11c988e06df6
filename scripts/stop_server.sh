#!/usr/bin/env bash
# Usage: bash scripts/stop_server.sh [-h|--help]
#
# Stop the qwen-server started by scripts/start_server.sh, gracefully: SIGTERM makes it answer
# 503 to new requests (GET /health says "draining"), let requests in flight finish
# (server.shutdown_timeout_s), then exit. After STOP_TIMEOUT seconds (90) it is killed with
# SIGKILL. Removes the PID file. Running it when nothing runs is fine (exit 0).
#
# The PID in $RUN_DIR/qwen-server.pid (RUN_DIR defaults to ./run) is signalled only when it is
# still the qwen-server that start_server.sh recorded (program name and start time, see
# scripts/lib/pidfile.sh); a stale file naming some other process is removed and reported, and
# that process is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/usage.sh
. scripts/lib/usage.sh
# shellcheck source=scripts/lib/pidfile.sh
. scripts/lib/pidfile.sh

for arg in "$@"; do
  case "$arg" in
    -h | --help) print_usage "scripts/${0##*/}"; exit 0 ;;
    *) echo "stop_server.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

STOP_TIMEOUT=${STOP_TIMEOUT:-90}
PID_FILE=$(pidfile_path)

if ! pidfile_check "$PID_FILE"; then
  if [ "$PIDFILE_STATE" = "none" ]; then
    echo "qwen-server is not running (no $PID_FILE)"
  else
    rm -f "$PID_FILE"
    echo "qwen-server is not running: removed the stale PID file $PID_FILE ($PIDFILE_WHY); signalled nothing"
  fi
  exit 0
fi

pid=$PIDFILE_PID
echo "==> stopping qwen-server (pid $pid): draining requests in flight"
pid_terminate "$pid" "$PIDFILE_TOKEN" "$STOP_TIMEOUT" || true
rm -f "$PID_FILE"
echo "==> qwen-server stopped"
