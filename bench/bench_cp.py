#!/usr/bin/env python3
"""Context parallelism simulated on one GPU: N virtual ranks run the p2p ring of
paddle_te.distributed (docs/context_parallel.md) through paddle_te_core on torch tensors, with the
same pair plans (paddle_te/distributed/_plan.py), the step kernels (fused_attn_fwd/bwd with lse)
and the lse merge (attn_merge, float32 accumulators in place).

What it answers, per ring step of one rank: the step's compute time T_c (its pairs and merges),
the bytes its transfer moves (K and V of one shard, kv heads only; backward: plus the float32
dK/dV accumulators), the time that transfer takes as a device-to-device copy on a second stream
(T_x, copy engine) and at a modelled link rate (--link-gbs, default 400 GB/s: NVLink 4 per
direction, about what NCCL p2p reaches between two H200s), and how much of it hides:
  * model:    hidden = min(1, T_c / (bytes / link rate))
  * measured: the step's compute and its copy launched together on two streams; exposed =
              max(0, T_both - T_c), the time the transfer adds to the step (a ratio such as
              (T_c + T_x - T_both) / T_x divides timing jitter of T_c by a small T_x: on the
              H200, with T_x 2-7 % of T_c, it ranged from -12 to +11).
Rank 0 is reported (with the load-balanced layout every rank does the same causal work); step 0
of the forward has the diagonal pairs.

--check: every virtual rank's output (and with --bwd its dq/dk/dv) against the one-device
result (paddle_te_core.fused_attn_fwd/bwd over the whole sequence; on a small case also the
float64 oracle tests/reference.py). --device cpu runs the check on numpy arrays through the CPU
core (no timing): how CI-less machines check the simulation's logic.

    python bench/bench_cp.py --check                       # on the GPU: check + table
    python bench/bench_cp.py --n 2 4 8 --seqlen 32768 65536 --csv out/cp.csv
    python bench/bench_cp.py --device cpu --check --n 2 4  # logic only, numpy on the CPU
"""

import argparse
import csv
import importlib.util
import math
import os
import statistics
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from core_import import import_core  # noqa: E402


def _load_plan():
    """paddle_te/distributed/_plan.py without importing paddle_te (no Paddle on the GPU machine)."""
    path = os.path.join(ROOT, "paddle_te", "distributed", "_plan.py")
    spec = importlib.util.spec_from_file_location("pte_cp_plan", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.pair_plan


pair_plan = _load_plan()


def chunk_ids(rank, n):
    return rank, 2 * n - 1 - rank


# ---- array backends: torch on the GPU (timed), numpy on the CPU (check only) ---------------------
class TorchXP:
    def __init__(self, dtype):
        import torch

        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.f32 = torch.float32
        self.cuda = True

    def randn(self, shape, rng):
        return self.torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to("cuda", self.dtype)

    def empty(self, shape, dtype=None):
        return self.torch.empty(shape, dtype=dtype or self.dtype, device="cuda")

    def full(self, shape, value, dtype):
        return self.torch.full(shape, value, dtype=dtype, device="cuda")

    def cat(self, xs, axis):
        return self.torch.cat(xs, dim=axis)

    def contiguous(self, x):
        return x.contiguous()

    def to64(self, x):
        return x.detach().to("cpu", dtype=self.torch.float64).numpy()

    def copy_(self, dst, src):
        dst.copy_(src, non_blocking=True)

    def add_(self, dst, src):
        dst.add_(src)

    def stream(self, s):
        return s.cuda_stream if s is not None else self.torch.cuda.current_stream().cuda_stream


class NumpyXP:
    def __init__(self, dtype):
        self.dtype = np.float32
        self.f32 = np.float32
        self.cuda = False

    def randn(self, shape, rng):
        return rng.standard_normal(shape).astype(np.float32)

    def empty(self, shape, dtype=None):
        return np.empty(shape, dtype=dtype or self.dtype)

    def full(self, shape, value, dtype):
        return np.full(shape, value, dtype=dtype)

    def cat(self, xs, axis):
        return np.concatenate(xs, axis=axis)

    def contiguous(self, x):
        return np.ascontiguousarray(x)

    def to64(self, x):
        return np.asarray(x, dtype=np.float64)

    def copy_(self, dst, src):
        np.copyto(dst, src)

    def add_(self, dst, src):
        dst += src

    def stream(self, s):
        return None


# ---- the simulated ring (bshd) -------------------------------------------------------------------
class Ring:
    """N virtual ranks of one sequence [b, S, h, d] on one device, chunk length c = S / 2N."""

    def __init__(self, xp, core, q, k, v, n, window, scale):
        self.xp, self.core, self.n = xp, core, n
        self.b, s, self.h, self.d = q.shape
        self.h_kv = k.shape[2]
        self.c = s // (2 * n)
        self.left, self.right = window
        self.scale = scale
        self.q = [self.shard(q, r) for r in range(n)]
        self.k = [self.shard(k, r) for r in range(n)]
        self.v = [self.shard(v, r) for r in range(n)]

    def shard(self, x, r):
        c = self.c
        a, b = chunk_ids(r, self.n)
        return self.xp.contiguous(self.xp.cat([x[:, a * c:(a + 1) * c], x[:, b * c:(b + 1) * c]], 1))

    def unshard(self, shards):
        c, chunks = self.c, [None] * (2 * self.n)
        for r, x in enumerate(shards):
            a, b = chunk_ids(r, self.n)
            chunks[a], chunks[b] = x[:, :c], x[:, c:]
        return self.xp.cat(chunks, 1)

    def pairs(self, r, src):
        """[(a, b, plan)]: local query chunk a of rank r with chunk b of src's shard."""
        out = []
        for a, qc in enumerate(chunk_ids(r, self.n)):
            for b, kc in enumerate(chunk_ids(src, self.n)):
                plan = pair_plan(qc, kc, self.c, self.left, self.right)
                if plan is not None:
                    out.append((a, b, plan))
        return out

    # forward -----------------------------------------------------------------------------------
    def fwd_state(self):
        xp, c = self.xp, self.c
        return {
            "out": [[xp.full((self.b, c, self.h, self.d), 0.0, xp.f32) for _ in range(2)] for _ in range(self.n)],
            "lse": [[xp.full((self.b, self.h, c), -math.inf, xp.f32) for _ in range(2)] for _ in range(self.n)],
            "part": xp.empty((self.b, c, self.h, self.d)),
            "part_lse": xp.empty((self.b, self.h, c), xp.f32),
        }

    def fwd_step(self, st, r, src, kv, stream=None):
        """Rank r's pairs with src's K/V (kv = (k, v) shards as received), merged into st."""
        xp, core, c = self.xp, self.core, self.c
        s = xp.stream(stream)
        k, v = kv
        for a, b, p in self.pairs(r, src):
            q = self.q[r][:, a * c + p.f:(a + 1) * c]
            kk, vv = k[:, b * c + p.e:(b + 1) * c], v[:, b * c + p.e:(b + 1) * c]
            nq = c - p.f
            part, part_lse = st["part"][:, :nq], st["part_lse"][:, :, :nq]
            if p.f:
                part_lse = xp.contiguous(part_lse)  # lse must be contiguous for the op
            core.fused_attn_fwd(q, kk, vv, part, lse=part_lse, window_size=(p.left, p.right),
                                softmax_scale=self.scale, stream=s)
            acc, acc_lse = st["out"][r][a][:, p.f:], st["lse"][r][a][:, :, p.f:]
            core.attn_merge(acc, acc_lse, part, part_lse, acc, acc_lse, stream=s)

    def forward(self):
        st = self.fwd_state()
        for r in range(self.n):
            for i in range(self.n):
                src = (r - i) % self.n
                self.fwd_step(st, r, src, (self.k[src], self.v[src]))
        outs = [self.xp.cat(st["out"][r], 1) for r in range(self.n)]
        lses = [self.xp.cat(st["lse"][r], 2) for r in range(self.n)]
        return outs, lses

    # backward ----------------------------------------------------------------------------------
    def bwd_step(self, r, src, kv, out, lse, dout, dq, dkv, scratch, stream=None):
        """Rank r's pairs with src's K/V: dq (float32, rank r's) and dkv (float32, src's shard)
        accumulated. out/lse/dout: rank r's final output, lse (per local chunk), upstream grad."""
        xp, core, c = self.xp, self.core, self.c
        s = xp.stream(stream)
        k, v = kv
        for a, b, p in self.pairs(r, src):
            nq, nk = c - p.f, c - p.e
            qs = slice(a * c + p.f, (a + 1) * c)
            ks = slice(b * c + p.e, (b + 1) * c)
            lse_p = lse[a][:, :, p.f:]
            if p.f:
                lse_p = xp.contiguous(lse_p)
            dq_p, dk_p, dv_p = scratch["dq"][:, :nq], scratch["dk"][:, :nk], scratch["dv"][:, :nk]
            core.fused_attn_bwd(self.q[r][:, qs], k[:, ks], v[:, ks], out[:, qs], dout[:, qs], lse_p,
                                dq_p, dk_p, dv_p, window_size=(p.left, p.right),
                                softmax_scale=self.scale, stream=s)
            xp.add_(dq[:, qs], dq_p)
            xp.add_(dkv[0][:, ks], dk_p)
            xp.add_(dkv[1][:, ks], dv_p)

    def bwd_scratch(self):
        xp, c = self.xp, self.c
        return {"dq": xp.empty((self.b, c, self.h, self.d)),
                "dk": xp.empty((self.b, c, self.h_kv, self.d)),
                "dv": xp.empty((self.b, c, self.h_kv, self.d))}

    def backward(self, outs, lses, douts):
        """dq, dk, dv shards (float32). outs in the model dtype; lses per local chunk."""
        xp, n = self.xp, self.n
        dq = [xp.full(self.q[r].shape, 0.0, xp.f32) for r in range(n)]
        dk = [xp.full(self.k[r].shape, 0.0, xp.f32) for r in range(n)]
        dv = [xp.full(self.v[r].shape, 0.0, xp.f32) for r in range(n)]
        scratch = self.bwd_scratch()
        for r in range(n):
            lse = [xp.contiguous(lses[r][:, :, :self.c]), xp.contiguous(lses[r][:, :, self.c:])]
            for i in range(n):
                src = (r - i) % n
                # The ring passes src's float32 accumulators from rank to rank; summing into one
                # buffer per owner is the same arithmetic in the same order.
                self.bwd_step(r, src, (self.k[src], self.v[src]), outs[r], lse, douts[r], dq[r],
                              (dk[src], dv[src]), scratch)
        return dq, dk, dv


# ---- checks ------------------------------------------------------------------------------------------
def check(xp, core, n, b, s, h, h_kv, d, window, rng, with_bwd=True, oracle=False):
    """Max abs errors of the simulated ring against the one-device result (and the oracle)."""
    q, k, v, do = (xp.randn((b, s, hh, d), rng) for hh in (h, h_kv, h_kv, h))
    scale = 1.0 / math.sqrt(d)
    ring = Ring(xp, core, q, k, v, n, window, scale)
    outs32, lses = ring.forward()
    outs = [o.to(xp.dtype) if xp.cuda else o for o in outs32]
    one_out = xp.empty((b, s, h, d))
    one_lse = xp.empty((b, h, s), xp.f32)
    core.fused_attn_fwd(q, k, v, one_out, lse=one_lse, window_size=window, softmax_scale=scale)
    res = {"out": float(np.abs(xp.to64(ring.unshard(outs32)) - xp.to64(one_out)).max())}
    if oracle:
        import reference

        mt = "causal" if window[1] == 0 else "no_mask"
        ref_out, _ = reference.attention_fwd(xp.to64(q), xp.to64(k), xp.to64(v), attn_mask_type=mt,
                                             window_size=window)
        res["out_vs_fp64"] = float(np.abs(xp.to64(ring.unshard(outs32)) - ref_out).max())
        res["one_device_out_vs_fp64"] = float(np.abs(xp.to64(one_out) - ref_out).max())
    if with_bwd:
        douts = [ring.shard(do, r) for r in range(n)]
        dq, dk, dv = ring.backward(outs, lses, douts)
        one = [xp.empty(t.shape) for t in (q, k, v)]
        core.fused_attn_bwd(q, k, v, one_out, do, one_lse, *one, window_size=window, softmax_scale=scale)
        if oracle:
            ref_grads = reference.attention_bwd(xp.to64(q), xp.to64(k), xp.to64(v), xp.to64(do),
                                                attn_mask_type=mt, window_size=window)
        for i, (name, got, want) in enumerate(zip(("dq", "dk", "dv"), (dq, dk, dv), one)):
            got64 = xp.to64(ring.unshard(got))
            res[name] = float(np.abs(got64 - xp.to64(want)).max())
            if oracle:
                res[f"{name}_vs_fp64"] = float(np.abs(got64 - ref_grads[i]).max())
                res[f"one_device_{name}_vs_fp64"] = float(np.abs(xp.to64(want) - ref_grads[i]).max())
    return res


def check_ok(res, floor):
    """FlashAttention's rule against the float64 oracle: the ring's error (float32 merges and
    accumulators) at most twice the one-device kernel's, plus a floor of the dtype."""
    return all(res[f"{k}_vs_fp64"] <= 2 * res[f"one_device_{k}_vs_fp64"] + floor
               for k in ("out", "dq", "dk", "dv") if f"{k}_vs_fp64" in res)


# ---- timing ------------------------------------------------------------------------------------------
def time_ms(torch, fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def measure(xp, core, n, b, s, h, h_kv, d, window, link_gbs, iters, rng, with_bwd):
    """Rows of (phase, step, ...) for rank 0."""
    torch = xp.torch
    q, k, v, do = (xp.randn((b, s, hh, d), rng) for hh in (h, h_kv, h_kv, h))
    scale = 1.0 / math.sqrt(d)
    ring = Ring(xp, core, q, k, v, n, window, scale)
    comm = torch.cuda.Stream()
    main = torch.cuda.current_stream()
    rows = []
    r = 0
    recv_k, recv_v = torch.empty_like(ring.k[0]), torch.empty_like(ring.v[0])

    def overlap_row(phase, i, compute, send, nbytes, npairs):
        def transfer():
            comm.wait_stream(main)
            with torch.cuda.stream(comm):
                send()
            main.wait_stream(comm)

        def both():
            comm.wait_stream(main)
            with torch.cuda.stream(comm):
                send()
            compute()
            main.wait_stream(comm)

        t_c = time_ms(torch, compute, iters)
        t_x = time_ms(torch, transfer, iters)
        t_b = time_ms(torch, both, iters)
        t_link = nbytes / (link_gbs * 1e9) * 1e3
        hidden_model = min(1.0, t_c / t_link) if t_link > 0 else 1.0
        exposed = max(0.0, t_b - t_c)
        rows.append(dict(phase=phase, n=n, seqlen=s, step=i, src=(r - i) % n, pairs=npairs,
                         compute_ms=t_c, copy_ms=t_x, both_ms=t_b, mbytes=nbytes / 1e6,
                         link_ms=t_link, hidden_model=hidden_model, exposed_ms=exposed))

    st = ring.fwd_state()
    kv_bytes = (ring.k[0].numel() + ring.v[0].numel()) * ring.k[0].element_size()
    for i in range(n):
        src = (r - i) % n
        nxt = (src - 1) % n  # what rank 0 receives for the next step

        def compute(src=src):
            ring.fwd_step(st, r, src, (ring.k[src], ring.v[src]))

        def send(nxt=nxt):
            recv_k.copy_(ring.k[nxt], non_blocking=True)
            recv_v.copy_(ring.v[nxt], non_blocking=True)

        overlap_row("fwd", i, compute, send, kv_bytes if i < n - 1 else 0, len(ring.pairs(r, src)))
    if with_bwd:
        outs32, lses = ring.forward()
        outs = [o.to(xp.dtype) for o in outs32]
        douts = [ring.shard(do, rr) for rr in range(n)]
        lse = [lses[r][:, :, :ring.c].contiguous(), lses[r][:, :, ring.c:].contiguous()]
        dq = torch.zeros(ring.q[r].shape, dtype=torch.float32, device="cuda")
        dkv = [torch.zeros(t.shape, dtype=torch.float32, device="cuda") for t in (ring.k[0], ring.v[0])]
        recv_dkv = [torch.empty_like(t) for t in dkv]
        scratch = ring.bwd_scratch()
        for i in range(n):
            src = (r - i) % n

            def compute(src=src):
                ring.bwd_step(r, src, (ring.k[src], ring.v[src]), outs[r], lse, douts[r], dq, dkv, scratch)

            def send(src=src):
                recv_k.copy_(ring.k[src], non_blocking=True)
                recv_v.copy_(ring.v[src], non_blocking=True)
                recv_dkv[0].copy_(dkv[0], non_blocking=True)
                recv_dkv[1].copy_(dkv[1], non_blocking=True)

            # The backward passes K/V (except after the last step) and the dK/dV accumulators.
            nbytes = (kv_bytes if i < n - 1 else 0) + sum(t.numel() * 4 for t in dkv)
            overlap_row("bwd", i, compute, send, nbytes, len(ring.pairs(r, src)))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--n", type=int, nargs="+", default=[2, 4, 8], help="virtual ranks")
    ap.add_argument("--seqlen", type=int, nargs="+", default=[32768, 65536, 131072])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--window", type=int, default=-1, help="left window (causal); -1 = plain causal")
    ap.add_argument("--no-bwd", action="store_true", help="forward only")
    ap.add_argument("--link-gbs", type=float, default=400.0, help="modelled link rate, GB/s per direction")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--check", action="store_true", help="check the simulated ring first")
    ap.add_argument("--csv", help="write every measurement here")
    args = ap.parse_args()

    core = import_core()
    rng = np.random.default_rng(0)
    window = (args.window, 0)
    with_bwd = not args.no_bwd
    if args.device == "cpu":
        xp = NumpyXP("float32")
        for n in args.n:
            for w in ((-1, 0), (5, 0)):
                res = check(xp, core, n, 2, 2 * n * 8, 4, 2, 16, w, rng, with_bwd, oracle=True)
                print(f"cpu check N={n} window={w}: " + ", ".join(f"{k} {v:.2e}" for k, v in res.items()))
                bad = {k: v for k, v in res.items() if v > 1e-5}
                if bad:
                    sys.exit(f"FAILED: {bad}")
        print("cpu check passed")
        return
    if not core.with_cuda:
        sys.exit("paddle_te_core was built without CUDA")
    xp = TorchXP(args.dtype)
    if args.check:
        tol = {"bfloat16": 3e-2, "float16": 5e-3}[args.dtype]
        for n in args.n:
            for w in ((-1, 0), (100, 0)):
                res = check(xp, core, n, 2, 2 * n * 128, 8, 2, 128, w, rng, with_bwd, oracle=True)
                line = ", ".join(f"{k} {v:.2e}" for k, v in res.items())
                ok = check_ok(res, tol / 10)
                print(f"check N={n} window={w}: {line} -> {'ok' if ok else 'FAILED'}")
                if not ok:
                    sys.exit(1)
    rows = []
    for n in args.n:
        for s in args.seqlen:
            if s % (2 * n):
                continue
            rows += measure(xp, core, n, args.batch, s, args.heads, args.kv_heads, args.head_dim,
                            window, args.link_gbs, args.iters, rng, with_bwd)
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(f"\nring of rank 0, {args.dtype}, b={args.batch} h={args.heads}/{args.kv_heads} d={args.head_dim}, "
          f"causal{'' if args.window < 0 else f' window {args.window}'}, link model {args.link_gbs:g} GB/s")
    print("| phase | N | S | step | pairs | compute ms | MB sent | copy ms | link ms | hidden (model) | exposed ms (measured) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['phase']} | {r['n']} | {r['seqlen']} | {r['step']} | {r['pairs']} | {r['compute_ms']:.3f} | "
              f"{r['mbytes']:.1f} | {r['copy_ms']:.3f} | {r['link_ms']:.3f} | {r['hidden_model']:.2f} | "
              f"{r['exposed_ms']:.3f} |")


if __name__ == "__main__":
    main()
