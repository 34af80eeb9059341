"""Checks of the oracle itself (tests/reference.py): brute-force Python loops written straight
from SPEC §2, literal pictures, finite differences for the gradients, and the Philox
known-answer vectors. Needs neither the compiled extension nor Paddle."""

import itertools
import math
import pathlib
import re

import numpy as np
import pytest

import reference as R

# --------------------------------------------------------------------------------------------
# Brute force: one element at a time, Python scalars only
# --------------------------------------------------------------------------------------------


def brute_visible(i, j, L_q, L_k, mask_type, window):
    """SPEC §2 read literally for one (query, key) pair."""
    if not (0 <= i < L_q and 0 <= j < L_k):
        return False
    left, right = (-1, -1) if window is None else window
    if "causal" in mask_type:
        right = 0
    delta = L_k - L_q if mask_type in ("causal_bottom_right", "padding_causal_bottom_right") else 0
    if left != -1 and j < i + delta - left:
        return False
    if right != -1 and j > i + delta + right:
        return False
    return True


def brute_attention(q, k, v, *, lens_q, lens_kv, mask_type, window, scale, attn_mask=None,
                    bias=None, keep=None, p=0.0):
    """bshd only: q [b, s_q, h, d]. Returns out [b, s_q, h, d_v], lse [b, h, s_q]."""
    b, s_q, h, _ = q.shape
    h_kv, d_v = k.shape[2], v.shape[3]
    out = np.zeros((b, s_q, h, d_v))
    lse = np.full((b, h, s_q), -np.inf)
    for bi in range(b):
        for hi in range(h):
            kh = hi // (h // h_kv)
            for i in range(lens_q[bi]):
                scores = {}
                for j in range(lens_kv[bi]):
                    if not brute_visible(i, j, lens_q[bi], lens_kv[bi], mask_type, window):
                        continue
                    if attn_mask is not None and attn_mask[bi, hi, i, j]:
                        continue
                    sc = scale * sum(float(q[bi, i, hi, c]) * float(k[bi, j, kh, c])
                                     for c in range(q.shape[3]))
                    if bias is not None:
                        sc += float(bias[bi, hi, i, j])
                    scores[j] = sc
                if not scores:
                    continue
                mx = max(scores.values())
                z = sum(math.exp(sc - mx) for sc in scores.values())
                lse[bi, hi, i] = mx + math.log(z)
                for j, sc in scores.items():
                    w = math.exp(sc - mx) / z
                    if keep is not None:
                        w = w / (1.0 - p) if keep[bi, hi, i, j] else 0.0
                    for c in range(d_v):
                        out[bi, i, hi, c] += w * float(v[bi, j, kh, c])
    return out, lse


def brute_softmax_row(row, masked, scale):
    vals = [scale * float(x) for x, m in zip(row, masked) if not m]
    if not vals:
        return [0.0] * len(row)
    mx = max(vals)
    z = sum(math.exp(x - mx) for x in vals)
    return [0.0 if m else math.exp(scale * float(x) - mx) / z for x, m in zip(row, masked)]


def philox_scalar(ctr, key):
    """Philox4x32-10 on Python ints, written independently of the vectorized version."""
    x, y, z, w = ctr
    k0, k1 = key
    for _ in range(10):
        p0 = 0xD2511F53 * x
        p1 = 0xCD9E8D57 * z
        x, y, z, w = ((p1 >> 32) ^ y ^ k0) & 0xFFFFFFFF, p1 & 0xFFFFFFFF, \
            ((p0 >> 32) ^ w ^ k1) & 0xFFFFFFFF, p0 & 0xFFFFFFFF
        k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
        k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return x, y, z, w


def brute_keep(seed, offset, p, bi, hi, H, i, j):
    key = (seed & 0xFFFFFFFF, ((seed >> 32) + (offset >> 32)) & 0xFFFFFFFF)
    r = philox_scalar(((j // 4) & 0xFFFFFFFF, i & 0xFFFFFFFF, (bi * H + hi) & 0xFFFFFFFF,
                       offset & 0xFFFFFFFF), key)[j % 4]
    threshold = min(math.floor(float(np.float32(p)) * 2.0**32), 2**32 - 1)
    return r >= threshold


# --------------------------------------------------------------------------------------------
# Visibility
# --------------------------------------------------------------------------------------------

WINDOWS = [None, (-1, -1), (0, 0), (2, 0), (1, 2), (-1, 1), (3, -1), (0, -1)]


@pytest.mark.parametrize("mask_type", R.MASK_TYPES)
def test_visibility_matches_brute_force(mask_type):
    for L_q, L_k, window in itertools.product([0, 1, 3, 6], [0, 1, 4, 6], WINDOWS):
        s_q, s_kv = L_q + 2, L_k + 1
        got = R.visibility_mask(L_q, L_k, s_q, s_kv, mask_type, window)
        want = np.array([[brute_visible(i, j, L_q, L_k, mask_type, window) for j in range(s_kv)]
                         for i in range(s_q)], dtype=bool).reshape(s_q, s_kv)
        np.testing.assert_array_equal(got, want, err_msg=f"{mask_type} {L_q} {L_k} {window}")


def _pic(rows):
    return np.array([[c == "1" for c in r] for r in rows.split()], dtype=bool)


def test_visibility_literal_pictures():
    # SPEC §1: causal 4x4 masks (True = masked) the strict upper triangle.
    np.testing.assert_array_equal(~R.visibility_mask(4, 4, mask_type="causal"),
                                  _pic("0111 0011 0001 0000"))
    np.testing.assert_array_equal(R.visibility_mask(4, 6, mask_type="causal"),
                                  _pic("100000 110000 111000 111100"))
    np.testing.assert_array_equal(R.visibility_mask(4, 6, mask_type="causal_bottom_right"),
                                  _pic("111000 111100 111110 111111"))
    # More queries than keys, bottom-right: the first rows see nothing.
    np.testing.assert_array_equal(R.visibility_mask(5, 3, mask_type="causal_bottom_right"),
                                  _pic("000 000 100 110 111"))
    np.testing.assert_array_equal(R.visibility_mask(4, 6, mask_type="causal", window=(2, 0)),
                                  _pic("100000 110000 111000 011100"))
    np.testing.assert_array_equal(
        R.visibility_mask(4, 6, mask_type="causal_bottom_right", window=(2, 0)),
        _pic("111000 011100 001110 000111"))
    np.testing.assert_array_equal(R.visibility_mask(4, 4, mask_type="no_mask", window=(1, 1)),
                                  _pic("1100 1110 0111 0011"))
    np.testing.assert_array_equal(R.visibility_mask(2, 3, 3, 4, "padding"),
                                  _pic("1110 1110 0000"))


def test_window_resolution():
    assert R.resolve_window("causal", None) == (-1, 0)
    assert R.resolve_window("causal", (-1, -1)) == (-1, 0)
    assert R.resolve_window("padding_causal_bottom_right", (3, 5)) == (3, 0)
    assert R.resolve_window("no_mask", None) == (-1, -1)
    assert R.resolve_window("padding", (-1, 0)) == (-1, 0)
    with pytest.raises(ValueError):
        R.resolve_window("no_mask", (-2, 0))
    with pytest.raises(ValueError):
        R.resolve_window("sliding", None)


def test_padding_mask_and_cu_seqlens():
    m = R.padding_mask([2, 0, 3], 3)
    assert m.shape == (3, 1, 1, 3)
    np.testing.assert_array_equal(m[:, 0, 0], _pic("001 111 000"))
    np.testing.assert_array_equal(R.cu_seqlens([2, 0, 3]), [0, 2, 2, 5])
    assert R.cu_seqlens([2, 0, 3]).dtype == np.int32
    full = R.full_padding_mask([1, 2], [2, 1], 2, 3)
    np.testing.assert_array_equal(full[0, 0], _pic("001 111"))
    np.testing.assert_array_equal(full[1, 0], _pic("011 011"))


# --------------------------------------------------------------------------------------------
# Attention forward vs brute force
# --------------------------------------------------------------------------------------------

FWD_CASES = [
    # (b, s_q, s_kv, h, h_kv, d, d_v, mask_type, window, lens_q, lens_kv)
    (1, 5, 5, 2, 2, 4, 4, "no_mask", None, None, None),
    (2, 4, 6, 4, 2, 3, 5, "causal", None, None, None),
    (2, 4, 6, 4, 1, 3, 3, "causal_bottom_right", (2, 0), None, None),
    (2, 6, 3, 2, 1, 4, 2, "causal_bottom_right", None, None, None),
    (3, 5, 6, 2, 2, 3, 3, "padding", (1, 2), [5, 0, 3], [6, 2, 0]),
    (3, 5, 6, 4, 2, 3, 4, "padding_causal", (2, 0), [5, 1, 3], [6, 4, 1]),
    (3, 5, 6, 4, 4, 3, 4, "padding_causal_bottom_right", None, [5, 4, 3], [2, 6, 1]),
    (2, 4, 5, 2, 1, 3, 3, "arbitrary", (1, 1), None, None),
]


def _rand(rng, *shape):
    return rng.standard_normal(shape)


@pytest.mark.parametrize("case", FWD_CASES, ids=lambda c: f"{c[7]}-w{c[8]}-h{c[3]}:{c[4]}")
@pytest.mark.parametrize("extra", ["plain", "mask_bias_dropout"])
def test_attention_fwd_matches_brute_force(rng, case, extra):
    b, s_q, s_kv, h, h_kv, d, d_v, mask_type, window, lens_q, lens_kv = case
    q, k, v = _rand(rng, b, s_q, h, d), _rand(rng, b, s_kv, h_kv, d), _rand(rng, b, s_kv, h_kv, d_v)
    lens_q = lens_q or [s_q] * b
    lens_kv = lens_kv or [s_kv] * b
    padded = R.has_padding(mask_type)
    kw = dict(attn_mask_type=mask_type, window_size=window, softmax_scale=0.7)
    if padded:
        kw.update(cu_seqlens_q=R.cu_seqlens(lens_q), cu_seqlens_kv=R.cu_seqlens(lens_kv))
    attn_mask = bias = keep = None
    p = 0.0
    if extra == "mask_bias_dropout" or mask_type == "arbitrary":
        attn_mask = rng.random((b, h, s_q, s_kv)) < 0.3
        kw["attn_mask"] = attn_mask
    if extra == "mask_bias_dropout":
        bias = _rand(rng, 1, h, s_q, s_kv)
        keep = rng.random((b, h, s_q, s_kv)) >= 0.25
        p = 0.25
        kw.update(bias=bias, dropout_p=p, dropout_keep=keep)
    out, lse = R.attention_fwd(q, k, v, **kw)
    want_out, want_lse = brute_attention(
        q, k, v, lens_q=lens_q, lens_kv=lens_kv, mask_type=mask_type, window=window, scale=0.7,
        attn_mask=attn_mask, bias=None if bias is None else np.broadcast_to(bias, keep.shape),
        keep=keep, p=p)
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.isinf(lse), np.isinf(want_lse))
    fin = np.isfinite(want_lse)
    np.testing.assert_allclose(lse[fin], want_lse[fin], rtol=1e-12, atol=1e-12)


def test_default_scale_and_no_visible_rows(rng):
    q, k, v = _rand(rng, 1, 3, 1, 16), _rand(rng, 1, 4, 1, 16), _rand(rng, 1, 4, 1, 16)
    out_default, _ = R.attention_fwd(q, k, v)
    out_explicit, _ = R.attention_fwd(q, k, v, softmax_scale=0.25)
    np.testing.assert_array_equal(out_default, out_explicit)
    # A window that leaves row 0 nothing: key range [0 + 2 - 1, 0 + 2 + 0] is fine, but with
    # L_k = 2 and delta = -1 the first row sees no key.
    q2, k2, v2 = _rand(rng, 1, 3, 1, 4), _rand(rng, 1, 2, 1, 4), _rand(rng, 1, 2, 1, 4)
    out, lse = R.attention_fwd(q2, k2, v2, attn_mask_type="causal_bottom_right")
    assert np.all(out[0, 0] == 0.0) and np.all(np.isneginf(lse[0, :, 0]))
    dq, dk, dv = R.attention_bwd(q2, k2, v2, _rand(rng, 1, 3, 1, 4),
                                 attn_mask_type="causal_bottom_right")
    assert np.all(dq[0, 0] == 0.0)
    assert np.all(np.isfinite(dk)) and np.all(np.isfinite(dv))


# --------------------------------------------------------------------------------------------
# Layouts agree with each other
# --------------------------------------------------------------------------------------------


def _to_thd(x, lens):
    return np.concatenate([x[bi, :L] for bi, L in enumerate(lens)], axis=0)


@pytest.mark.parametrize("mask_type", ["padding", "padding_causal", "padding_causal_bottom_right"])
def test_layouts_agree(rng, mask_type):
    b, s_q, s_kv, h, h_kv, d = 3, 6, 5, 4, 2, 3
    lens_q, lens_kv = [6, 0, 2], [3, 5, 5]
    q, k, v = _rand(rng, b, s_q, h, d), _rand(rng, b, s_kv, h_kv, d), _rand(rng, b, s_kv, h_kv, d)
    do = _rand(rng, b, s_q, h, d)
    cq, ck = R.cu_seqlens(lens_q), R.cu_seqlens(lens_kv)
    kw = dict(attn_mask_type=mask_type, window_size=(2, 1), cu_seqlens_q=cq, cu_seqlens_kv=ck)
    out, lse = R.attention_fwd(q, k, v, **kw)
    grads = R.attention_bwd(q, k, v, do, **kw)

    t = lambda x: x.transpose(1, 0, 2, 3)  # noqa: E731  bshd <-> sbhd
    out_s, lse_s = R.attention_fwd(t(q), t(k), t(v), qkv_format="sbhd", **kw)
    np.testing.assert_array_equal(t(out_s), out)
    np.testing.assert_array_equal(lse_s, lse)
    for g, gs in zip(grads, R.attention_bwd(t(q), t(k), t(v), t(do), qkv_format="sbhd", **kw)):
        np.testing.assert_array_equal(t(gs), g)

    # thd, with two trailing tokens past cu_seqlens[-1] that must stay 0.
    pad = lambda x: np.concatenate([x, _rand(rng, 2, *x.shape[1:])])  # noqa: E731
    qt, kt, vt, dot = pad(_to_thd(q, lens_q)), pad(_to_thd(k, lens_kv)), \
        pad(_to_thd(v, lens_kv)), pad(_to_thd(do, lens_q))
    out_t, lse_t = R.attention_fwd(qt, kt, vt, qkv_format="thd", **kw)
    np.testing.assert_allclose(out_t[:-2], _to_thd(out, lens_q), rtol=0, atol=1e-14)
    assert np.all(out_t[-2:] == 0)
    assert lse_t.shape == (h, qt.shape[0])
    np.testing.assert_array_equal(lse_t[:, :-2], _to_thd(lse.transpose(0, 2, 1), lens_q).T)
    for g, gt, lens in zip(grads, R.attention_bwd(qt, kt, vt, dot, qkv_format="thd", **kw),
                           (lens_q, lens_kv, lens_kv)):
        np.testing.assert_allclose(gt[:-2], _to_thd(g, lens), rtol=0, atol=1e-14)
        assert np.all(gt[-2:] == 0)
    # Padded positions in bshd: exact zeros.
    rows = R.valid_rows("bshd", q.shape, cq)
    assert np.all(out[~rows] == 0) and np.all(grads[0][~rows] == 0)
    assert np.all(grads[1][~R.valid_rows("bshd", k.shape, ck)] == 0)


# --------------------------------------------------------------------------------------------
# Gradients vs finite differences
# --------------------------------------------------------------------------------------------

GRAD_CASES = [
    dict(shape=(2, 4, 5, 2, 2, 3, 3), kw=dict()),
    dict(shape=(2, 4, 6, 4, 2, 3, 2), kw=dict(attn_mask_type="causal_bottom_right",
                                              window_size=(2, 0))),
    dict(shape=(2, 5, 3, 2, 1, 3, 4), kw=dict(attn_mask_type="causal")),
    dict(shape=(3, 4, 5, 2, 1, 3, 3), kw=dict(attn_mask_type="padding_causal", window_size=(1, 0),
                                              cu_seqlens_q=[0, 4, 4, 6],
                                              cu_seqlens_kv=[0, 2, 7, 12])),
    dict(shape=(2, 4, 5, 2, 2, 3, 3), kw=dict(softmax_scale=1.3), bias=True, dropout=True,
         mask=True),
    dict(shape=(2, 4, 5, 4, 2, 3, 3), kw=dict(qkv_format="thd", attn_mask_type="padding",
                                              cu_seqlens_q=[0, 3, 7], cu_seqlens_kv=[0, 5, 5])),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=range(len(GRAD_CASES)))
def test_gradients_match_finite_differences(rng, case):
    b, s_q, s_kv, h, h_kv, d, d_v = case["shape"]
    kw = dict(case["kw"])
    for name in ("cu_seqlens_q", "cu_seqlens_kv"):
        if name in kw:
            kw[name] = np.asarray(kw[name], dtype=np.int32)
    if kw.get("qkv_format") == "thd":
        tq, tk = int(kw["cu_seqlens_q"][-1]) + 1, int(kw["cu_seqlens_kv"][-1]) + 1
        q, k, v = _rand(rng, tq, h, d), _rand(rng, tk, h_kv, d), _rand(rng, tk, h_kv, d_v)
        do = _rand(rng, tq, h, d_v)
    else:
        q, k, v = _rand(rng, b, s_q, h, d), _rand(rng, b, s_kv, h_kv, d), \
            _rand(rng, b, s_kv, h_kv, d_v)
        do = _rand(rng, b, s_q, h, d_v)
    if case.get("bias"):
        kw["bias"] = _rand(rng, b, 1, s_q, s_kv)
    if case.get("mask"):
        kw["attn_mask"] = rng.random((b, h, s_q, s_kv)) < 0.3
    if case.get("dropout"):
        kw.update(dropout_p=0.3, seed=1234, offset=(7 << 32) + 5)
    grads = R.attention_bwd(q, k, v, do, **kw)

    def loss():
        return float(np.sum(R.attention_fwd(q, k, v, **kw)[0] * do))

    eps = 1e-6
    for x, g in zip((q, k, v), grads):
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            x0 = x[idx]
            x[idx] = x0 + eps
            up = loss()
            x[idx] = x0 - eps
            down = loss()
            x[idx] = x0
            fd[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------------
# Philox and the dropout rule
# --------------------------------------------------------------------------------------------

# Random123's known-answer vectors for philox4x32_10 (counter, key, result).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,want", PHILOX_KAT)
def test_philox_known_answers(ctr, key, want):
    assert tuple(int(x) for x in R.philox4x32_10(ctr, key)) == want
    assert philox_scalar(ctr, key) == want


def test_philox_vectorized_matches_scalar(rng):
    ctrs = rng.integers(0, 2**32, size=(4, 50), dtype=np.uint64)
    key = (int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32)))
    got = np.stack(R.philox4x32_10(tuple(ctrs), key))
    for n in range(50):
        assert tuple(int(x) for x in got[:, n]) == philox_scalar(tuple(int(c) for c in ctrs[:, n]),
                                                                 key)


@pytest.mark.parametrize("seed,offset", [(0, 0), (42, 12), (2**40 + 3, (5 << 32) + 17),
                                         (2**64 - 1, 2**64 - 1)])
def test_dropout_keep_mask_matches_scalar_rule(seed, offset):
    b, h, s_q, s_kv, p = 2, 3, 5, 7, 0.4
    keep = R.dropout_keep_mask(seed, offset, p, b, h, s_q, s_kv)
    assert keep.shape == (b, h, s_q, s_kv) and keep.dtype == bool
    for bi, hi, i, j in np.ndindex(keep.shape):
        assert keep[bi, hi, i, j] == brute_keep(seed, offset, p, bi, hi, h, i, j)


def test_dropout_threshold_and_rate():
    assert R.dropout_threshold(0.0) == 0
    assert R.dropout_threshold(0.5) == 2**31
    assert R.dropout_threshold(np.nextafter(np.float32(1), np.float32(0))) <= 2**32 - 1
    assert R.dropout_keep_mask(3, 4, 0.0, 1, 2, 8, 9).all()
    # Keep rate over 2^18 draws: binomial std ~ 1e-3.
    for p in (0.1, 0.5, 0.9):
        rate = R.dropout_keep_mask(11, 22, p, 4, 4, 128, 128).mean()
        assert abs(rate - (1 - p)) < 5e-3, (p, rate)
    # Different offsets give different masks; the same (seed, offset) the same one.
    a = R.dropout_keep_mask(11, 22, 0.5, 1, 1, 16, 16)
    assert np.array_equal(a, R.dropout_keep_mask(11, 22, 0.5, 1, 1, 16, 16))
    assert not np.array_equal(a, R.dropout_keep_mask(11, 23, 0.5, 1, 1, 16, 16))


def test_dropout_in_attention_uses_philox_mask(rng):
    q, k, v = _rand(rng, 2, 3, 2, 4), _rand(rng, 2, 5, 2, 4), _rand(rng, 2, 5, 2, 4)
    keep = R.dropout_keep_mask(9, 8, 0.3, 2, 2, 3, 5)
    a, _ = R.attention_fwd(q, k, v, dropout_p=0.3, seed=9, offset=8)
    b, _ = R.attention_fwd(q, k, v, dropout_p=0.3, dropout_keep=keep)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# Softmax references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s_q,s_kv", [(3, 3), (4, 6), (6, 4), (1, 5)])
@pytest.mark.parametrize("kind", ["plain", "masked", "top_left", "bottom_right"])
def test_softmax_matches_brute_force(rng, s_q, s_kv, kind):
    x = _rand(rng, 2, 2, s_q, s_kv)
    scale = 0.8
    masked = np.zeros(x.shape, dtype=bool)
    if kind == "plain":
        y = R.scaled_softmax(x, scale)
    elif kind == "masked":
        mask = rng.random((2, 1, s_q, s_kv)) < 0.4
        mask[0, 0, 0, :] = True  # one fully masked row
        masked |= mask
        y = R.scaled_masked_softmax(x, mask, scale)
    elif kind == "top_left":
        masked |= np.array([[j > i for j in range(s_kv)] for i in range(s_q)])
        y = R.scaled_upper_triang_masked_softmax(x, scale)
    else:
        masked |= np.array([[j > i + s_kv - s_q for j in range(s_kv)] for i in range(s_q)])
        y = R.scaled_aligned_causal_masked_softmax(x, scale)
    for idx in np.ndindex(x.shape[:3]):
        np.testing.assert_allclose(y[idx], brute_softmax_row(x[idx], masked[idx], scale),
                                   rtol=1e-13, atol=1e-15)
    fully = masked.all(axis=-1)
    assert np.all(y[fully] == 0)


def test_softmax_bwd_matches_finite_differences(rng):
    x = _rand(rng, 1, 2, 3, 5)
    mask = rng.random((1, 1, 3, 5)) < 0.4
    mask[0, 0, 1] = True
    dy = _rand(rng, *x.shape)
    scale = 1.7
    dx = R.softmax_bwd(R.scaled_masked_softmax(x, mask, scale), dy, scale)
    eps = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        x0 = x[idx]
        x[idx] = x0 + eps
        up = np.sum(R.scaled_masked_softmax(x, mask, scale) * dy)
        x[idx] = x0 - eps
        down = np.sum(R.scaled_masked_softmax(x, mask, scale) * dy)
        x[idx] = x0
        fd[idx] = (up - down) / (2 * eps)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8)
    assert np.all(dx[0, :, 1] == 0)


# --------------------------------------------------------------------------------------------
# mask_to_cu_seqlens reference
# --------------------------------------------------------------------------------------------


def test_mask_to_cu_seqlens_forms():
    lq, lk = [3, 0, 5, 1], [4, 2, 0, 6]
    cq, ck = R.mask_to_cu_seqlens(R.padding_mask(lq, 5))
    np.testing.assert_array_equal(cq, R.cu_seqlens(lq))
    np.testing.assert_array_equal(ck, R.cu_seqlens(lq))
    cq, ck = R.mask_to_cu_seqlens(R.padding_mask(lq, 5), R.padding_mask(lk, 6))
    np.testing.assert_array_equal(cq, R.cu_seqlens(lq))
    np.testing.assert_array_equal(ck, R.cu_seqlens(lk))
    # Full form: a sequence with an empty side loses its other length (all True).
    cq, ck = R.mask_to_cu_seqlens(R.full_padding_mask(lq, lk, 5, 6))
    np.testing.assert_array_equal(cq, R.cu_seqlens([3, 0, 0, 1]))
    np.testing.assert_array_equal(ck, R.cu_seqlens([4, 0, 0, 6]))


def test_mask_to_cu_seqlens_rejects_non_right_padding():
    left = R.padding_mask([2], 4)[:, :, :, ::-1]  # T T F F
    hole = np.array([False, True, False, True]).reshape(1, 1, 1, 4)
    ok = R.padding_mask([2, 3], 4)
    causal_full = (~R.visibility_mask(4, 4, mask_type="causal"))[None, None]
    for bad in (left, hole, causal_full):
        assert not R.is_right_padding(bad)
        with pytest.raises(ValueError, match="arbitrary"):
            R.mask_to_cu_seqlens(bad)
    assert not R.is_right_padding(ok, hole.repeat(2, axis=0))
    assert R.is_right_padding(ok) and R.is_right_padding(ok, ok)


def test_assert_close_fa():
    ref = np.ones(4)
    R.assert_close_fa(ref + 1e-4, ref, ref + 1e-4, floor=0.0)
    with pytest.raises(AssertionError):
        R.assert_close_fa(ref + 1e-3, ref, ref + 1e-4, floor=1e-6)
    with pytest.raises(AssertionError):
        R.assert_close_fa(ref * np.nan, ref, ref, floor=1.0)


# --------------------------------------------------------------------------------------------
# docs/masks.md pictures are the oracle's
# --------------------------------------------------------------------------------------------

DOCS_MASKS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "masks.md"
_PICTURE = re.compile(r"<!-- picture: (.*?) -->\s*```text\n(.*?)```", re.S)


def docs_pictures():
    """[(params dict, picture text)] for every `<!-- picture: ... -->` in docs/masks.md."""
    found = []
    for spec, body in _PICTURE.findall(DOCS_MASKS.read_text()):
        params = dict(item.split("=", 1) for item in spec.split())
        found.append((params, body))
    return found


def picture_for(params):
    window = None if params["window"] == "None" else tuple(int(x) for x in
                                                           params["window"].split(","))
    L_q, L_k = int(params["L_q"]), int(params["L_k"])
    vis = R.visibility_mask(L_q, L_k, int(params.get("s_q", L_q)), int(params.get("s_kv", L_k)),
                            params["mask_type"], window)
    return R.render_mask(~vis)


def test_docs_mask_pictures():
    pictures = docs_pictures()
    assert len(pictures) >= 9, "docs/masks.md lost its pictures"
    for params, body in pictures:
        assert body.strip("\n") == picture_for(params), f"picture {params} is not the oracle's"
