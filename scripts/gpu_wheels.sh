#!/usr/bin/env bash
# Usage: bash scripts/gpu_wheels.sh [DIR]
#
# Download the wheels the GPU machine lacks for the server and its tests (python 3.12,
# manylinux x86_64) into DIR (default .whl), for scripts/gpu_check.sh to install there with
# `pip install --no-index --no-deps --target`. The machine's own python already has torch,
# transformers (5.17, above the floor 5.3), accelerate, safetensors, tokenizers, pillow, numpy,
# httpx, pyyaml, prometheus-client, pytest and pytest-timeout; what it lacks is xgrammar, the
# pydantic / fastapi / uvicorn stack and openai (the chat module imports it), with their needs.
# Each package is pinned to the version this checkout's .venv has (tested here), else the newest.
# --no-deps: the list below is the whole closure, checked by hand against each wheel's
# Requires-Dist; one version of each (two stop the install there).
#
# Before carrying, once: echo /.whl/ >> .git/info/exclude (the wheels must not be committed).
# Then: run(command="bash scripts/gpu_check.sh", carry=[".whl"]).
# Environment: PYTHON (.venv/bin/python, else python3) for pip and for reading the pins;
# GPU_WHEELS_EXTRA: more NAME==VERSION specs, e.g. "transformers==5.24.0 huggingface_hub==2.4.0
# tokenizers==0.23.3" to test the newest transformers there instead of the machine's.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/lib/usage.sh
. scripts/lib/usage.sh
case "${1:-}" in -h | --help) print_usage "scripts/${0##*/}"; exit 0 ;; esac

DIR=${1:-.whl}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi

PACKAGES=(
  xgrammar apache-tvm-ffi
  pydantic pydantic-core pydantic-settings annotated-types typing-inspection typing-extensions
  python-dotenv
  fastapi starlette uvicorn annotated-doc opentelemetry-api anyio h11
  openai jiter sniffio httpx2 httpcore2 truststore
)
PLATFORMS=()
for tag in manylinux_2_17 manylinux2014 manylinux1 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
    manylinux_2_31 manylinux_2_34 manylinux_2_35; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done

mkdir -p "$DIR"
specs=()
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$name" 2>/dev/null || true)
  specs+=("$name${version:+==$version}")
done
# shellcheck disable=SC2206  # GPU_WHEELS_EXTRA is a space-separated list on purpose
specs+=(${GPU_WHEELS_EXTRA:-})

for spec in "${specs[@]}"; do
  echo "==> $spec"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$DIR" "$spec"
done
echo "==> $(find "$DIR" -name '*.whl' | wc -l) wheels, $(du -sh "$DIR" | cut -f1) in $DIR"
