#!/usr/bin/env bash
# One call of a time-limited GPU machine (one command, <= 10 minutes): build the CUDA core for
# sm_90a with tools/gpu_check.sh, then the named steps, each cut off at what is left of LIMIT
# seconds, logs under $OUT (one file per step, steps.log with the exit codes and times).
#
#   OUT=/tmp/o STEPS="att fm dec bench" tools/gpu_session.sh
#
# Steps: att (tests/gpu/test_attention_gpu.py; TVARS variants, default flash-sm90; ATTK: -k),
# fm (test_flashmask_gpu.py -k FMK, default sm90), dec (test_decode_gpu.py -k DECK, default mma),
# san (compute-sanitizer SAN tools, default memcheck racecheck), bench (bench_attention.py,
# BCASES cases, BBACK backends), dbench (bench_decode.py), fbench (bench_flashmask.py, S = 8k).
# PTE_CMAKE_ARGS passes through to the build (e.g. -DPTE_HDIMS=64;128;256).
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
LIMIT=${LIMIT:-570}
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
left() { echo $((LIMIT - (SECONDS - T0))); }
OUT=$OUT/build PTE_ARCHS=90a GPU_CHECK_ONLY=build timeout 300 tools/gpu_check.sh >"$OUT/build.log" 2>&1
echo "build rc $? at $((SECONDS - T0))s" | tee -a "$OUT/steps.log"
echo "ptxas C7512 lines: $(grep -c C7512 /tmp/gpu_check_logs/build.log)" | tee -a "$OUT/steps.log"
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PTE_CORE_DIR=$PWD/build/gpu/python
par=()
python3 -c "import xdist" 2>/dev/null && par=(-n 8)
runstep() {  # runstep NAME TIMEOUT CMD...
  local name=$1 to=$2 l t
  shift 2
  l=$(left)
  if ((l < 20)); then echo "$name skipped (no time left)" | tee -a "$OUT/steps.log"; return; fi
  ((to > l)) && to=$l
  t=$SECONDS
  timeout "$to" "$@" >"$OUT/$name.log" 2>&1
  echo "$name rc $? in $((SECONDS - t))s" | tee -a "$OUT/steps.log"
  tail -n 4 "$OUT/$name.log"
}
for s in ${STEPS:-att fm dec bench}; do
  case $s in
    att) PTE_TEST_VARIANTS=${TVARS:-flash-sm90} runstep test_attention "${ATT:-150}" \
      python3 -m pytest -q -x -ra "${par[@]}" tests/gpu/test_attention_gpu.py -k "${ATTK:-}" ;;
    fm) runstep test_flashmask 90 python3 -m pytest -q -ra "${par[@]}" \
      tests/gpu/test_flashmask_gpu.py -k "${FMK:-sm90}" ;;
    dec) runstep test_decode "${DECT:-150}" python3 -m pytest -q -ra "${par[@]}" \
      tests/gpu/test_decode_gpu.py -k "${DECK:-mma}" ;;
    san) for t in ${SAN:-memcheck racecheck}; do
        runstep "$t" 150 compute-sanitizer --tool "$t" --kernel-name-exclude kns=cudnn_generated \
          --error-exitcode 99 python3 tools/gpu_sanitize.py
      done ;;
    bench) runstep bench_attention 200 python3 bench/bench_attention.py \
      --cases "${BCASES:-dense,gqa,short,varlen,window}" \
      --backends "${BBACK:-cudnn,flash,flash@deterministic=1}" --peers cudnn --iters 20 \
      --csv "$OUT/bench_attention.csv" ;;
    dbench) runstep bench_decode 150 python3 bench/bench_decode.py --kernels "${DKERN:-mma}" \
      --pages 16,256 --csv "$OUT/bench_decode.csv" ;;
    fbench) runstep bench_flashmask 200 python3 bench/bench_flashmask.py --seqlens 8192 \
      --variants sm90 --no-flex --csv "$OUT/bench_flashmask.csv" --plot "$OUT/flashmask.png" ;;
    *) echo "unknown step $s" | tee -a "$OUT/steps.log" ;;
  esac
done
echo "total $((SECONDS - T0))s" | tee -a "$OUT/steps.log"
