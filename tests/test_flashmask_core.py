"""FlashMask (SPEC §9) through paddle_te_core on the CPU: the mask zoo of tests/flashmask_zoo.py
against tests/reference.py (float64), forward and backward, every C with causal True/False,
mask heads 1 / h_kv / h, GQA, dropout, rows that see nothing, and the core's argument checks."""

import numpy as np
import pytest

import flashmask_zoo as zoo
import reference as ref
from test_core_module import core


def _run(q, k, v, se, causal, d_out, *, dropout=0.0, seed=0, offset=0, scale=None, window=None):
    b, s_q, h, d = q.shape
    out = np.full(q.shape[:-1] + (v.shape[-1],), np.nan, q.dtype)
    lse = np.full((b, h, s_q), np.nan, np.float32)
    kw = dict(attn_mask_type="causal" if causal else "no_mask", startend_row_indices=se,
              dropout=dropout, seed=seed, offset=offset, softmax_scale=scale,
              window_size=window if window is not None else (-1, -1))
    core.fused_attn_fwd(q, k, v, out, lse=lse, **kw)
    dq, dk, dv = (np.full(x.shape, np.nan, x.dtype) for x in (q, k, v))
    core.fused_attn_bwd(q, k, v, out, d_out, lse, dq, dk, dv, **kw)
    return out, lse, dq, dk, dv


def _check(q, k, v, se, causal, *, rng, dtype=np.float64, dropout=0.0, seed=3, offset=5,
           window=None):
    d_out = rng.standard_normal(q.shape[:-1] + (v.shape[-1],)).astype(dtype)
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    out, lse, dq, dk, dv = _run(q, k, v, se, causal, d_out, dropout=dropout, seed=seed,
                                offset=offset, window=window)
    kw = dict(dropout_p=dropout, seed=seed, offset=offset, window_size=window)
    want_out, want_lse = ref.flashmask_attention_fwd(q, k, v, se, causal=causal, **kw)
    want = ref.flashmask_attention_bwd(q, k, v, d_out, se, causal=causal, **kw)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, want_out, atol=tol, rtol=tol)
    fin = np.isfinite(want_lse)
    np.testing.assert_array_equal(np.isfinite(lse), fin)
    assert np.all(lse[~fin] == -np.inf)  # -inf, never +inf (SPEC §9)
    np.testing.assert_allclose(lse[fin], want_lse[fin], atol=max(tol, 1e-6), rtol=1e-6)
    for got, w in zip((dq, dk, dv), want):
        np.testing.assert_allclose(got, w, atol=tol * 10, rtol=tol * 10)
    # Rows that see nothing: output and dq exactly 0.
    dead = ~fin.transpose(0, 2, 1)  # [b, s_q, h]
    assert np.all(out[dead] == 0) and np.all(dq[dead] == 0)
    return fin


def _qkv(rng, b, s_q, s_kv, h, h_kv, d):
    return (rng.standard_normal((b, s_q, h, d)), rng.standard_normal((b, s_kv, h_kv, d)),
            rng.standard_normal((b, s_kv, h_kv, d)))


@pytest.mark.parametrize("name", [z[0] for z in zoo.ZOO])
def test_zoo_small(rng, name):
    causal, fn = zoo.ZOO_BY_NAME[name]
    b, s, h, h_kv, d = 2, 70, 4, 2, 16  # 70: two 64-key tiles, the second partial
    se = fn(rng, b, s, s)
    q, k, v = _qkv(rng, b, s, s, h, h_kv, d)
    _check(q, k, v, se, causal, rng=rng)


@pytest.mark.parametrize("mask_heads", ["1", "h_kv", "h"])
@pytest.mark.parametrize("case", [("causal", 1), ("causal", 2), ("plain", 2), ("plain", 4)])
def test_every_c_and_mask_heads(rng, case, mask_heads):
    causal, C = case[0] == "causal", case[1]
    b, s_q, s_kv, h, h_kv, d = 2, 131, 150, 6, 3, 8
    m = {"1": 1, "h_kv": h_kv, "h": h}[mask_heads]
    se = rng.integers(0, s_q + 1, size=(b, m, s_kv, C)).astype(np.int32)
    if C == 1 or (C == 2 and not causal):
        # Structured halves so that whole tiles are skipped and fully visible, too.
        se[:, :, : s_kv // 2, 0] = s_q if not causal else rng.integers(0, s_q + 1)
    q, k, v = _qkv(rng, b, s_q, s_kv, h, h_kv, d)
    _check(q, k, v, se, causal, rng=rng)


@pytest.mark.parametrize("seed", range(6))
def test_random_sizes(seed):
    rng = np.random.default_rng(1000 + seed)
    name, causal, fn = zoo.ZOO[int(rng.integers(len(zoo.ZOO)))]
    b = int(rng.integers(1, 3))
    s_q = int(rng.integers(1, 200))
    s_kv = s_q if rng.random() < 0.5 else int(rng.integers(1, 200))
    h_kv = int(rng.integers(1, 3))
    h = h_kv * int(rng.integers(1, 3))
    d = int(rng.choice([8, 16, 24]))
    se = zoo.with_heads(fn(rng, b, s_q, s_kv), rng, int(rng.choice([1, h_kv, h])))
    q, k, v = _qkv(rng, b, s_q, s_kv, h, h_kv, d)
    _check(q, k, v, se, causal, rng=rng, dtype=np.float32 if seed % 2 else np.float64)


def test_dropout_and_window(rng):
    b, s, h, d = 1, 96, 2, 16
    se = zoo.causal_document(rng, b, s, s)
    q, k, v = _qkv(rng, b, s, s, h, h, d)
    _check(q, k, v, se, True, rng=rng, dropout=0.3, seed=11, offset=7)
    se = zoo.random_c4(rng, b, s, s)
    _check(q, k, v, se, False, rng=rng, window=(20, 5))


def test_dead_rows_zero_gradients(rng):
    b, s, h, d = 1, 80, 2, 8
    se = np.zeros((b, 1, s, 2), np.int32)
    se[..., 0], se[..., 1] = 10, 50  # rows 10..49 masked in every column
    q, k, v = _qkv(rng, b, s, s, h, h, d)
    fin = _check(q, k, v, se, True, rng=rng)
    assert not fin[:, :, 10:50].any() and fin[:, :, :10].all() and fin[:, :, 50:].all()


def test_bad_inputs(rng):
    b, s, h, d = 1, 16, 2, 8
    q, k, v = _qkv(rng, b, s, s, h, h, d)
    out = np.zeros_like(q)

    def call(se, mask_type="causal", **kw):
        core.fused_attn_fwd(q, k, v, out, attn_mask_type=mask_type, startend_row_indices=se, **kw)

    ok = np.zeros((b, 1, s, 1), np.int32)
    call(ok)
    with pytest.raises(ValueError, match="startend_row_indices.*C = 4 with causal=True"):
        call(np.zeros((b, 1, s, 4), np.int32))
    with pytest.raises(ValueError, match="startend_row_indices.*C = 1 with causal=False"):
        call(ok, "no_mask")
    with pytest.raises(ValueError, match="startend_row_indices.*mask_heads = 3"):
        call(np.zeros((b, 3, s, 1), np.int32))
    with pytest.raises(ValueError, match="startend_row_indices.*int32"):
        call(ok.astype(np.int64))
    with pytest.raises(ValueError, match="startend_row_indices.*expected \\[1, mask_heads, 16"):
        call(np.zeros((b, 1, s + 1, 1), np.int32))
    with pytest.raises(ValueError, match="startend_row_indices: value 17"):
        call(np.full((b, 1, s, 1), 17, np.int32))
    with pytest.raises(ValueError, match="startend_row_indices.*'no_mask' or 'causal'"):
        call(ok, "causal_bottom_right")
