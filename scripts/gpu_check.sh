#!/usr/bin/env bash
# Usage: bash scripts/gpu_check.sh [--cpu]
#
# The one prepared device check (issue 14): on a bare GPU machine whose own python has torch,
# in one go and inside GPU_CHECK_BUDGET_S seconds (450: under 8 minutes with set-up), it runs
#   1. the gpu-marked tests (tests/integration/test_gpu*.py and every test file marked gpu),
#   2. bench_server.py --arch qwen2-vl-2b --random-weights at batch 32,64,128, grammar off and
#      on, frames as video and as images (one process per combination, one checkpoint built once),
#      with the one-at-a-time baseline for video (grammar off and on),
#   3. the OOM drill (E1's gpu-marked test_oom_drill_* test, or qwen_server.engine.oom_drill),
#   4. the xgrammar CUDA masking backend the engine picks, its first-call latency and steady cost,
#   5. peak GPU memory (torch max_memory_allocated, per bench run and overall),
#   6. sdpa vs flash-attention 2 at batch 64 when flash-attn is installed,
# then prints one markdown table and writes it to $OUT/gpu_check.md ($OUT set) or ./gpu_check.md.
# Steps that fail, time out or are not available get a row saying so; the script goes on.
# Exit status: 0 when every step ran and passed, 1 otherwise (the table is written either way).
#
# --cpu (or GPU_CHECK_DRY=1): the same steps on the CPU with the tiny model, tiny batch sizes
# (2,4,8), 2 frames of 112 px and 4 new tokens: proves the script itself works (tests do this).
#
# Wheels: packages the machine lacks travel as wheels in GPU_CHECK_WHEELS (default .whl; see
# scripts/gpu_wheels.sh); when that folder holds any, they are installed first with
# `pip install --no-index --no-deps --target` into GPU_CHECK_SITE and put on PYTHONPATH.
# Environment: PYTHON (python3; .venv/bin/python in --cpu mode when present), GPU_CHECK_DRY,
# GPU_CHECK_WHEELS, GPU_CHECK_SITE (/tmp/gpu_check_site), GPU_CHECK_WORK (a new temp dir),
# GPU_CHECK_BUDGET_S (450; 1500 with --cpu, whose step limits are 3x), GPU_CHECK_BATCHES
# (32,64,128), GPU_CHECK_SHOTS (256 per size), GPU_CHECK_GRAMMAR_SHOTS (128 per size).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/lib/usage.sh
. scripts/lib/usage.sh
case "${1:-}" in -h | --help) print_usage "scripts/${0##*/}"; exit 0 ;; esac

DRY=${GPU_CHECK_DRY:-0}
if [ "${1:-}" = "--cpu" ]; then DRY=1; fi
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ "$DRY" = 1 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
START=$(date +%s)
# The dry run's CPU is slower than the GPU and often shared: its limits are longer.
if [ "$DRY" = 1 ]; then BUDGET=${GPU_CHECK_BUDGET_S:-1500}; SLOW=3; else
  BUDGET=${GPU_CHECK_BUDGET_S:-450}; SLOW=1; fi
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
REPORT=${OUT:-.}/gpu_check.md
PROBES=(scripts/gpu_check_probes.py)
FAILED=0

say() { printf '==> [%3ds] %s\n' "$(($(date +%s) - START))" "$*"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
record() { # record CHECK SETTING RESULT [SECONDS]
  "$PY" "${PROBES[@]}" record --results "$RESULTS" --check "$1" --setting "$2" --result "$3" \
    ${4:+--seconds "$4"} || true
}

# run_step NAME MAX_SECONDS CMD...: runs CMD with a timeout of min(MAX_SECONDS, budget left),
# its output in $WORK/NAME.log (and the end of it on the console when it fails). Sets STEP_RC
# and STEP_S. Returns 1 without running when less than 15 s of the budget is left. Rows it
# records name the step STEP_LABEL when set (else NAME).
run_step() {
  local name=$1 max=$(($2 * SLOW))
  local label=${STEP_LABEL:-$1}
  shift 2
  local t0 limit
  limit=$(left)
  if [ "$limit" -lt 15 ]; then
    say "$name: skipped, the time budget is spent"
    record "$label" "" "skipped: time budget (${BUDGET}s) spent"
    FAILED=1
    return 1
  fi
  [ "$max" -lt "$limit" ] && limit=$max
  say "$name (at most ${limit}s)"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  STEP_RC=$?
  STEP_S=$(($(date +%s) - t0))
  if [ "$STEP_RC" -ne 0 ]; then
    FAILED=1
    say "$name: exit $STEP_RC after ${STEP_S}s; end of its log:"
    tail -n 15 "$WORK/$name.log"
    if [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; then
      record "$label" "" "TIMED OUT after ${STEP_S}s (limit ${limit}s)" "$STEP_S"
    fi
  fi
  return 0
}

timed_out() { [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; }

# --- set-up: carried wheels, the mode's sizes ------------------------------------------------
WHEELS=${GPU_CHECK_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
  say "installing $(find "$WHEELS" -name '*.whl' | wc -l) carried wheels into $SITE"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$WHEELS"/*.whl; then
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  else
    say "installing the wheels failed; going on with what the machine has"
    FAILED=1
  fi
fi

if [ "$DRY" = 1 ]; then
  MODE="dry run on the CPU (tiny model): checks the script, not the GPU"
  BATCHES=${GPU_CHECK_BATCHES:-2,4,8}
  SHOTS=${GPU_CHECK_SHOTS:-8}
  GRAMMAR_SHOTS=${GPU_CHECK_GRAMMAR_SHOTS:-$SHOTS}
  BENCH=(--device cpu --frames 2 --size 112 --new-tokens 4 --model-cache "$WORK/model-tiny")
  ATTN_BATCH=4
  GPU_MARK=(-m gpu) # they skip without CUDA: the step runs and the row says so
  DRILL_K="oom_drill and cpu"
  VOCAB=0
  MODEL_DIR=$WORK/model-tiny
else
  MODE="GPU: Qwen2-VL-2B architecture, random bf16 weights, 5 frames of 448 px, 60 new tokens"
  BATCHES=${GPU_CHECK_BATCHES:-32,64,128}
  SHOTS=${GPU_CHECK_SHOTS:-256}
  # Constrained answers run to the caption's length (over 100 tokens with random weights):
  # half the shots keep these sweeps inside their share of the budget.
  GRAMMAR_SHOTS=${GPU_CHECK_GRAMMAR_SHOTS:-128}
  BENCH=(--arch qwen2-vl-2b --random-weights --frames 5 --size 448 --new-tokens 60
    --model-cache "$WORK/model-2b")
  ATTN_BATCH=64
  GPU_MARK=(-m gpu)
  DRILL_K="oom_drill and cuda"
  VOCAB=151936
  MODEL_DIR=$WORK/model-2b
fi
say "mode: $MODE; python: $PY; work dir: $WORK; report: $REPORT"
"$PY" "${PROBES[@]}" env --results "$RESULTS" || FAILED=1

# --- 1. gpu-marked tests ---------------------------------------------------------------------
mapfile -t GPU_FILES < <({ ls tests/integration/test_gpu*.py 2>/dev/null
  grep -rl --include='test_*.py' 'mark.gpu' tests 2>/dev/null; } | sort -u)
if STEP_LABEL="gpu-marked tests" run_step gpu_tests 180 "$PY" -m pytest -q -p no:cacheprovider "${GPU_MARK[@]}" \
    -k "not oom_drill" --junitxml "$WORK/gpu_tests.xml" "${GPU_FILES[@]}" && ! timed_out; then
  "$PY" "${PROBES[@]}" pytest --results "$RESULTS" --input "$WORK/gpu_tests.xml" \
    --label "gpu-marked tests: ${GPU_FILES[*]}" --seconds "$STEP_S" || FAILED=1
fi

# --- 2. bench_server: batch sweep x grammar x frames ---------------------------------------
# bench LABEL MAX_SECONDS SHOTS FLAGS...: one sweep process; its rows go to the table.
bench() {
  local label=$1 max=$2 shots=$3 name
  shift 3
  name=bench_$(printf '%s' "$label" | tr -c 'a-z0-9' '_')
  if STEP_LABEL="bench_server ($label)" run_step "$name" "$max" "$PY" scripts/bench_server.py \
      "${BENCH[@]}" --batch-sizes "$BATCHES" --shots "$shots" --request-size 8 \
      --json "$WORK/$name.json" "$@"; then
    if [ "$STEP_RC" -eq 0 ]; then
      "$PY" "${PROBES[@]}" bench --results "$RESULTS" --input "$WORK/$name.json" \
        --label "$label" --seconds "$STEP_S" || FAILED=1
    elif ! timed_out; then
      record bench_server "$label" "FAILED (exit $STEP_RC): $(tail -n 1 "$WORK/$name.log")"
    fi
  fi
}
bench "video, grammar off" 150 "$SHOTS" --frames-as video --baseline-shots 8
bench "video, grammar on" 150 "$GRAMMAR_SHOTS" --frames-as video --grammar --baseline-shots 4

# --- 3. the OOM drill ------------------------------------------------------------------------
mapfile -t DRILL_FILES < <(grep -rl --include='test_*.py' 'def test_oom_drill' tests 2>/dev/null)
if "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('qwen_server.engine.oom_drill') is None)" 2>/dev/null; then
  if STEP_LABEL="OOM drill" run_step oom_drill 90 "$PY" -m qwen_server.engine.oom_drill; then
    record "OOM drill" "python -m qwen_server.engine.oom_drill" \
      "exit $STEP_RC: $(tail -n 1 "$WORK/oom_drill.log")" "$STEP_S"
  fi
elif [ "${#DRILL_FILES[@]}" -gt 0 ]; then
  if STEP_LABEL="OOM drill" run_step oom_drill 90 "$PY" -m pytest -q -p no:cacheprovider -k "$DRILL_K" \
      --junitxml "$WORK/oom_drill.xml" "${DRILL_FILES[@]}" && ! timed_out; then
    "$PY" "${PROBES[@]}" pytest --results "$RESULTS" --input "$WORK/oom_drill.xml" \
      --label "OOM drill: -k '$DRILL_K' ${DRILL_FILES[*]}" --seconds "$STEP_S" || FAILED=1
  fi
else
  say "OOM drill: not available (no qwen_server.engine.oom_drill, no test_oom_drill_* test)"
  record "OOM drill" "" "not available in this checkout"
fi

# --- 4. xgrammar backend and first-call latency ---------------------------------------------
if run_step xgrammar 90 "$PY" "${PROBES[@]}" xgrammar --results "$RESULTS" --model "$MODEL_DIR" \
    --batch "$ATTN_BATCH" --vocab-size "$VOCAB"; then
  [ "$STEP_RC" -eq 0 ] || record xgrammar "" "FAILED (exit $STEP_RC): $(tail -n 1 "$WORK/xgrammar.log")"
fi

# --- images (slower: every frame its own image) ---------------------------------------------
bench "images, grammar off" 120 "$SHOTS" --frames-as images --baseline-shots 0
bench "images, grammar on" 120 "$GRAMMAR_SHOTS" --frames-as images --grammar --baseline-shots 0

# --- 6. sdpa vs flash-attention 2 ------------------------------------------------------------
if "$PY" -c "import flash_attn" 2>/dev/null; then
  for attn in sdpa flash_attention_2; do
    name=attn_$attn
    if STEP_LABEL="attention ($attn)" run_step "$name" 90 "$PY" scripts/bench_server.py "${BENCH[@]}" --batch-size "$ATTN_BATCH" \
        --shots $((2 * ATTN_BATCH)) --baseline-shots 0 --attn-implementation "$attn" \
        --json "$WORK/$name.json"; then
      if [ "$STEP_RC" -eq 0 ]; then
        "$PY" "${PROBES[@]}" bench --results "$RESULTS" --input "$WORK/$name.json" \
          --label "attention: video, grammar off" || FAILED=1
      else
        record attention "$attn" "FAILED (exit $STEP_RC): $(tail -n 1 "$WORK/$name.log")"
      fi
    fi
  done
else
  record attention "sdpa vs flash_attention_2" \
    "flash-attn not installed: sdpa only (the bench rows); auto resolves to sdpa"
fi

# --- the table -------------------------------------------------------------------------------
TOTAL=$(($(date +%s) - START))
record "gpu_check.sh" "$MODE" "$([ "$FAILED" = 0 ] && echo "all steps passed" || echo "SOME STEPS FAILED (see rows; logs in $WORK)")" "$TOTAL"
mkdir -p "$(dirname "$REPORT")"
"$PY" "${PROBES[@]}" table --results "$RESULTS" --out "$REPORT" \
  --title "GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), ${TOTAL}s" || FAILED=1
say "table written to $REPORT; step logs in $WORK"
exit "$FAILED"
