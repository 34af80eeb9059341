#!/usr/bin/env bash
# One command on a GPU machine (GPU_TESTING.md): build the CUDA core and its pybind11 module,
# run the GPU tests against tests/reference.py, compute-sanitizer (memcheck, racecheck) on small
# cases, and the benchmarks with their peers; prints a summary table last.
#
#   tools/gpu_check.sh                      # everything
#   GPU_CHECK_ONLY="build test_softmax" tools/gpu_check.sh   # only the steps named
#   GPU_CHECK_SKIP="bench_attention" tools/gpu_check.sh
#
# Environment: OUT (results; default /tmp/gpu_out), PTE_GPU_BUILD (build dir; default
# build/gpu), PTE_ARCHS (default 90a), PTE_CMAKE_ARGS (extra cmake args), JOBS.
# What comes back in $OUT is kept to a few files (the device tool returns at most 8):
# gpu_check.log (every step's output, in order), summary.md, and one CSV per benchmark.
# Full per-step logs stay in $LOGS.
#
# Adding a step is one line in the STEPS section: `step NAME command args...`. A step fails
# when its command exits non-zero; later steps still run (a failed build skips what needs it),
# and the script exits non-zero if any step failed. A benchmark that prints a markdown table
# (lines starting with '|') gets it copied into summary.md.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/gpu_out}"
BUILD="${PTE_GPU_BUILD:-$ROOT/build/gpu}"
ARCHS="${PTE_ARCHS:-90a}"
JOBS="${JOBS:-$(nproc)}"
LOGS="${LOGS:-/tmp/gpu_check_logs}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" "$LOGS"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.md"
: >"$LOG"
: >"$SUMMARY"
export PTE_CORE_DIR="$BUILD/python"
export PYTHONUNBUFFERED=1

# Header-only wheels carried to a machine without network (tools/fetch_deps.sh puts them there).
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$ROOT"/.whl/*.whl \
    >>"$LOG" 2>&1 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

RESULTS=()
FAILED=0
BUILD_OK=1

wanted() {
  local name=$1
  if [[ -n "${GPU_CHECK_ONLY:-}" && " $GPU_CHECK_ONLY " != *" $name "* ]]; then return 1; fi
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then return 1; fi
  return 0
}

# step NAME CMD...: run CMD, log it, record PASS/FAIL and the time.
step() {
  local name=$1
  shift
  wanted "$name" || return 0
  if [[ $BUILD_OK == 0 && $name != build ]]; then
    RESULTS+=("| $name | SKIP (build failed) | - |")
    return 0
  fi
  local t0=$SECONDS status
  echo "=== $name: $*" | tee -a "$LOG"
  if "$@" >"$LOGS/$name.log" 2>&1; then status=PASS; else status="FAIL (rc $?)"; FAILED=1; fi
  local dt=$((SECONDS - t0))
  cat "$LOGS/$name.log" >>"$LOG"
  echo "=== $name: $status in ${dt}s" | tee -a "$LOG"
  [[ $status == PASS ]] || tail -n 25 "$LOGS/$name.log"
  if grep -q '^|' "$LOGS/$name.log"; then
    { echo "### $name"; grep '^|' "$LOGS/$name.log"; grep -i '^copy ceiling' "$LOGS/$name.log"; echo; } >>"$SUMMARY"
  fi
  RESULTS+=("| $name | $status | ${dt}s |")
  [[ $name == build && $status != PASS ]] && BUILD_OK=0
  return 0
}

build() {
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPTE_WITH_CUDA=ON \
    -DPTE_ARCHS="$ARCHS" -DPython3_EXECUTABLE="$(command -v "$PY")" ${PTE_CMAKE_ARGS:-} &&
    cmake --build "$BUILD" -j "$JOBS" &&
    "$PY" -c "import sys; sys.path.insert(0, '$PTE_CORE_DIR'); import paddle_te_core as c; \
print('paddle_te_core', c.__version__, 'with_cuda', c.with_cuda); print(c.backends())"
}

pytest_gpu() {  # pytest_gpu FILES...: -x, in parallel when pytest-xdist is there
  local par=()
  "$PY" -c "import xdist" 2>/dev/null && par=(-n "${PYTEST_WORKERS:-8}")
  "$PY" -m pytest -x -q -ra "${par[@]}" "$@"
}

# sanitize TOOL: compute-sanitizer over the small cases of tools/gpu_sanitize.py. Racecheck skips
# cuDNN's own generated kernels (names starting cudnn_generated): on 2026-11-25 it reported 20
# shared-memory hazards inside cuDNN 9.19's sm90 wgmma SDPA kernels (fprop and bprop), code that
# is not ours and that cuDNN builds; every kernel of paddle_te (flash, softmax, seqlens, the cudnn
# backend's helper kernels) is still checked, and memcheck covers the cuDNN kernels too.
sanitize() {
  local filter=()
  [[ $1 == racecheck ]] && filter=(--kernel-name-exclude kns=cudnn_generated)
  compute-sanitizer --tool "$1" "${filter[@]}" --error-exitcode 99 "$PY" tools/gpu_sanitize.py
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
  2>&1 | tee -a "$LOG"

# ---- STEPS (one line each) ----------------------------------------------------------------------
step build build
step ctest ctest --test-dir "$BUILD" --output-on-failure
step test_softmax pytest_gpu tests/gpu/test_softmax_gpu.py
step test_seqlens pytest_gpu tests/gpu/test_seqlens_gpu.py
step test_attention pytest_gpu tests/gpu/test_attention_gpu.py
step test_decode pytest_gpu tests/gpu/test_decode_gpu.py
step test_flashmask pytest_gpu tests/gpu/test_flashmask_gpu.py
step memcheck sanitize memcheck
step racecheck sanitize racecheck
step bench_softmax "$PY" bench/bench_softmax.py --check --compile 2048 --csv "$OUT/bench_softmax.csv"
step bench_attention "$PY" bench/bench_attention.py --csv "$OUT/bench_attention.csv"
step bench_decode "$PY" bench/bench_decode.py --check --kernels mma,simt --csv "$OUT/bench_decode.csv"
step bench_flashmask "$PY" bench/bench_flashmask.py --csv "$OUT/bench_flashmask.csv" --plot "$OUT/flashmask_density.png"
# ------------------------------------------------------------------------------------------------

{
  echo "## gpu_check $(date -u +%Y-%m-%dT%H:%MZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
  printf '%s\n' "${RESULTS[@]}"
} >>"$SUMMARY"
echo
cat "$SUMMARY"  # benchmark tables, then the step table last
exit $FAILED
