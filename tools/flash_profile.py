#!/usr/bin/env python3
"""One case of bench/bench_attention.py, a few calls each, for a profiler to look at.

Runs paddle_te's flash backend and torch's FlashAttention-2 (SDPA's flash backend) forward and
backward on the same bf16 tensors, a handful of calls each and nothing else, so that Nsight
Compute sees both sides of the comparison (docs/performance.md, flash kernels):

    ncu --clock-control none -k 'regex:fwd_kernel|bwd_tiled|flash_fwd|flash_bwd' \\
        --section SpeedOfLight --section WarpStateStats \\
        python3 tools/flash_profile.py --d 128 --s 4096 --b 4 --h 16
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from bench_attention import Case, run_ours, run_torch  # noqa: E402
from core_import import import_core  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b", type=int, default=4)
    ap.add_argument("--s", type=int, default=4096)
    ap.add_argument("--h", type=int, default=16)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    case = Case("profile", args.b, args.s, args.h, args.d, args.causal)
    f, b, inputs = run_ours(import_core(), case, "flash", torch.bfloat16, iters=1)
    print(f"paddle_te flash: fwd {f:.3f} ms, bwd {b:.3f} ms")
    if args.peer:
        f, b, _ = run_torch(case, "flash", inputs, iters=1)
        print(f"torch flash:     fwd {f:.3f} ms, bwd {b:.3f} ms")


if __name__ == "__main__":
    main()
