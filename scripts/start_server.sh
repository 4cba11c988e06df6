#!/usr/bin/env bash
# Usage: bash scripts/start_server.sh [qwen-server flags...]
#        e.g. bash scripts/start_server.sh --model /models/qwen2-vl-2b --port 8080
#
# Start qwen-server in the background and wait until it serves. Flags go to qwen-server
# (`.venv/bin/qwen-server --help` lists them); -h/--help anywhere prints this text and starts
# nothing.
#
# Log: $RUN_DIR/qwen-server.log, PID file: $RUN_DIR/qwen-server.pid (RUN_DIR defaults to ./run),
# holding the PID and the process start time. Waits up to START_TIMEOUT seconds (600) for
# GET /health to answer 200; if the server exits or the wait times out, shows the end of the log
# and exits 1. A server already running from this RUN_DIR is left alone (exit 0): a second copy
# is never started. A PID file whose PID is no longer that server (it exited and the PID was
# reused by another process) is stale: it is replaced, and that process is left alone.
# Keys: QWEN_SERVER_API_KEYS, server.api_key_file, or the key file made by setup.sh
# ($QWEN_HOME/api_key), passed as --api-key-file when neither of the others is set.
# Environment: VENV (.venv), RUN_DIR (run), START_TIMEOUT (600), QWEN_HOME (~/.config/qwen-server).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/usage.sh
. scripts/lib/usage.sh
# shellcheck source=scripts/lib/pidfile.sh
. scripts/lib/pidfile.sh

# --help is ours, wherever it is: never pass it on to a server start.
for arg in "$@"; do
  case "$arg" in -h | --help) print_usage "scripts/${0##*/}"; exit 0 ;; esac
done

VENV=${VENV:-.venv}
RUN_DIR=${RUN_DIR:-run}
START_TIMEOUT=${START_TIMEOUT:-600}
QWEN_HOME=${QWEN_HOME:-$HOME/.config/qwen-server}
PID_FILE=$(pidfile_path)
LOG_FILE="$RUN_DIR/qwen-server.log"
SERVER="$VENV/bin/qwen-server"

[ -x "$SERVER" ] || { echo "start_server.sh: $SERVER not found: run scripts/setup.sh first" >&2; exit 2; }
mkdir -p "$RUN_DIR"

if pidfile_check "$PID_FILE"; then
  echo "qwen-server is already running (pid $PIDFILE_PID, log $LOG_FILE); not starting a second copy"
  exit 0
elif [ "$PIDFILE_STATE" = "stale" ]; then
  echo "removing stale PID file $PID_FILE ($PIDFILE_WHY)"
  rm -f "$PID_FILE"
fi

args=("$@")
if [ -z "${QWEN_SERVER_API_KEYS:-}" ] && [ -s "$QWEN_HOME/api_key" ]; then
  case " $* " in *" --api-key-file "*|*" --insecure-no-auth "*) ;; *)
    args+=(--api-key-file "$QWEN_HOME/api_key") ;;
  esac
fi

# Validate settings first so a typo fails here, in the terminal, not in the log.
read -r host port < <("$SERVER" --check-config "${args[@]}") || exit 2
[ "$host" = "0.0.0.0" ] && host=127.0.0.1
[ "$host" = "::" ] && host="[::1]"

echo "==> starting qwen-server on $host:$port (log: $LOG_FILE)"
# setsid: the server gets its own session, so it outlives this shell and its terminal.
setsid "$SERVER" "${args[@]}" >>"$LOG_FILE" 2>&1 </dev/null &
pid=$!
pidfile_write "$PID_FILE" "$pid"
pidfile_read "$PID_FILE" || true
token=$PIDFILE_TOKEN

health() {
  "$VENV/bin/python" - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

deadline=$((SECONDS + START_TIMEOUT))
while [ $SECONDS -lt $deadline ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "qwen-server exited during start-up; last lines of $LOG_FILE:" >&2
    tail -n 30 "$LOG_FILE" >&2
    rm -f "$PID_FILE"
    exit 1
  fi
  if health "http://$host:$port/health"; then
    echo "==> qwen-server is serving at http://$host:$port (pid $pid)"
    exit 0
  fi
  sleep 1
done
echo "qwen-server did not become healthy within ${START_TIMEOUT}s; stopping it. Last lines of $LOG_FILE:" >&2
tail -n 30 "$LOG_FILE" >&2
pid_terminate "$pid" "$token" 10 || true
rm -f "$PID_FILE"
exit 1
