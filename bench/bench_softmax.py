#!/usr/bin/env python3
"""Masked softmax: paddle_te (through paddle_te_core) vs torch on the same inputs, same run.

For each row length s_kv the tensor is [b, h, s_q, s_kv] with b*h*s_q*s_kv = 2^29 elements
(1 GiB in fp16/bf16: far past L2), and these cases:
  fwd        y = softmax(scale * x)
  fwd_mask   ... with a bool mask [b, 1, s_q, s_kv] (True = masked), 30 % masked
  fwd_causal ... causal, top-left
  bwd        d_x = scale * y * (d_y - sum(d_y * y))
Peers: torch eager as a user writes it ((x * scale).masked_fill(mask, -inf).softmax(-1); the
backward as autograd runs it: softmax backward, then the scale), optionally torch.compile of the
same functions (--compile S: only for s_kv in S, compile time is long), and a device copy of x
(the bandwidth ceiling). Times: CUDA events around each call after warm-up, median of --iters.
Bandwidth counts bytes read + written once: x and y (fwd), y, d_y, d_x (bwd), plus the mask once
(not once per head, as the peer table of PERFORMANCE.md counts it). The causal case is counted as
if it read all of x, though the kernel skips the masked half: its TB/s is "effective".

Prints a table of ratios last; --csv writes every measurement.
"""

import argparse
import csv
import os
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from core_import import import_core  # noqa: E402


def load_core():
    paddle_te_core = import_core()

    if not paddle_te_core.with_cuda:
        sys.exit("paddle_te_core was built without CUDA")
    return paddle_te_core


def time_ms(torch, fn, iters, warmup):
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def check(core, torch, dtype):
    """One small case of each variant against tests/reference.py (float64)."""
    import reference as ref

    g = np.random.default_rng(0)
    x64 = g.standard_normal((2, 3, 33, 1024))
    m = g.random((2, 1, 33, 1024)) < 0.3
    x = torch.from_numpy(x64).to(dtype).cuda()
    y = torch.full_like(x, float("nan"))
    worst = 0.0
    for kw, rkw in (({}, {}), ({"mask": torch.from_numpy(m).cuda()}, {"mask": m}),
                    ({"causal": "top_left"}, {"causal": "top_left"})):
        core.softmax_fwd(x, y, scale=0.125, **kw)
        want = ref.softmax_fwd(x.double().cpu().numpy(), scale=0.125, **rkw)
        worst = max(worst, float(np.abs(y.double().cpu().numpy() - want).max()))
    assert worst < 1e-2, f"check failed: max error {worst}"
    print(f"# check vs tests/reference.py: max abs error {worst:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skv", default="128,512,1024,2048,4096,16384")
    ap.add_argument("--dtypes", default="bf16,fp16")
    ap.add_argument("--cases", default="fwd,fwd_mask,fwd_causal,bwd")
    ap.add_argument("--elements", type=int, default=1 << 29)
    ap.add_argument("--b", type=int, default=8)
    ap.add_argument("--h", type=int, default=16)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", default="", help="s_kv values to also time torch.compile at")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--csv", default="")
    args = ap.parse_args()

    import torch

    core = load_core()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    compile_at = {int(s) for s in args.compile.split(",") if s}
    scale = 0.125
    rows = []
    dev = torch.cuda.get_device_name()
    print(f"# device: {dev}, torch {torch.__version__}")
    if args.check:
        check(core, torch, torch.bfloat16)

    first_dtype = args.dtypes.split(",")[0]  # torch.compile only there (compile time)
    for dname in args.dtypes.split(","):
        dtype = dtypes[dname]
        esize = torch.tensor([], dtype=dtype).element_size()
        for s_kv in (int(s) for s in args.skv.split(",")):
            b, h = args.b, args.h
            s_q = max(1, args.elements // (b * h * s_kv))
            shape = (b, h, s_q, s_kv)
            n = b * h * s_q * s_kv
            x = torch.randn(shape, device="cuda", dtype=dtype)
            y = torch.empty_like(x)
            mask = torch.rand((b, 1, s_q, s_kv), device="cuda") < 0.3
            causal_mask = torch.ones(s_q, s_kv, device="cuda", dtype=torch.bool).triu(1)
            stream = torch.cuda.current_stream().cuda_stream

            def record(case, impl, ms, nbytes):
                rows.append({"dtype": dname, "s_kv": s_kv, "shape": "x".join(map(str, shape)),
                             "case": case, "impl": impl, "ms": ms,
                             "tbs": nbytes / ms / 1e9})

            ms = time_ms(torch, lambda: y.copy_(x), args.iters, args.warmup)
            record("copy", "torch", ms, 2 * n * esize)
            for case in args.cases.split(","):
                if case == "bwd":
                    core.softmax_fwd(x, y, scale=scale, stream=stream)
                    dy = torch.randn_like(x)
                    dx = torch.empty_like(x)
                    nbytes = 3 * n * esize
                    ours = lambda: core.softmax_bwd(y, dy, dx, scale=scale, stream=stream)

                    def eager(dy=dy):
                        return torch._softmax_backward_data(dy, y, -1, dtype) * scale
                    peer_fn = eager
                else:
                    kw = {}
                    nbytes = 2 * n * esize
                    if case == "fwd_mask":
                        kw["mask"] = mask
                        nbytes += mask.numel()
                        m = mask
                    elif case == "fwd_causal":
                        kw["causal"] = "top_left"
                        m = causal_mask
                    else:
                        m = None

                    def ours(kw=kw):
                        core.softmax_fwd(x, y, scale=scale, stream=stream, **kw)

                    def eager(m=m):
                        s = x * scale
                        if m is not None:
                            s = s.masked_fill(m, float("-inf"))
                        return torch.softmax(s, -1)
                    peer_fn = eager
                record(case, "paddle_te", time_ms(torch, ours, args.iters, args.warmup), nbytes)
                record(case, "torch_eager", time_ms(torch, peer_fn, args.iters, args.warmup),
                       nbytes)
                if s_kv in compile_at and dname == first_dtype:
                    try:
                        compiled = torch.compile(peer_fn, dynamic=False)
                        record(case, "torch_compile",
                               time_ms(torch, compiled, args.iters, args.warmup), nbytes)
                    except Exception as e:  # a peer that cannot run is reported, not fatal
                        print(f"# torch.compile failed for {case} s_kv={s_kv}: {e}")
                if case == "bwd":
                    del dy, dx
            del x, y, mask
            torch.cuda.empty_cache()

    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    # Table: one line per (dtype, s_kv, case).
    by = {}
    for r in rows:
        by.setdefault((r["dtype"], r["s_kv"], r["shape"]), {}).setdefault(r["case"], {})[
            r["impl"]] = r
    print()
    print("| dtype | shape | case | ours ms | ours TB/s | eager TB/s | compile TB/s | "
          "ours/eager | ours/copy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (dname, s_kv, shape), cases in by.items():
        copy = cases["copy"]["torch"]["tbs"]
        for case, impls in cases.items():
            if case == "copy":
                continue
            o, e = impls["paddle_te"], impls["torch_eager"]
            c = impls.get("torch_compile")
            ctxt = f"{c['tbs']:.2f}" if c else "-"
            print(f"| {dname} | {shape} | {case} | {o['ms']:.3f} | {o['tbs']:.2f} | "
                  f"{e['tbs']:.2f} | {ctxt} | {e['ms'] / o['ms']:.2f}x | "
                  f"{o['tbs'] / copy:.2f} |")
    copies = [c["copy"]["torch"]["tbs"] for c in by.values()]
    print(f"\ncopy ceiling (torch copy_, read+write): {statistics.median(copies):.2f} TB/s")


if __name__ == "__main__":
    main()
