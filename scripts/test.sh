#!/usr/bin/env bash
# Usage: bash scripts/test.sh [pytest args...]      e.g. bash scripts/test.sh -x -q tests/unit
#
# Set up from nothing and run the whole test suite. Creates .venv (if missing), installs
# PyTorch first (TORCH_SPEC, default torch==2.13.0; set TORCH_INDEX_URL to take it from another
# index), then the project with its server and test extras, Debian's chromium (for
# the report's browser tests) and PostgreSQL (for the store tests) when missing (needs apt-get),
# then runs pytest with the arguments given.
# Fails when any test fails or when no test was collected (pytest exit 5).
# -h or --help as the first argument prints this text and does nothing else; pytest's own help:
# .venv/bin/python -m pytest --help.
# Environment: PYTHON (python3), VENV (.venv), TORCH_SPEC, TORCH_INDEX_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/usage.sh
. scripts/lib/usage.sh
case "${1:-}" in -h | --help) print_usage "scripts/${0##*/}"; exit 0 ;; esac

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV=${VENV:-.venv}
QWEN_VOCAB_WHEEL_VERSION=2.0.2

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# Reinstall only when the dependency list changed since the last successful install.
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing PyTorch ($TORCH_SPEC) before the project, so no CUDA build is pulled"
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      "${PIP[@]}" install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
    else
      "${PIP[@]}" install "$TORCH_SPEC"
    fi
  fi
  echo "==> installing the project with the server and test extras"
  "${PIP[@]}" install -e ".[server,test]"
  # silero-vad's packaged ONNX model (speech per shot); --no-deps: see pyproject.toml.
  "${PIP[@]}" install --no-deps "silero-vad>=5.1,<7"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# System packages some tests drive: Debian's Chromium for the HTML report's browser tests
# (tests/e2e/test_report*.py) and a PostgreSQL server for the PostgreSQL store's tests (the tests
# start their own server on loopback from these binaries). A fresh machine gets them here.
# Tolerant: without apt-get or root, or when the install fails, those tests skip with a reason.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing Debian's ${missing[*]} for the report and PostgreSQL tests"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo -n); fi
  if ! { "${sudo_cmd[@]}" apt-get update -qq \
      && "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
      >/dev/null 2>&1; then
    echo "==> could not install ${missing[*]}; the tests that need them will be skipped"
  fi
fi

# Qwen2's real 151,643-token vocabulary for the grammar mask-cache tests
# (tests/unit/test_grammar_mask_cache.py): Qwen's BPE ranks ship as a resource inside the
# dashscope wheel (pinned, no dependencies, not installed: only the one file is taken out).
# Tolerant: without it those tests skip with a reason.
QWEN_VOCAB="$VENV/share/qwen.tiktoken"
if [ ! -s "$QWEN_VOCAB" ]; then
  echo "==> fetching Qwen2's vocabulary (qwen.tiktoken from the dashscope wheel) for the grammar tests"
  wheels=$(mktemp -d)
  if ! { "${PIP[@]}" download --no-deps "dashscope==$QWEN_VOCAB_WHEEL_VERSION" -d "$wheels" \
      >/dev/null 2>&1 && "$VENV/bin/python" scripts/lib/extract_wheel_file.py "$wheels" \
        dashscope/resources/qwen.tiktoken "$QWEN_VOCAB"; }; then
    echo "==> could not fetch qwen.tiktoken; the Qwen2-vocabulary grammar tests will be skipped"
  fi
  rm -rf "$wheels"
fi

echo "==> running tests"
export PYTHONUNBUFFERED=1
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
