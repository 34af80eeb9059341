#!/usr/bin/env python3
"""Probe of the cuDNN backend's short forwards (docs/performance.md, "cuDNN backend").

For short s=512 (b32 h16 d128, plain and causal) and window 256 (b1 s16384 h16 d128, causal),
bf16, prints per case, for paddle_te's cudnn backend and for torch's cuDNN SDPA on the same
tensors (the window case has no SDPA form):
  * ev:   CUDA events around each call, median of --iters (what bench_attention.py reports);
  * dev:  the same, but with the GPU held busy (torch.cuda._sleep) while the calls are queued,
          so the host cost of a call is hidden: device time only;
  * host: CPU time of one call (perf_counter, no sync), median; for ours also the CPU time of
          the five DLPack exports of a call (all with the stream / only the first).
Run with PTE_CUDNN_DEBUG=1 to have paddle_te print the plans of each graph it builds and the
autotuning times (stderr); PTE_CUDNN_AUTOTUNE=1 autotunes the plan (default: cuDNN's
heuristic choice).
Run it in several processes to see process-to-process differences.

    PTE_CORE_DIR=build/gpu/python PTE_CUDNN_DEBUG=1 python3 tools/cudnn_plan_probe.py
"""
import argparse
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_attention import time_ms  # noqa: E402
from core_import import import_core  # noqa: E402


CASES = [  # name, b, s, h, d, causal, window
    ("short_s512", 32, 512, 16, 128, False, None),
    ("short_s512_causal", 32, 512, 16, 128, True, None),
    ("window256", 1, 16384, 16, 128, True, 256),
]


def host_us(fn, iters):
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        if len(ts) % 10 == 0:
            torch.cuda.synchronize()  # keep the queue short
    torch.cuda.synchronize()
    return statistics.median(ts) * 1e6


def measure(fn, iters):
    return time_ms(fn, iters), time_ms(fn, iters, busy=True), host_us(fn, iters)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    core = import_core()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    torch.manual_seed(0)
    tag = args.tag or f"pid{os.getpid()}"
    print(f"# {tag}: {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN "
          f"{torch.backends.cudnn.version()}, PTE_CUDNN_AUTOTUNE="
          f"{os.environ.get('PTE_CUDNN_AUTOTUNE', '(default)')}")
    print("| run | case | ours ev ms | ours dev ms | ours host us | torch ev ms | torch dev ms "
          "| torch host us | ev ratio | dev ratio | 5 exports us | 5 exports, -1 after first, us |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, b, s, h, d, causal, window in CASES:
        q, k, v = (torch.randn(b, s, h, d, dtype=torch.bfloat16, device="cuda") for _ in range(3))
        out = torch.empty_like(q)
        lse = torch.empty(b, h, s, dtype=torch.float32, device="cuda")
        kw = dict(backend="cudnn", attn_mask_type="causal" if causal else "no_mask")
        if window is not None:
            kw["window_size"] = (window, 0)
        stream = torch.cuda.current_stream().cuda_stream

        def ours():
            core.fused_attn_fwd(q, k, v, out, lse=lse, stream=stream, **kw)

        o = measure(ours, args.iters)
        # Host cost of the DLPack exports of one call (5 CUDA tensors), as the module makes them
        # now (the call's stream with the first only, -1 after) against the older way (the
        # call's stream with each).
        def exports(first_only):
            for i, x in enumerate((q, k, v, out, lse)):
                x.__dlpack_device__()
                x.__dlpack__(stream=-1 if first_only and i else (stream or 1))

        dl = [host_us(lambda: exports(False), args.iters), host_us(lambda: exports(True), args.iters)]
        t = (float("nan"),) * 3
        if window is None:
            qt, kt, vt = (x.detach().transpose(1, 2).requires_grad_() for x in (q, k, v))
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                def theirs():
                    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

                t = measure(theirs, args.iters)
                ref = theirs().detach().transpose(1, 2)
            ours()
            torch.cuda.synchronize()
            err = (out.float() - ref.float()).abs().max().item()
            assert err < 2e-2, f"{name}: ours differs from torch by {err}"
        print(f"| {tag} | {name} | {o[0]:.3f} | {o[1]:.3f} | {o[2]:.0f} | {t[0]:.3f} | {t[1]:.3f} "
              f"| {t[2]:.0f} | {o[0] / t[0]:.3f} | {o[1] / t[1]:.3f} | {dl[0]:.0f} | {dl[1]:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
