#!/usr/bin/env bash
# Usage: bash scripts/setup.sh [--client] [--model HUB_ID] [--verify] [--no-model] [--no-key]
#                              [--extras LIST]
#
# Set up this project on a machine: virtualenv, PyTorch (CUDA build where an NVIDIA GPU is
# present, the CPU build otherwise), the project, the model in the Hugging Face cache, and an
# API key file. Safe to run again: every step is skipped when already done.
# A client-only box (qwen-client, no GPU server) needs none of the server's stack: --client.
#
#   bash scripts/setup.sh                      # everything, default model
#   bash scripts/setup.sh --model Qwen/Qwen2-VL-7B-Instruct
#   bash scripts/setup.sh --verify             # check the cached model files, download nothing
#   bash scripts/setup.sh --no-model           # install only (offline machines, model.path users)
#   bash scripts/setup.sh --client             # the film client only: no torch, model or key
#   --no-key       do not create the API key file ($QWEN_HOME/api_key)
#   --client       install the client alone (same as --extras client --no-model --no-key)
#   --extras LIST  optional dependency groups to install (default: server,dev); PyTorch is
#                  installed first only when the list includes server
#   -h, --help     print this text
#
# Environment: PYTHON (python3), VENV (.venv), TORCH_SPEC (torch==2.13.0 without GPU),
# TORCH_INDEX_URL (extra index for PyTorch), EXTRAS (server,dev), QWEN_HOME (~/.config/qwen-server),
# SKIP_INSTALL=1 (reuse the existing virtualenv as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/usage.sh
. scripts/lib/usage.sh

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-server,dev}
QWEN_HOME=${QWEN_HOME:-$HOME/.config/qwen-server}
MODEL=""
VERIFY=0
DOWNLOAD=1
MAKE_KEY=1

usage() { print_usage "scripts/${0##*/}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=${2:?--model needs a hub id}; shift 2 ;;
    --verify) VERIFY=1; shift ;;
    --no-model) DOWNLOAD=0; shift ;;
    --no-key) MAKE_KEY=0; shift ;;
    --client) EXTRAS=client; DOWNLOAD=0; MAKE_KEY=0; shift ;;
    --extras) EXTRAS=${2:?--extras needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  local pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
  # Reinstall only when pyproject.toml changed since the last successful install.
  local stamp
  local needs_torch
  stamp="$VENV/.installed-${EXTRAS//,/+}-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ -f "$stamp" ]; then
    echo "==> $VENV is up to date"
    return
  fi
  case ",$EXTRAS," in *,server,*) needs_torch=1 ;; *) needs_torch=0 ;; esac
  if [ "$needs_torch" = "1" ] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    local spec=${TORCH_SPEC:-}
    if has_gpu; then
      spec=${spec:-torch>=2.4}
      echo "==> NVIDIA GPU found: installing the CUDA build of PyTorch ($spec)"
    else
      spec=${spec:-torch==2.13.0}
      echo "==> no NVIDIA GPU: installing the CPU build of PyTorch ($spec) first"
    fi
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      "${pip[@]}" install "$spec" --extra-index-url "$TORCH_INDEX_URL"
    else
      "${pip[@]}" install "$spec"
    fi
  fi
  echo "==> installing the project (extras: $EXTRAS)"
  "${pip[@]}" install -e ".[$EXTRAS]"
  # silero-vad's packaged ONNX model (speech per shot); --no-deps: its metadata demands torch
  # for the JIT model, which the client never loads (see pyproject.toml).
  "${pip[@]}" install --no-deps "silero-vad>=5.1,<7"
  rm -f "$VENV"/.installed-"${EXTRAS//,/+}"-*
  touch "$stamp"
}

if [ "${SKIP_INSTALL:-0}" = "1" ]; then
  echo "==> SKIP_INSTALL=1: using $VENV as it is"
else
  install
fi

if [ "$VERIFY" = "1" ] || [ "$DOWNLOAD" = "1" ]; then
  args=()
  [ -n "$MODEL" ] && args+=(--model "$MODEL")
  [ "$VERIFY" = "1" ] && args+=(--verify)
  "$VENV/bin/python" scripts/fetch_model.py "${args[@]}"
fi

if [ "$MAKE_KEY" = "1" ]; then
  keyfile="$QWEN_HOME/api_key"
  if [ -s "$keyfile" ]; then
    echo "==> API key file exists: $keyfile"
  else
    mkdir -p "$QWEN_HOME"
    chmod 700 "$QWEN_HOME"
    (umask 077 && "$VENV/bin/python" -c "import secrets; print(secrets.token_urlsafe(32))" >"$keyfile")
    chmod 600 "$keyfile"
    echo "==> created an API key file (mode 600): $keyfile"
    echo "    the server reads it via scripts/start_server.sh; clients use --token-file $keyfile"
  fi
fi
echo "==> setup done"
