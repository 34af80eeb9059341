"""Fused attention benchmark: paddle_te's CUDA backends against torch SDPA, side by side.

    python bench/bench_attention.py [--cases dense,short,gqa,varlen,window] [--csv out.csv]
                                    [--iters 30] [--backends cudnn,flash,flash_sm80] [--dtype bf16]

Every case of the PERFORMANCE.md grid runs, in one process and on the same input tensors:
  * ours: paddle_te_core.fused_attn_fwd / _bwd with each available CUDA backend (cudnn, flash);
    `flash_sm80` is the flash backend with PTE_FLASH_VARIANT=sm80 (the mma.sync family even on
    sm_90, so both flash kernel families are measured in one process; `flash` is `auto`);
    `flash@deterministic=1` runs the backward with deterministic=True (then a last table gives
    its time over the default backward's, the backend spelled without `deterministic=1`);
  * peers: torch SDPA restricted to its flash backend and to its cuDNN backend (where torch can
    express the case: dense, short, GQA; the varlen and sliding-window cases have no SDPA form,
    so their peer is the cuDNN figure PERFORMANCE.md records for the same machine).
Timing: CUDA events around each call after warm-up, median over --iters calls. TFLOP/s as the
FlashAttention benchmark counts them: forward 4*h*d*(visible query-key pairs) (so half of
4*b*h*s^2*d for causal, the band for a window), backward 2.5 x forward.
Prints a CSV (also written to --csv) and then a table of ratios time(ours) / time(peer).
"""

import argparse
import csv
import math
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from core_import import import_core, scoped_env  # noqa: E402

# PERFORMANCE.md (H100 SXM, torch 2.11 + cuDNN 9.19, 2026-11-25): cuDNN times where SDPA has no
# form of the case, in ms (fwd, bwd).
RECORDED_CUDNN_MS = {
    "varlen": (0.378, 1.197),
    "window256": (0.125, 0.531),
    "window1024": (0.280, 0.958),
}


class Case:
    def __init__(self, name, b, s, h, d, causal, h_kv=None, lens=None, window=None):
        self.name, self.b, self.s, self.h, self.d = name, b, s, h, d
        self.causal, self.h_kv = causal, h_kv or h
        self.lens = lens  # varlen: packed thd sequences
        self.window = window  # left window (causal band)

    def pairs(self):
        """Visible query-key pairs summed over sequences (for the FLOP count)."""
        seqs = self.lens if self.lens is not None else [self.s] * self.b
        total = 0
        for L in seqs:
            if self.window is not None:
                w = self.window  # causal band: row i sees min(i, w) + 1 keys
                total += L * (L + 1) // 2 if L <= w else L + w * (w - 1) // 2 + (L - w) * w
            elif self.causal:
                total += L * (L + 1) // 2
            else:
                total += L * L
        return total

    def fwd_flops(self):
        return 4 * self.h * self.d * self.pairs()


def grid():
    cases = []
    for d, h in ((128, 16), (64, 32)):
        for s in (4096, 8192, 16384):
            for causal in (False, True):
                cases.append(Case(f"dense_d{d}_s{s}" + ("_causal" if causal else ""),
                                  16384 // s, s, h, d, causal))
    for causal in (False, True):
        cases.append(Case("short_s512" + ("_causal" if causal else ""), 32, 512, 16, 128, causal))
    cases.append(Case("gqa_32q8kv_s4096_causal", 4, 4096, 32, 128, True, h_kv=8))
    # 8 packed sequences of unequal lengths summing to 16384 tokens.
    lens = [4096, 3072, 2560, 2048, 1536, 1280, 1024, 768]
    cases.append(Case("varlen", len(lens), max(lens), 16, 128, True, lens=lens))
    for w in (256, 1024):
        cases.append(Case(f"window{w}", 1, 16384, 16, 128, True, window=w))
    return cases


def kind(case):
    if case.lens is not None:
        return "varlen"
    if case.window is not None:
        return "window"
    if case.name.startswith("short"):
        return "short"
    if case.h_kv != case.h:
        return "gqa"
    return "dense"


def time_ms(fn, iters, warmup=3, busy=False):
    """Median CUDA-event time of fn in ms. busy: hold the GPU (torch.cuda._sleep) while every call
    is queued, so that the host cost of a call is hidden and only device time is measured."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    if busy:
        torch.cuda._sleep(int(60e6))
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        times.append((a, b))
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in times)


def run_ours(core, case, backend, dtype, iters):
    """backend "flash_<variant>" runs the flash backend with PTE_FLASH_VARIANT=<variant>; a suffix
    "@NAME=VALUE+NAME=VALUE" sets those environment variables for the call too (e.g.
    flash_sm90@PTE_SM90_PERSISTENT=0 to measure one kernel choice against the default), except
    `deterministic=0|1`, the backward's keyword."""
    spec, _, env_spec = backend.partition("@")
    name, _, variant = spec.partition("_")
    env = dict(kv.split("=", 1) for kv in env_spec.split("+") if kv)
    deterministic = env.pop("deterministic", "0") not in ("0", "false", "False")
    if variant:
        env["PTE_FLASH_VARIANT"] = variant
    with scoped_env(env):
        return _run_ours(core, case, name, dtype, iters, deterministic)


def _run_ours(core, case, backend, dtype, iters, deterministic=False):
    dev = "cuda"
    kw = dict(backend=backend, attn_mask_type="causal" if case.causal else "no_mask")
    if case.lens is not None:
        t = sum(case.lens)
        shape_q, shape_kv, lse_shape = (t, case.h, case.d), (t, case.h_kv, case.d), (case.h, t)
        cu = torch.tensor([0] + list(torch.tensor(case.lens).cumsum(0).tolist()),
                          dtype=torch.int32, device=dev)
        kw.update(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                  max_seqlen_q=max(case.lens), max_seqlen_kv=max(case.lens),
                  attn_mask_type="padding_causal")
    else:
        shape_q = (case.b, case.s, case.h, case.d)
        shape_kv = (case.b, case.s, case.h_kv, case.d)
        lse_shape = (case.b, case.h, case.s)
    if case.window is not None:
        kw["window_size"] = (case.window, 0)
    q = torch.randn(shape_q, dtype=dtype, device=dev)
    k = torch.randn(shape_kv, dtype=dtype, device=dev)
    v = torch.randn(shape_kv, dtype=dtype, device=dev)
    do = torch.randn(shape_q, dtype=dtype, device=dev)
    out = torch.empty_like(q)
    lse = torch.empty(lse_shape, dtype=torch.float32, device=dev)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    stream = torch.cuda.current_stream().cuda_stream

    def fwd():
        core.fused_attn_fwd(q, k, v, out, lse=lse, stream=stream, **kw)

    def bwd():
        core.fused_attn_bwd(q, k, v, out, do, lse, dq, dk, dv, stream=stream,
                            deterministic=deterministic, **kw)

    f = time_ms(fwd, iters)
    fwd()
    bw = time_ms(bwd, iters)
    return f, bw, (q, k, v, do)


def run_torch(case, sdpa_backend, inputs, iters):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[sdpa_backend]
    q0, k0, v0, do0 = inputs
    # Same tensors, viewed as [b, h, s, d] (bshd storage, as torch's own layers hold them).
    q = q0.detach().transpose(1, 2).requires_grad_()
    k = k0.detach().transpose(1, 2).requires_grad_()
    v = v0.detach().transpose(1, 2).requires_grad_()
    do = do0.transpose(1, 2)
    extra = {"enable_gqa": True} if case.h_kv != case.h else {}
    try:
        with sdpa_kernel([be]):
            def fwd():
                return F.scaled_dot_product_attention(q, k, v, is_causal=case.causal, **extra)

            f = time_ms(fwd, iters)
            out = fwd()

            def bwd():
                torch.autograd.grad(out, (q, k, v), do, retain_graph=True)

            bw = time_ms(bwd, iters)
        return f, bw, ""
    except RuntimeError as e:
        return math.nan, math.nan, str(e).splitlines()[0][:80]


def tflops(flops, ms):
    return flops / (ms * 1e-3) / 1e12 if ms and not math.isnan(ms) else math.nan


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", default="dense,short,gqa,varlen,window")
    ap.add_argument("--backends", default="cudnn,flash,flash_sm80")
    ap.add_argument("--peers", default="cudnn,flash")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    core = import_core()
    avail = core.backends()
    def base(b):  # "flash_sm90@PTE_SM90_PERSISTENT=0" -> "flash"
        return b.partition("@")[0].partition("_")[0]

    ours = [b for b in args.backends.split(",") if avail.get(base(b), {}).get("available")]
    for b in args.backends.split(","):
        if b not in ours:
            why = avail.get(base(b), {}).get("reason", "unknown")
            print(f"# backend {b} skipped: {why}")
    kinds = set(args.cases.split(","))
    rows = []
    dev = torch.cuda.get_device_name()
    print(f"# device: {dev}; torch {torch.__version__}; cuDNN {torch.backends.cudnn.version()}")
    for case in grid():
        if kind(case) not in kinds:
            continue
        flops = case.fwd_flops()
        results = {}
        inputs = None
        for b in ours:
            try:
                f, bw, inputs = run_ours(core, case, b, dtype, args.iters)
                results[f"pte_{b}"] = (f, bw, "")
            except (ValueError, RuntimeError) as e:
                results[f"pte_{b}"] = (math.nan, math.nan, str(e).splitlines()[0][:80])
        if inputs is not None and case.lens is None and case.window is None:
            for peer in args.peers.split(","):
                results[f"torch_{peer}"] = run_torch(case, peer, inputs, args.iters)
        elif kind(case) in ("varlen", "window"):
            rec = RECORDED_CUDNN_MS["varlen" if case.lens else case.name]
            results["recorded_cudnn"] = (rec[0], rec[1], "PERFORMANCE.md figure")
        for impl, (f, bw, note) in results.items():
            rows.append(dict(case=case.name, impl=impl, fwd_ms=f, bwd_ms=bw,
                             fwd_tflops=tflops(flops, f), bwd_tflops=tflops(2.5 * flops, bw),
                             note=note))
        del inputs
        torch.cuda.empty_cache()

    fields = ["case", "impl", "fwd_ms", "bwd_ms", "fwd_tflops", "bwd_tflops", "note"]
    w = csv.DictWriter(sys.stdout, fieldnames=fields)
    print()
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            cw = csv.DictWriter(fh, fieldnames=fields)
            cw.writeheader()
            cw.writerows(rows)

    # Ratio table: ours / best peer of the same run (cuDNN SDPA first), < 1 = faster.
    print("\n| case | ours | fwd ms | bwd ms | fwd TF/s | bwd TF/s | peer | fwd ratio | bwd ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["impl"]] = r
    for name, impls in by_case.items():
        peer_name = next((p for p in ("torch_cudnn", "recorded_cudnn", "torch_flash")
                          if p in impls and not math.isnan(impls[p]["fwd_ms"])), None)
        for impl, r in impls.items():
            if not impl.startswith("pte_"):
                continue
            p = impls.get(peer_name) if peer_name else None
            fr = r["fwd_ms"] / p["fwd_ms"] if p else math.nan
            br = r["bwd_ms"] / p["bwd_ms"] if p else math.nan
            print(f"| {name} | {impl[4:]} | {r['fwd_ms']:.3f} | {r['bwd_ms']:.3f} | "
                  f"{r['fwd_tflops']:.0f} | {r['bwd_tflops']:.0f} | {peer_name} | {fr:.3f} | "
                  f"{br:.3f} |")

    # deterministic=True against the default backward of the same backend (issue 12: <= 1.3).
    det = [(name, impl, impls) for name, impls in by_case.items() for impl in impls
           if impl.startswith("pte_") and "deterministic=1" in impl]
    if det:
        print("\n| case | backend | det bwd ms | default bwd ms | det / default |")
        print("|---|---|---|---|---|")
    for name, impl, impls in det:
        plain = impl.replace("+deterministic=1", "").replace("deterministic=1+", "")
        plain = plain.replace("@deterministic=1", "")
        base_row = impls.get(plain)
        d_ms = impls[impl]["bwd_ms"]
        b_ms = base_row["bwd_ms"] if base_row else math.nan
        print(f"| {name} | {impl[4:]} | {d_ms:.3f} | {b_ms:.3f} | {d_ms / b_ms:.3f} |")


if __name__ == "__main__":
    main()
