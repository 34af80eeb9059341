#!/usr/bin/env python3
"""Decode attention over a KV cache: paddle_te (paddle_te_core.decode_attn, contiguous and paged
caches) vs torch SDPA's cuDNN and flash backends (and flex_attention with --flex) on the same
inputs, in the same run. The decode cases of ../shared/PERFORMANCE.md.

Each case: q [b, s_q, h, d], caches of L tokens per sequence (bf16, d = 128). paddle_te appends
s_q new keys in place (cache_seqlens = L - s_q, so every sequence attends to L keys); the peers
attend to the same L keys, taking the same caches in their layout ([b, h, L, d] views of one
[b, L, h_kv, d] cache; GQA through enable_gqa). s_q > 1: paddle_te is bottom-right causal, the
peers run without a mask (same bytes, slightly more arithmetic).
Timing: every call is captured in a CUDA graph, R calls on R different cache copies per graph
(so the caches are read from HBM, not from the 60 MB L2), replayed after warm-up; the median of
--iters replays divided by R. η = (bytes of K and V read + q and out) / 4.8 TB/s ÷ time.

--kernels simt,mma runs paddle_te's attention kernels side by side (PTE_DECODE_KERNEL, read at
each call, so at capture time for a graph); one column per kernel and page size. An entry may set
the pipeline and the combine's launch too: mma@PTE_DECODE_PIPELINE=shallow, mma@PTE_DECODE_PDL=0,
mma@PTE_DECODE_FASTCOPY=0 (every tile through the resolving copy path).
--splits N forces num_splits (0 = the kernel's automatic choice) to probe the split heuristic.

Prints a markdown table last; --csv writes every measurement; --check compares paddle_te with
tests/reference.py (float64) on a small case and with cuDNN SDPA on every benchmark case, for each
kernel.
"""

import argparse
import csv
import math
import os
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from core_import import import_core  # noqa: E402

HBM_BYTES_PER_S = 4.8e12  # H200 datasheet: the physical limit for memory-bound kernels
L2_BYTES = 60 << 20
ROTATE_BYTES = 512 << 20  # caches touched per graph replay (well past L2)
MAX_ROTATE = 64

# (name, b, L, h, h_kv, s_q): PERFORMANCE.md "Decode".
CASES = [
    ("1x16k 32/8", 1, 16384, 32, 8, 1),
    ("1x128k 32/8", 1, 131072, 32, 8, 1),
    ("32x4k 32/8", 32, 4096, 32, 8, 1),
    ("64x1k 32/8", 64, 1024, 32, 8, 1),
    ("128x2k 64/8", 128, 2048, 64, 8, 1),
    ("16x2000 32/32", 16, 2000, 32, 32, 1),
    ("8x32k 8/1", 8, 32768, 8, 1, 1),
    ("1x1k 32/4 (latency)", 1, 1024, 32, 4, 1),
    ("32x4k 32/8 s_q=4", 32, 4096, 32, 8, 4),
]
D = 128


def load_core():
    core = import_core()
    if not core.with_cuda:
        sys.exit("paddle_te_core was built without CUDA")
    return core


def graph_time_us(torch, fns, iters, warmup):
    """Median time of one call: `fns` (R closures) captured in one CUDA graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    for _ in range(warmup):
        g.replay()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / len(fns))
    return statistics.median(times)


class Case:
    def __init__(self, torch, name, b, L, h, h_kv, s_q, page, copies):
        self.name, self.b, self.L, self.h, self.h_kv, self.s_q, self.page = name, b, L, h, h_kv, s_q, page
        dt = torch.bfloat16
        g = torch.Generator(device="cuda").manual_seed(0)
        rnd = lambda *shape: torch.randn(*shape, generator=g, device="cuda", dtype=dt)  # noqa: E731
        self.q = rnd(b, s_q, h, D)
        self.k_new = rnd(b, s_q, h_kv, D)
        self.v_new = rnd(b, s_q, h_kv, D)
        self.out = torch.empty(b, s_q, h, D, device="cuda", dtype=dt)
        self.seqlens = torch.full((b,), L - s_q, dtype=torch.int32, device="cuda")
        self.caches, self.tables = [], []
        for _ in range(copies):
            if page is None:
                kc, vc = rnd(b, L, h_kv, D), rnd(b, L, h_kv, D)
                self.tables.append(None)
            else:
                pps = -(-L // page)
                perm = torch.randperm(b * pps, device="cuda", generator=g).to(torch.int32)
                self.tables.append(perm.reshape(b, pps).contiguous())
                kc, vc = rnd(b * pps, page, h_kv, D), rnd(b * pps, page, h_kv, D)
            self.caches.append((kc, vc))

    def bytes(self):
        kv = 2 * self.b * self.L * self.h_kv * D * 2
        return kv + 2 * self.b * self.s_q * self.h * D * 2

    def ours(self, core, torch, i, num_splits=0):
        kc, vc = self.caches[i]
        bt = self.tables[i]
        # The stream is read when the closure runs: inside a capture, the capturing stream.
        return lambda: core.decode_attn(self.q, kc, vc, self.seqlens, self.out, k_new=self.k_new,
                                        v_new=self.v_new, block_table=bt, num_splits=num_splits,
                                        stream=torch.cuda.current_stream().cuda_stream)

    def peer_qkv(self, i):
        kc, vc = self.caches[i]
        return (self.q.transpose(1, 2), kc.transpose(1, 2), vc.transpose(1, 2))


def sdpa_fn(torch, backend, q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    be = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    gqa = q.shape[1] != k.shape[1]

    def run():
        with sdpa_kernel([be]):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)

    return run


def flex_fn(torch, q, k, v):
    from torch.nn.attention.flex_attention import flex_attention

    f = torch.compile(flex_attention, dynamic=False)
    gqa = q.shape[1] != k.shape[1]
    return lambda: f(q, k, v, enable_gqa=gqa)


# Variables a --kernels entry may set after '@' (decode_api.cu reads them at every call).
KERNEL_VARS = ("PTE_DECODE_PIPELINE", "PTE_DECODE_PDL", "PTE_DECODE_FASTCOPY")


def set_kernel(kernel):
    """PTE_DECODE_KERNEL for the following paddle_te calls (auto, simt or mma), and the variables
    of an entry such as mma@PTE_DECODE_PIPELINE=shallow@PTE_DECODE_PDL=0 (unset: the defaults)."""
    name, *assigns = kernel.split("@")
    for var in KERNEL_VARS:
        os.environ.pop(var, None)
    os.environ["PTE_DECODE_KERNEL"] = name
    for a in assigns:
        var, _, value = a.partition("=")
        if var not in KERNEL_VARS:
            sys.exit(f"--kernels entry {kernel!r}: {var} is not one of {', '.join(KERNEL_VARS)}")
        os.environ[var] = value


def check_small(core, torch, kernel):
    import reference as ref

    set_kernel(kernel)
    rng = np.random.default_rng(0)
    b, s_q, h, h_kv, L, page = 3, 2, 8, 2, 300, 16
    pps = -(-(L + s_q) // page) + 1
    bt = rng.permutation(b * pps).reshape(b, pps).astype(np.int32)
    kc = rng.standard_normal((b * pps, page, h_kv, D))
    vc = rng.standard_normal((b * pps, page, h_kv, D))
    q = rng.standard_normal((b, s_q, h, D))
    kn, vn = rng.standard_normal((b, s_q, h_kv, D)), rng.standard_normal((b, s_q, h_kv, D))
    lens = np.array([0, 7, L], dtype=np.int32)
    dev = lambda a: torch.from_numpy(a).to(torch.bfloat16).cuda()  # noqa: E731
    r64 = lambda t: t.double().cpu().numpy()  # noqa: E731
    tq, tkc, tvc, tkn, tvn = dev(q), dev(kc), dev(vc), dev(kn), dev(vn)
    want, _, _, _ = ref.decode_attn(r64(tq), r64(tkc), r64(tvc), lens, k_new=r64(tkn),
                                    v_new=r64(tvn), block_table=bt)
    out = torch.full((b, s_q, h, D), float("nan"), dtype=torch.bfloat16, device="cuda")
    core.decode_attn(tq, tkc, tvc, torch.from_numpy(lens).cuda(), out, k_new=tkn, v_new=tvn,
                     block_table=torch.from_numpy(bt).cuda())
    err = float(np.abs(r64(out) - want).max())
    assert err < 2e-2, f"check vs tests/reference.py failed: max error {err}"
    print(f"# check [{kernel}] vs tests/reference.py (paged, split, s_q=2): max abs error {err:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="all", help="comma-separated case indices, or all")
    ap.add_argument("--pages", default="16,256", help="paged variants of ours (page sizes)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--flex", action="store_true", help="also flex_attention (torch.compile)")
    ap.add_argument("--kernels", default="auto",
                    help="paddle_te decode kernels side by side: comma-separated auto, simt, mma, "
                         "each optionally with @PTE_DECODE_PIPELINE=shallow|deep, @PTE_DECODE_PDL=0")
    ap.add_argument("--splits", type=int, default=0, help="num_splits for ours (0 = automatic)")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()

    import torch

    core = load_core()
    kernels = [k for k in args.kernels.split(",") if k]
    if args.check:
        for kernel in kernels:
            check_small(core, torch, kernel)
    cases = CASES if args.cases == "all" else [CASES[int(i)] for i in args.cases.split(",")]
    pages = [int(p) for p in args.pages.split(",") if p]

    def label(kernel, page):
        k = "ours" if len(kernels) == 1 else f"ours[{kernel}]"
        return k if page is None else f"{k} page {page}"

    ours_cols = [label(k, p) for k in kernels for p in [None] + pages]
    rows, table = [], []
    for name, b, L, h, h_kv, s_q in cases:
        per_call = 2 * b * L * h_kv * D * 2
        copies = max(1, min(MAX_ROTATE, math.ceil(ROTATE_BYTES / per_call)))
        res, ours_outs = {}, {}
        for page in [None] + pages:
            c = Case(torch, name, b, L, h, h_kv, s_q, page, copies)
            for kernel in kernels:
                set_kernel(kernel)
                fns = [c.ours(core, torch, i, args.splits) for i in range(copies)]
                res[label(kernel, page)] = graph_time_us(torch, fns, args.iters, args.warmup)
                if page is None:
                    ours_outs[kernel] = c.out.clone()
            if page is None:
                floor_us = c.bytes() / HBM_BYTES_PER_S * 1e6
                for backend in ("cudnn", "flash"):
                    try:
                        try:
                            fns = [sdpa_fn(torch, backend, *c.peer_qkv(i)) for i in range(copies)]
                            fns[0]()
                        except RuntimeError as e:
                            # No native GQA in this backend: give it the kv heads expanded (it then
                            # reads h/h_kv times the bytes; η still counts the h_kv bytes).
                            print(f"# {name}: {backend} SDPA with enable_gqa failed ({e}); "
                                  "running it on expanded kv heads")
                            grp = h // h_kv
                            fns = [sdpa_fn(torch, backend, qq, kk.repeat_interleave(grp, 1),
                                           vv.repeat_interleave(grp, 1))
                                   for qq, kk, vv in (c.peer_qkv(i) for i in range(copies))]
                        res[backend] = graph_time_us(torch, fns, args.iters, args.warmup)
                        if args.check and backend == "cudnn" and s_q == 1:
                            peer = fns[-1]().transpose(1, 2)
                            # ours appended its own k_new at L-1; compare on the same keys:
                            for kernel, o in ours_outs.items():
                                err = float((peer.float() - o.float()).abs().max())
                                print(f"# {name}: |ours[{kernel}] - cuDNN SDPA| max {err:.2e} "
                                      "(same cache rows)")
                    except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported
                        print(f"# {name}: {backend} SDPA unavailable: {type(e).__name__}: {e}")
                if args.flex:
                    try:
                        fns = [flex_fn(torch, *c.peer_qkv(i)) for i in range(copies)]
                        res["flex"] = graph_time_us(torch, fns, args.iters, args.warmup)
                    except Exception as e:  # noqa: BLE001
                        print(f"# {name}: flex_attention unavailable: {type(e).__name__}: {e}")
            del c
            torch.cuda.empty_cache()
        eta = {k: floor_us / v for k, v in res.items()}
        for k, v in res.items():
            rows.append({"case": name, "impl": k, "us": f"{v:.2f}", "eta": f"{eta[k]:.3f}",
                         "floor_us": f"{floor_us:.2f}", "rotate": copies, "splits": args.splits})
        peers = [res[k] for k in ("cudnn", "flash", "flex") if k in res]
        best = min(peers) if peers else float("nan")
        cells = [f"{res[k]:.1f} ({eta[k]:.2f})" if k in res else "-"
                 for k in ours_cols + ["cudnn", "flash"]]
        ratios = [f"{best / res[label(k, None)]:.2f}" for k in kernels]
        table.append([name, f"{floor_us:.1f}"] + cells + ratios)
        print(f"# {name}: " + ", ".join(f"{k} {v:.1f} us (η {eta[k]:.2f})" for k, v in res.items()), flush=True)

    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    head = ["case (bf16, d 128)", "floor µs"] + [f"{k} µs (η)" for k in ours_cols] + \
           ["cuDNN SDPA", "FA2 (torch flash)"] + \
           [f"best peer ÷ {label(k, None)}" for k in kernels]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in table:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
