"""CUDA lse merge (paddle_te_core.attn_merge, SPEC §11) and the context-parallel ring simulated on
one GPU (bench/bench_cp.py's Ring: N virtual ranks, the step kernels with lse and the merge),
against float64 numpy and the one-device result. Skips without a GPU (conftest.py)."""

import math
import os
import sys

import numpy as np
import pytest

from gpu_util import poison, to_numpy64

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))

DTYPES = ("float32", "float16", "bfloat16")
EPS = {"float32": 1e-6, "float16": 1e-3, "bfloat16": 8e-3}


def _merge64(oa, la, ob, lb):
    """bshd out [b, s, h, d], lse [b, h, s]; float64."""
    lse = np.logaddexp(la, lb)
    with np.errstate(invalid="ignore"):
        wa, wb = np.nan_to_num(np.exp(la - lse)), np.nan_to_num(np.exp(lb - lse))
    wa, wb = wa.transpose(0, 2, 1)[..., None], wb.transpose(0, 2, 1)[..., None]
    return wa * np.where(wa > 0, oa, 0.0) + wb * np.where(wb > 0, ob, 0.0), lse


@pytest.mark.parametrize("acc", DTYPES)
@pytest.mark.parametrize("part", DTYPES)
@pytest.mark.parametrize("d", [8, 64, 128, 200])
def test_merge_cuda(core, torch, acc, part, d):
    rng = np.random.default_rng(d)
    b, s, h = 3, 37, 5
    oa, ob = (rng.standard_normal((b, s, h, d)) for _ in range(2))
    la, lb = (rng.standard_normal((b, h, s)).astype(np.float32) * 4 for _ in range(2))
    la.reshape(-1)[:7] = -np.inf
    lb.reshape(-1)[3:11] = -np.inf  # rows 3..6 empty in both parts
    ta = torch.from_numpy(oa).to("cuda", getattr(torch, acc))
    tb = torch.from_numpy(ob).to("cuda", getattr(torch, part))
    # The outputs of empty parts hold garbage the merge must not read: lse rows 0..6 of
    # [b, h, s] are (b 0, h 0, s 0..6).
    ta[0, :7, 0] = float("nan")
    out = poison(torch.empty_like(ta))
    lse = poison(torch.empty((b, h, s), dtype=torch.float32, device="cuda"))
    tla, tlb = torch.from_numpy(la).cuda(), torch.from_numpy(lb).cuda()
    core.attn_merge(ta, tla, tb, tlb, out, lse)
    want, want_lse = _merge64(to_numpy64(ta), la.astype(np.float64), to_numpy64(tb), lb.astype(np.float64))
    got = to_numpy64(out)
    assert not np.isnan(got).any()
    tol = 4 * max(EPS[acc], EPS[part])
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    got_lse = lse.cpu().numpy()
    assert np.array_equal(np.isneginf(got_lse), np.isneginf(want_lse))
    fin = np.isfinite(want_lse)
    np.testing.assert_allclose(got_lse[fin], want_lse[fin], rtol=1e-6, atol=1e-6)
    # In place (out = out_a, lse = lse_a) gives the same bits; swapping the parts too.
    acc_t, acc_l = ta.clone(), tla.clone()
    core.attn_merge(acc_t, acc_l, tb, tlb, acc_t, acc_l)
    assert torch.equal(acc_l, lse) and torch.equal(torch.nan_to_num(acc_t), torch.nan_to_num(out))
    if acc == part:
        out2 = poison(torch.empty_like(ta))
        lse2 = poison(torch.empty_like(lse))
        ta_clean = torch.nan_to_num(ta)
        core.attn_merge(ta_clean, tla, tb, tlb, out, lse)
        core.attn_merge(tb, tlb, ta_clean, tla, out2, lse2)
        assert torch.equal(out, out2) and torch.equal(lse, lse2)


def test_merge_cuda_strided_and_stream(core, torch):
    """A destination that is a slice of a larger buffer, on a side stream."""
    b, s, h, d = 2, 16, 4, 64
    oa, ob = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    la, lb = (torch.randn(b, h, s, device="cuda") for _ in range(2))
    big = poison(torch.empty(b, 3 * s, h, d, device="cuda", dtype=torch.bfloat16))
    big_lse = poison(torch.empty(b, h, 3 * s, device="cuda"))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    core.attn_merge(oa, la, ob, lb, big[:, s:2 * s], big_lse[:, :, s:2 * s], stream=stream.cuda_stream)
    stream.synchronize()
    want, want_lse = _merge64(to_numpy64(oa), to_numpy64(la), to_numpy64(ob), to_numpy64(lb))
    np.testing.assert_allclose(to_numpy64(big[:, s:2 * s]), want, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(to_numpy64(big_lse[:, :, s:2 * s]), want_lse, rtol=1e-5, atol=1e-5)
    assert torch.isnan(big[:, :s].float()).all() and torch.isnan(big[:, 2 * s:].float()).all()


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("window", [(-1, 0), (100, 0)])
def test_simulated_ring(core, torch, n, window):
    """N virtual ranks through the step kernels and the merge = the one-device result."""
    import bench_cp

    rng = np.random.default_rng(n)
    xp = bench_cp.TorchXP("bfloat16")
    res = bench_cp.check(xp, core, n, 2, 2 * n * 128, 8, 2, 64, window, rng, with_bwd=True, oracle=True)
    # The ring (float32 merges and accumulators) is no worse than the one-device bf16 kernels
    # against float64: out and every gradient under FlashAttention's 2x rule, within a floor.
    assert bench_cp.check_ok(res, 2e-3), res
    assert math.isfinite(sum(res.values()))
