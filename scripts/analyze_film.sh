#!/usr/bin/env bash
# Usage: bash scripts/analyze_film.sh FILM [--out DIR] [--model ID|DIR] [--tiny-model]
#                                          [--server URL] [-- qwen-client analyze flags...]
#
# Analyse a film end to end: set up (if needed), start a local server (if none answers), run
# the client on the film, write the results, stop the server it started (and only that one).
#
#   --out DIR      results folder (default: results/<film name>)
#   --model X      hub id or local checkpoint for the local server (default: config.yaml)
#   --tiny-model   build and use the tiny RANDOM-WEIGHT test checkpoint: shows the whole path on
#                  machines without the real model; captions and scores are then meaningless
#   --server URL   use a running server instead of starting one (key: QWEN_SERVER_TOKEN or
#                  $QWEN_HOME/api_key)
#   -h, --help     print this text
# Environment: SKIP_INSTALL=1 reuses .venv as it is; RUN_DIR, QWEN_HOME as in the other scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/usage.sh
. scripts/lib/usage.sh
# shellcheck source=scripts/lib/pidfile.sh
. scripts/lib/pidfile.sh

VENV=${VENV:-.venv}
QWEN_HOME=${QWEN_HOME:-$HOME/.config/qwen-server}
export QWEN_HOME
FILM=""
OUT=""
MODEL=""
TINY=0
SERVER_URL=""
CLIENT_ARGS=()

usage() { print_usage "scripts/${0##*/}"; }

# Stop the server this script started, and only while the PID file still names that very one.
stop_started_server() {
  if pidfile_read "$(pidfile_path)" && [ "$PIDFILE_PID" = "$started_pid" ] &&
    [ "$PIDFILE_TOKEN" = "$started_token" ]; then
    bash scripts/stop_server.sh
  else
    echo "==> the PID file no longer names the qwen-server this script started: not stopping anything"
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --model) MODEL=${2:?--model needs a hub id or folder}; shift 2 ;;
    --tiny-model) TINY=1; shift ;;
    --server) SERVER_URL=${2:?--server needs a URL}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; CLIENT_ARGS=("$@"); break ;;
    -*) echo "analyze_film.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$FILM" ] || { echo "analyze_film.sh: one film at a time" >&2; exit 2; }; FILM=$1; shift ;;
  esac
done
[ -n "$FILM" ] || { usage >&2; exit 2; }
[ -f "$FILM" ] || { echo "analyze_film.sh: film not found: $FILM" >&2; exit 2; }
name=$(basename "$FILM"); name=${name%.*}
OUT=${OUT:-results/$name}

setup_args=(--no-model)
bash scripts/setup.sh "${setup_args[@]}"
keyfile="$QWEN_HOME/api_key"

server_args=()
if [ -z "$SERVER_URL" ]; then
  if [ "$TINY" = "1" ]; then
    MODEL=models/tiny-qwen2-vl-random-weights
    if [ ! -f "$MODEL/config.json" ]; then
      echo "==> building the tiny random-weight test checkpoint in $MODEL"
      "$VENV/bin/python" scripts/make_tiny_model.py --out "$MODEL"
    fi
    echo "!!  RANDOM-WEIGHT TEST MODEL: captions and model scores are noise; only the measured"
    echo "!!  signals and audio cues mean anything. Use a real checkpoint for real results."
  elif [ -z "$MODEL" ] || [ ! -d "$MODEL" ]; then
    # A hub model must be in the cache (or downloadable) before a server can load it.
    fetch=()
    [ -n "$MODEL" ] && fetch=(--model "$MODEL")
    if ! "$VENV/bin/python" scripts/fetch_model.py "${fetch[@]}"; then
      echo "analyze_film.sh: no model available; see above (or try --tiny-model)" >&2
      exit 3
    fi
  fi
  [ -n "$MODEL" ] && server_args+=(--model "$MODEL")
  read -r host port < <("$VENV/bin/qwen-server" --check-config --api-key-file "$keyfile" "${server_args[@]}")
  [ "$host" = "0.0.0.0" ] && host=127.0.0.1
  SERVER_URL="http://$host:$port"
  if "$VENV/bin/qwen-client" health --server "$SERVER_URL" --token-file "$keyfile" >/dev/null 2>&1; then
    echo "==> using the server already running at $SERVER_URL"
  else
    pid_file=$(pidfile_path)
    if pidfile_check "$pid_file"; then
      # Running but not answering yet (still loading?): start_server.sh waits for it; it is
      # not ours to stop.
      bash scripts/start_server.sh "${server_args[@]}"
    else
      bash scripts/start_server.sh "${server_args[@]}"
      pidfile_read "$pid_file" || { echo "analyze_film.sh: $pid_file missing after start" >&2; exit 1; }
      started_pid=$PIDFILE_PID
      started_token=$PIDFILE_TOKEN
      trap stop_started_server EXIT
    fi
  fi
fi

token_args=()
if [ -z "${QWEN_SERVER_TOKEN:-}" ]; then token_args=(--token-file "$keyfile"); fi
echo "==> analysing $FILM -> $OUT"
"$VENV/bin/qwen-client" analyze "$FILM" --server "$SERVER_URL" --out "$OUT" \
  "${token_args[@]}" "${CLIENT_ARGS[@]}"
echo "==> results in $OUT (shots.jsonl, shots.csv, summary.json)"
