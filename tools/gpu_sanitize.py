#!/usr/bin/env python3
"""Small cases of every CUDA kernel, for compute-sanitizer (memcheck, racecheck):

    compute-sanitizer --tool memcheck --error-exitcode 99 python3 tools/gpu_sanitize.py

Sizes are small (the tools slow kernels 10-100x) but reach every code path: each softmax
register bucket, the two-pass paths (vector and scalar), masks with broadcast and fully masked
rows, both causal alignments, every mask -> cu_seqlens form including a batch past one scan
chunk, and the fused attention backends (flash, cudnn) forward and backward on padded, packed and
strided layouts with GQA/MQA, windows, empty sequences and dropout. Arrays come from cupy when installed (lighter under the sanitizer than torch), else torch.
The script also checks values loosely (NaN poison) so a silent skip shows up.

To add cases, append a function to CASES; `--only NAME` runs the cases whose name contains NAME.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from core_import import import_core, scoped_env  # noqa: E402
import reference as ref  # noqa: E402  (the one oracle)


class Arrays:
    """numpy in, device arrays out, through cupy or torch."""

    def __init__(self):
        try:
            import cupy

            self.cp, self.torch = cupy, None
        except ImportError:
            import torch

            self.cp, self.torch = None, torch

    def dev(self, a):
        a = np.ascontiguousarray(a)
        if self.cp is not None:
            return self.cp.asarray(a)
        return self.torch.from_numpy(a).cuda()

    def host(self, d):
        if self.cp is not None:
            return self.cp.asnumpy(d)
        return d.cpu().numpy()

    def half(self, a, dtype):
        """Device array of `dtype` ('float16' or 'float32'; cupy has no bfloat16, and bf16 runs
        the same kernel code as fp16) from float64 numpy."""
        if self.cp is not None:
            return self.cp.asarray(a.astype(dtype))
        return self.torch.from_numpy(a).to(getattr(self.torch, dtype)).cuda()

    def sync(self):
        if self.cp is not None:
            self.cp.cuda.runtime.deviceSynchronize()
        else:
            self.torch.cuda.synchronize()


def softmax_cases(core, A):
    g = np.random.default_rng(0)
    # Row lengths: register buckets (1 .. 4096 vectors), two-pass vector (40000), scalar (2050, 7).
    shapes = [(2, 2, 3, 8), (1, 2, 5, 128), (1, 1, 3, 1000), (1, 1, 2, 2048), (1, 1, 2, 2050),
              (1, 1, 1, 4096), (1, 1, 1, 16384), (1, 1, 1, 32768), (1, 1, 1, 40000),
              (1, 2, 6, 7), (1, 1, 9, 4)]
    for dtype in ("float16", "float32"):
        for shape in shapes:
            b, h, s_q, s_kv = shape
            x64 = g.standard_normal(shape)
            x = A.half(x64, dtype)
            m = g.random((1, 1, s_q, s_kv)) < 0.4
            m[:, :, 0] = True
            for kw in ({}, {"mask": A.dev(m)}, {"causal": "top_left"},
                       {"causal": "bottom_right"}):
                y = A.half(np.full(shape, np.nan), dtype)
                core.softmax_fwd(x, y, scale=0.5, **kw)
                A.sync()
                assert not np.isnan(A.host(y).astype(np.float64)).any(), (shape, kw)
            dy = A.half(g.standard_normal(shape), dtype)
            dx = A.half(np.full(shape, np.nan), dtype)
            core.softmax_bwd(y, dy, dx, scale=0.5)
            A.sync()
            assert not np.isnan(A.host(dx).astype(np.float64)).any(), shape
    # Enough rows (h % 4 == 0, a wave of blocks) for the masked kernels' work items of 4 heads.
    shape = (1, 4, 264, 16384)
    x = A.half(g.standard_normal(shape), "float16")
    y = A.half(np.full(shape, np.nan), "float16")
    core.softmax_fwd(x, y, mask=A.dev(g.random((1, 1, 264, 16384)) < 0.4))
    A.sync()
    assert not np.isnan(A.host(y).astype(np.float64)).any(), "head groups"


def seqlens_cases(core, A):
    g = np.random.default_rng(1)
    for b, s_q, s_kv in ((1, 5, 5), (3, 17, 40), (1030, 4, 6)):
        lq = g.integers(0, s_q + 1, b)
        lk = g.integers(0, s_kv + 1, b)
        self_m = np.arange(s_q)[None, None, None, :] >= lq[:, None, None, None]
        kv_m = np.arange(s_kv)[None, None, None, :] >= lk[:, None, None, None]
        full = self_m.reshape(b, 1, s_q, 1) | kv_m.reshape(b, 1, 1, s_kv)
        for mask, mask_kv in ((self_m, None), (self_m, kv_m), (full, None)):
            cu_q = A.dev(np.full(b + 1, -7, np.int32))
            cu_kv = A.dev(np.full(b + 1, -7, np.int32))
            valid = A.dev(np.full(1, -7, np.int32))
            core.mask_to_cu_seqlens(A.dev(mask), cu_q, cu_kv,
                                    mask_kv=None if mask_kv is None else A.dev(mask_kv),
                                    valid=valid)
            A.sync()
            want_q, want_kv = ref.mask_to_cu_seqlens(mask, mask_kv)
            assert int(A.host(valid)[0]) == 1
            assert np.array_equal(A.host(cu_q), want_q) and np.array_equal(A.host(cu_kv), want_kv)


def _attention_case(core, A, backend, fmt, shape, lens_q, lens_kv, mask_type, window, dropout):
    """One forward + backward on `backend` with NaN-poisoned outputs; every output element must be
    written (padded positions and no-visible-key rows with 0)."""
    g = np.random.default_rng(2)
    b, s_q, s_kv, h, h_kv, d = shape
    kw = dict(qkv_format=fmt, attn_mask_type=mask_type, window_size=window, dropout=dropout,
              seed=7, offset=3, backend=backend)
    if fmt == "thd":
        t_q, t_kv = sum(lens_q), sum(lens_kv)
        q_shape, kv_shape, lse_shape = (t_q, h, d), (t_kv, h_kv, d), (h, t_q)
    else:
        q_shape, kv_shape, lse_shape = (b, s_q, h, d), (b, s_kv, h_kv, d), (b, h, s_q)
        if fmt == "sbhd":
            q_shape, kv_shape = (s_q, b, h, d), (s_kv, b, h_kv, d)
    if lens_q is not None:
        kw.update(cu_seqlens_q=A.dev(np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)),
                  cu_seqlens_kv=A.dev(np.concatenate([[0], np.cumsum(lens_kv)]).astype(np.int32)),
                  max_seqlen_q=max(lens_q), max_seqlen_kv=max(lens_kv))
    q, k, v = (A.half(g.standard_normal(sh), "float16") for sh in (q_shape, kv_shape, kv_shape))
    out = A.half(np.full(q_shape, np.nan), "float16")
    lse = A.half(np.full(lse_shape, np.nan), "float32")
    core.fused_attn_fwd(q, k, v, out, lse=lse, **kw)
    d_out = A.half(g.standard_normal(q_shape), "float16")
    for deterministic in (False, True):  # the two backward paths (atomic dQ, or a dQ kernel)
        grads = [A.half(np.full(sh, np.nan), "float16") for sh in (q_shape, kv_shape, kv_shape)]
        core.fused_attn_bwd(q, k, v, out, d_out, lse, *grads, deterministic=deterministic, **kw)
        A.sync()
        for name, arr in zip(("out", "d_q", "d_k", "d_v"), [out] + grads):
            assert not np.isnan(A.host(arr).astype(np.float64)).any(), (
                backend, fmt, mask_type, deterministic, name)


def attention_cases(core, A):
    """The fused attention backends this build has, on small shapes that reach their paths:
    padded bshd with GQA, a bottom-right causal window and an empty sequence; packed thd with a
    zero-length sequence (MQA, d = 128); sbhd strides; dropout; packed thd over several key blocks
    (d = 128: on sm_90 the sm90 backward, whose deterministic mode takes turns between them); on
    sm_90, d = 64 forced onto the sm90 backward."""
    backends = [n for n, info in core.backends().items()
                if n in ("flash", "cudnn") and info["available"]]
    assert backends, core.backends()
    for backend in backends:
        _attention_case(core, A, backend, "bshd", (2, 33, 47, 4, 2, 64), [33, 0], [47, 5],
                        "padding_causal_bottom_right", (16, 0), 0.0)
        _attention_case(core, A, backend, "thd", (3, 0, 0, 2, 1, 128), [5, 0, 35], [9, 0, 40],
                        "padding_causal", (-1, 0), 0.0)
        _attention_case(core, A, backend, "sbhd", (2, 20, 20, 2, 2, 64), None, None,
                        "no_mask", (-1, -1), 0.1)
        _attention_case(core, A, backend, "thd", (2, 0, 0, 4, 2, 128), [300, 200], [400, 150],
                        "padding", (-1, -1), 0.0)
    if "flash" in backends:
        # d = 64 through the sm90 backward (its 128-query step; `auto` may pick sm80 there), where
        # the GPU has it: a window, several key blocks in turns, dropout.
        with scoped_env({"PTE_FLASH_VARIANT": "sm90"}):
            try:
                _attention_case(core, A, "flash", "thd", (2, 0, 0, 4, 2, 64), [300, 200],
                                [400, 150], "padding_causal_bottom_right", (100, 0), 0.0)
                _attention_case(core, A, "flash", "bshd", (2, 150, 170, 2, 1, 64), None, None,
                                "causal", (-1, 0), 0.1)
            except (RuntimeError, ValueError) as e:  # no sm90 kernels below sm_90
                if "sm90" not in str(e):
                    raise


def decode_cases(core, A):
    """decode_attn (SPEC §10), both attention kernels (PTE_DECODE_KERNEL=simt and mma, the latter
    with both K/V pipelines, the default shallow one and PTE_DECODE_PIPELINE=deep where the device
    takes it; the combine as a programmatic dependent launch on sm_90): paged caches with an odd
    page size and with pages of one key, GQA, s_q = 3 (two simt row chunks; one padded mma tile) and s_q = 5 with a group of 8 (40 rows: two mma chunks of 32), forced and
    automatic splits (more splits than key tiles), a window; then bad values (lengths past the
    capacity, page indices out of range) that the kernels must clamp and mask without touching
    memory out of bounds."""
    g = np.random.default_rng(5)
    b, h_kv, d = 2, 2, 128
    for kernel, pipeline in (("simt", "auto"), ("mma", "auto"), ("mma", "deep")):
        with scoped_env({"PTE_DECODE_KERNEL": kernel, "PTE_DECODE_PIPELINE": pipeline}):
            _decode_kernel_cases(core, A, g, kernel, pipeline, b, h_kv, d)


def _decode_kernel_cases(core, A, g, kernel, pipeline, b, h_kv, d):
    if pipeline == "deep":  # opt-in, sized for sm_90: skipped where the core refuses it
        probe = A.half(np.zeros((1, 1, 1, d)), "float16")
        try:
            core.decode_attn(probe, probe, probe, A.dev(np.zeros(1, np.int32)),
                             A.half(np.zeros((1, 1, 1, d)), "float16"))
        except ValueError as e:
            if "PTE_DECODE_PIPELINE=deep" not in str(e):
                raise
            print(f"decode_cases: deep pipeline skipped: {e}")
            return
    for s_q, h, page, pps in ((3, 8, 7, 40), (5, 16, 1, 260)):
        table = g.permutation(b * pps).reshape(b, pps).astype(np.int32)
        kc = A.half(g.standard_normal((b * pps, page, h_kv, d)), "float16")
        vc = A.half(g.standard_normal((b * pps, page, h_kv, d)), "float16")
        q = A.half(g.standard_normal((b, s_q, h, d)), "float16")
        kn = A.half(g.standard_normal((b, s_q, h_kv, d)), "float16")
        vn = A.half(g.standard_normal((b, s_q, h_kv, d)), "float16")
        out = A.half(np.full((b, s_q, h, d), np.nan), "float16")
        lse = A.dev(np.zeros((b, h, s_q), np.float32))
        for lens, splits, window in (([0, 200], 5, (-1, 0)), ([100, 1], 0, (16, 0)),
                                     ([250, 17], 64, (-1, 0))):
            core.decode_attn(q, kc, vc, A.dev(np.asarray(lens, np.int32)), out, k_new=kn,
                             v_new=vn, block_table=A.dev(table), lse=lse,
                             num_splits=splits, window_size=window)
            A.sync()
            assert not np.isnan(A.host(out).astype(np.float64)).any(), (kernel, s_q, lens)
        bad = table.copy()
        bad[0, :3] = [b * pps, -1, 10**6]
        core.decode_attn(q, kc, vc, A.dev(np.asarray([10**6, -4], np.int32)), out,
                         k_new=kn, v_new=vn, block_table=A.dev(bad), lse=lse)
    # Contiguous cache, one row per kv head (MHA) and d 64.
    kc = A.half(g.standard_normal((b, 300, 4, 64)), "float16")
    vc = A.half(g.standard_normal((b, 300, 4, 64)), "float16")
    q = A.half(g.standard_normal((b, 1, 4, 64)), "float16")
    out = A.half(np.full((b, 1, 4, 64), np.nan), "float16")
    core.decode_attn(q, kc, vc, A.dev(np.asarray([299, 0], np.int32)), out)
    A.sync()


def flashmask_cases(core, A):
    """FlashMask (SPEC §9) on the flash backend, through each kernel family (PTE_FLASH_VARIANT=sm80
    and sm90 where the build and device have it): the summary kernel and the skip / partial paths
    of the forward and both backwards, with key lengths that are not tile multiples, mask heads =
    h (GQA) and out-of-range-looking but legal bounds (0 and s_q); rows that see nothing; and
    (sm90) tile and step walks that skip past the 32 items one warp classifies at once."""
    os.environ["PTE_FLASHMASK_CUDA"] = "1"  # on even where a caller turned it off (flash_api.cu)
    if not core.backends().get("flash", {}).get("available"):
        return
    for variant in ("sm80", "sm90"):
        with scoped_env({"PTE_FLASH_VARIANT": variant}):
            probe = A.half(np.zeros((1, 64, 2, 64)), "float16")
            se0 = A.dev(np.zeros((1, 1, 64, 1), np.int32))
            why = core.attn_check(probe, probe, probe, A.half(np.zeros((1, 64, 2, 64)), "float16"),
                                  attn_mask_type="causal", backend="flash", backward=True,
                                  startend_row_indices=se0)
            if why:
                print(f"flashmask_cases: flash-{variant} skipped: {why}", flush=True)
                continue
            _flashmask_variant(core, A, variant)


def _flashmask_run(core, A, g, b, s_q, s_kv, h, h_kv, d, se, causal, tag):
    kw = dict(attn_mask_type="causal" if causal else "no_mask", backend="flash",
              startend_row_indices=A.dev(se), dropout=0.1, seed=3, offset=4)
    q = A.half(g.standard_normal((b, s_q, h, d)), "float16")
    k, v = (A.half(g.standard_normal((b, s_kv, h_kv, d)), "float16") for _ in range(2))
    out = A.half(np.full((b, s_q, h, d), np.nan), "float16")
    lse = A.half(np.full((b, h, s_q), np.nan), "float32")
    core.fused_attn_fwd(q, k, v, out, lse=lse, **kw)
    d_out = A.half(g.standard_normal((b, s_q, h, d)), "float16")
    for deterministic in (False, True):
        grads = [A.half(np.full(x, np.nan), "float16") for x in ((b, s_q, h, d), (b, s_kv, h_kv, d), (b, s_kv, h_kv, d))]
        core.fused_attn_bwd(q, k, v, out, d_out, lse, *grads, deterministic=deterministic, **kw)
        A.sync()
        for name, arr in zip(("out", "d_q", "d_k", "d_v"), [out] + grads):
            assert not np.isnan(A.host(arr).astype(np.float64)).any(), (tag, deterministic, name)


def _flashmask_variant(core, A, variant):
    g = np.random.default_rng(9)
    b, s_q, s_kv, h, h_kv, d = 2, 77, 150, 4, 2, 64
    for causal, c in ((True, 1), (True, 2), (False, 2), (False, 4)):
        se = g.integers(0, s_q + 1, size=(b, h, s_kv, c)).astype(np.int32)
        se[:, :, : s_kv // 3, 0] = 0 if causal else s_q  # whole tiles skipped / untouched
        _flashmask_run(core, A, g, b, s_q, s_kv, h, h_kv, d, se, causal, (variant, causal, c))
    # Long skips: 1200 queries, 4200 keys in documents [0, 300), [300, 4000), [4000, 4200)
    # (bidirectional, C = 2; the last one past every query: its keys are seen by nobody, and the
    # CTAs of keys >= 4096 visit no step at all). The first query tiles skip the key tiles of the
    # middle document, past the 32 one warp ballot classifies; query head 1 sees the first
    # document's keys from rows >= 1100 only, so their key block walks past more than 32 dead
    # steps (query tiles of 64 over 2 heads).
    s_q, s_kv, h, h_kv = 1200, 4200, 2, 1
    se = np.zeros((1, h, s_kv, 2), np.int32)
    for lo, hi in ((0, 300), (300, 4000), (4000, 4200)):
        se[0, :, lo:hi, 0], se[0, :, lo:hi, 1] = min(hi, s_q), min(lo, s_q)
    se[0, 1, :300, 0], se[0, 1, :300, 1] = s_q, 1100
    _flashmask_run(core, A, g, 1, s_q, s_kv, h, h_kv, d, se, False, (variant, "long"))


CASES = [softmax_cases, seqlens_cases, attention_cases, decode_cases, flashmask_cases]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    core = import_core()
    A = Arrays()
    for case in CASES:
        if args.only and args.only not in case.__name__:
            continue
        case(core, A)
        print(f"{case.__name__}: ok", flush=True)


if __name__ == "__main__":
    main()
