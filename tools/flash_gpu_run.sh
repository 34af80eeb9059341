#!/bin/bash
# One GPU-machine run of the flash kernels with a prebuilt paddle_te_core: the flash tests, a
# compute-sanitizer pass on a small case, and bench/bench_attention.py (flash vs torch SDPA's
# FlashAttention-2 and cuDNN backends). tools/gpu_check.sh is the full build-and-check script; this
# one skips the build to save device time while iterating on the kernels.
# Usage: tools/flash_gpu_run.sh CORE_DIR OUT_DIR [bench --cases] [pytest -k filter]
set -o pipefail
export PYTHONUNBUFFERED=1 LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
CORE=$(realpath "$1"); OUT=$2; CASES=${3:-}; KFILTER=${4:-}
export PTE_CORE_DIR=$CORE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/env.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version())" | tee -a "$OUT/env.txt"
echo "== tests"
timeout 300 python3 -m pytest -q -n 8 --tb=short -rfs -p no:cacheprovider tests/gpu/test_flash_gpu.py \
  ${KFILTER:+-k "$KFILTER"} 2>&1 | tee "$OUT/test.log" | tail -40
echo "== sanitizer"
timeout 120 compute-sanitizer --tool memcheck --leak-check no python3 -m pytest -q -p no:cacheprovider \
  tests/gpu/test_flash_gpu.py -k "dropout_fwd_bwd" 2>&1 | tail -5 | tee "$OUT/sanitizer.log"
echo "== bench"
timeout 240 python3 bench/bench_attention.py --backends flash --iters 10 --csv "$OUT/bench.csv" ${CASES:+--cases "$CASES"} \
  2>&1 | tee "$OUT/bench.log"
