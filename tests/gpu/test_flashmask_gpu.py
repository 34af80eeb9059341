"""FlashMask (SPEC §9) in the flash kernels, through paddle_te_core on torch CUDA tensors: the mask
zoo of tests/flashmask_zoo.py in float16 and bfloat16, forward and backward, against the float64
reference (tests/reference.py, FlashAttention's 2x rule), with every C and causal True/False, mask
heads 1 / h_kv / h, GQA, several head dims and sizes that are not tile multiples, dropout replay,
rows that see nothing (output 0, lse -inf, zero gradients) and the core's refusals.

Variants: PTE_FLASH_VARIANT=sm80 and sm90 (each where the build and device have it): both kernel
families apply the mask, and every test runs through both. The sm90 family walks a subset of its
key tiles (forward) and query steps (backward) in every role of the CTA; test_long_skips makes
those walks skip more than the 32 tiles one warp classifies at once, and head dim 192 gives the
sm90 forward its 96-key tiles."""

import zlib

import numpy as np
import pytest

import flashmask_zoo as zoo
import reference as R
from gpu_util import poison, to_numpy64

DTYPES = ("float16", "bfloat16")


def _tdt(torch, name):
    return {"float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _naive(dtype):
    return R.naive_compute_dtype(dtype)


def _run(core, torch, arrs, se, causal, d_out, dtype, *, dropout=0.0, seed=0, offset=0):
    t = _tdt(torch, dtype)
    q, k, v = (torch.tensor(a, device="cuda").to(t).contiguous() for a in arrs)
    do = torch.tensor(d_out, device="cuda").to(t)
    se_t = torch.tensor(se, device="cuda", dtype=torch.int32).contiguous()
    b, s_q, h, _ = q.shape
    out = poison(torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=t, device="cuda"))
    lse = poison(torch.empty((b, h, s_q), dtype=torch.float32, device="cuda"))
    kw = dict(attn_mask_type="causal" if causal else "no_mask", startend_row_indices=se_t,
              dropout=dropout, seed=seed, offset=offset, backend="flash")
    core.fused_attn_fwd(q, k, v, out, lse=lse, **kw)
    dq, dk, dv = (poison(torch.empty_like(x)) for x in (q, k, v))
    core.fused_attn_bwd(q, k, v, out, do, lse, dq, dk, dv, **kw)
    torch.cuda.synchronize()
    return [to_numpy64(x) for x in (out, lse, dq, dk, dv)], [to_numpy64(x) for x in (q, k, v, do)]


def _check(core, torch, b, s_q, s_kv, h, h_kv, d, se, causal, dtype, **kw):
    rng = _rng(b, s_q, s_kv, h, h_kv, d, causal, dtype, se.shape)
    arrs = [rng.standard_normal(s) for s in ((b, s_q, h, d), (b, s_kv, h_kv, d), (b, s_kv, h_kv, d))]
    d_out = rng.standard_normal((b, s_q, h, d))
    (out, lse, dq, dk, dv), (q, k, v, do) = _run(core, torch, arrs, se, causal, d_out, dtype, **kw)
    ref_kw = dict(dropout_p=kw.get("dropout", 0.0), seed=kw.get("seed", 0), offset=kw.get("offset", 0))
    want, want_lse = R.flashmask_attention_fwd(q, k, v, se, causal=causal, **ref_kw)
    naive, _ = R.flashmask_attention_fwd(q, k, v, se, causal=causal, compute_dtype=_naive(dtype), **ref_kw)
    R.assert_attention_close(out, want, naive, dtype, "out")
    fin = np.isfinite(want_lse)
    assert np.array_equal(np.isfinite(lse), fin), "lse finite where the reference is"
    assert np.all(lse[~fin] == -np.inf), "rows that see nothing: lse -inf"
    np.testing.assert_allclose(lse[fin], want_lse[fin], atol=2e-3, rtol=1e-3)
    grads = R.flashmask_attention_bwd(q, k, v, do, se, causal=causal, **ref_kw)
    naive_g = R.flashmask_attention_bwd(q, k, v, do, se, causal=causal, compute_dtype=_naive(dtype), **ref_kw)
    for name, got, w, nv in zip(("dq", "dk", "dv"), (dq, dk, dv), grads, naive_g):
        R.assert_attention_close(got, w, nv, dtype, name, grad=True)
    dead = ~fin.transpose(0, 2, 1)
    assert np.all(out[dead] == 0) and np.all(dq[dead] == 0), "rows that see nothing: exact zeros"
    return dk, dv


@pytest.fixture(params=["sm80", "sm90"])
def family(request, core, torch, monkeypatch):
    monkeypatch.setenv("PTE_FLASH_VARIANT", request.param)
    # On by default (flash_api.cu); set here so a PTE_FLASHMASK_CUDA=0 in the caller cannot hide them.
    monkeypatch.setenv("PTE_FLASHMASK_CUDA", "1")
    q = torch.zeros((1, 64, 2, 64), dtype=torch.float16, device="cuda")
    se = torch.zeros((1, 1, 64, 1), dtype=torch.int32, device="cuda")
    why = core.attn_check(q, q, q, q.clone(), attn_mask_type="causal", backend="flash",
                          backward=True, startend_row_indices=se)
    if why:
        if "startend_row_indices" in why or "FlashMask" in why:
            pytest.fail(f"flash-{request.param} refuses FlashMask: {why}")
        pytest.skip(f"flash-{request.param} not available: {why}")
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [z[0] for z in zoo.ZOO])
def test_zoo(core, torch, family, name, dtype):
    causal, fn = zoo.ZOO_BY_NAME[name]
    b, s, h, h_kv, d = 2, 300, 4, 2, 64
    rng = _rng(name, dtype)
    se = fn(rng, b, s, s)
    _check(core, torch, b, s, s, h, h_kv, d, se, causal, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_heads", ["1", "h_kv", "h"])
@pytest.mark.parametrize("d", [32, 64, 128, 192, 256])
def test_heads_and_head_dims(core, torch, family, mask_heads, d, dtype):
    b, s_q, s_kv, h, h_kv = 1, 200, 333, 6, 2
    probe = torch.zeros((1, 64, 1, d), dtype=torch.float16, device="cuda")
    why = core.attn_check(probe, probe, probe, probe.clone(), backend="flash", backward=True)
    if why:
        pytest.skip(f"head dim {d}: {why}")  # not compiled in this build (PTE_HDIMS)
    m = {"1": 1, "h_kv": h_kv, "h": h}[mask_heads]
    rng = _rng(mask_heads, d, dtype)
    name = {32: "causal_document", 64: "document", 128: "share_question", 192: "random_c4",
            256: "global_sliding"}[d]
    causal, fn = zoo.ZOO_BY_NAME[name]
    se = zoo.with_heads(fn(rng, b, s_q, s_kv), rng, m)
    _check(core, torch, b, s_q, s_kv, h, h_kv, d, se, causal, dtype)


@pytest.mark.parametrize("seed", range(12))
def test_random_sizes(core, torch, family, seed):
    rng = np.random.default_rng(7000 + seed)
    name, causal, fn = zoo.ZOO[seed % len(zoo.ZOO)]
    b = int(rng.integers(1, 4))
    s_q = int(rng.integers(1, 700))
    s_kv = s_q if seed % 2 else int(rng.integers(1, 700))
    h_kv = int(rng.integers(1, 4))
    h = h_kv * int(rng.integers(1, 4))
    d = int(rng.choice([64, 128]))
    se = zoo.with_heads(fn(rng, b, s_q, s_kv), rng, int(rng.choice([1, h_kv, h])))
    _check(core, torch, b, s_q, s_kv, h, h_kv, d, se, causal, DTYPES[seed % 2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_replay(core, torch, family, dtype):
    b, s, h, d = 2, 256, 4, 64
    rng = _rng("dropout", dtype)
    se = zoo.causal_document(rng, b, s, s)
    _check(core, torch, b, s, s, h, h, d, se, True, dtype, dropout=0.2, seed=123, offset=456)


@pytest.mark.parametrize("causal", [True, False])
def test_long_skips(core, torch, family, causal):
    # Documents [0, 300), [300, 4300), [4300, 4600). Forward: the last document's query tiles skip
    # the 33 key tiles (128 keys) before it, past the first 32 that one warp ballot classifies.
    # Backward (causal=False): under query head 1 the first document's keys are seen by rows
    # [4400, 4600) instead, so their key block walks 5 live steps of head 0, skips more than 32,
    # and finds head 1's last ones. Mask heads = h with GQA (both query heads share a kv head).
    b, s, h, h_kv, d = 1, 4600, 2, 1, 64
    bounds = (0, 300, 4300, 4600)
    se = np.zeros((b, h, s, 1 if causal else 2), np.int32)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        se[0, :, lo:hi, 0] = hi  # rows from the document's end on are masked
        if not causal:
            se[0, :, lo:hi, 1] = lo  # and rows before its start
    if not causal:
        se[0, 1, :300, 0], se[0, 1, :300, 1] = s, 4400
        # Keys [4352, 4600) seen by nobody (LTS = 0: every row masked): whole key blocks whose
        # CTAs visit no step, and rows of the last document that keep only keys [4300, 4352).
        se[0, :, 4352:, 0], se[0, :, 4352:, 1] = 0, 0
    dk, dv = _check(core, torch, b, s, s, h, h_kv, d, se, causal, "bfloat16")
    if not causal:
        assert np.all(dk[:, 4352:] == 0) and np.all(dv[:, 4352:] == 0), "keys nobody sees: zeros"


def test_dead_rows(core, torch, family):
    b, s, h, d = 1, 256, 2, 64
    se = np.zeros((b, 1, s, 2), np.int32)
    se[..., 0], se[..., 1] = 37, 190  # rows 37..189 see nothing
    _check(core, torch, b, s, s, h, h, d, se, True, "bfloat16")


def test_refusals(core, torch):
    q = torch.zeros((1, 64, 2, 64), dtype=torch.float16, device="cuda")
    se = torch.zeros((1, 1, 64, 1), dtype=torch.int32, device="cuda")
    why = core.attn_check(q, q, q, q.clone(), attn_mask_type="causal", backend="cudnn",
                          startend_row_indices=se)
    assert why, "cuDNN must refuse FlashMask"
    with pytest.raises(ValueError, match="startend_row_indices"):
        core.attn_check(q, q, q, q.clone(), attn_mask_type="no_mask", backend="flash",
                        startend_row_indices=se)  # C = 1 without causal
