"""paddle_te.nn.DotProductAttention against tests/reference.py (float64), its mask forms, its
window policy (check_set_window_size) and its errors."""

import warnings

import numpy as np
import paddle
import pytest

import paddle_te
import paddle_te.nn as tnn
import reference as ref

TOL64 = dict(rtol=1e-9, atol=1e-10)


def _t(x, grad=False):
    t = paddle.to_tensor(x)
    t.stop_gradient = not grad
    return t


def _layout(x_bshd, fmt):
    """numpy [b, s, h, d] -> the layout of `fmt` (bshd/sbhd)."""
    return x_bshd if fmt == "bshd" else np.ascontiguousarray(x_bshd.transpose(1, 0, 2, 3))


def _run(layer, q, k, v, d_out, *args, **kwargs):
    """Forward + backward with upstream gradient d_out; returns numpy (out, dq, dk, dv)."""
    tq, tk, tv = _t(q, True), _t(k, True), _t(v, True)
    out = layer(tq, tk, tv, *args, **kwargs)
    (out * _t(d_out)).sum().backward()
    return out.numpy(), tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


def _check(got, q, k, v, d_out, **ref_kw):
    want_out, _ = ref.attention_fwd(q, k, v, **ref_kw)
    want_grads = ref.attention_bwd(q, k, v, d_out, **ref_kw)
    names = ("out", "dq", "dk", "dv")
    for name, g, w in zip(names, got, (want_out,) + tuple(want_grads)):
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, w, err_msg=name, **TOL64)


def _qkv(rng, b, s_q, s_kv, h=4, h_kv=2, d=8):
    q = rng.standard_normal((b, s_q, h, d))
    k = rng.standard_normal((b, s_kv, h_kv, d))
    v = rng.standard_normal((b, s_kv, h_kv, d))
    return q, k, v, rng.standard_normal((b, s_q, h, d))


# ---- against the reference -------------------------------------------------------------------

CASES = [
    # (mask type, window, s_q, s_kv)
    ("no_mask", None, 5, 7),
    ("no_mask", (2, 1), 6, 6),
    ("causal", None, 6, 6),
    ("causal", (2, 0), 6, 6),
    ("causal_bottom_right", None, 4, 7),
    ("padding", None, 5, 7),
    ("padding_causal", (1, 0), 6, 6),
    ("padding_causal_bottom_right", None, 4, 7),
]


@pytest.mark.parametrize("fmt", ["bshd", "sbhd"])
@pytest.mark.parametrize("mask_type,window,s_q,s_kv", CASES)
def test_fused_types_vs_reference(rng, fmt, mask_type, window, s_q, s_kv):
    b = 3
    q, k, v, d_out = _qkv(rng, b, s_q, s_kv)
    layer = tnn.DotProductAttention(4, 8, num_gqa_groups=2, attn_mask_type=mask_type,
                                    window_size=window, qkv_format=fmt)
    ref_kw = dict(attn_mask_type=mask_type, window_size=window)
    args = ()
    if mask_type.startswith("padding"):
        lq = np.array([s_q, max(1, s_q - 2), 1])
        lk = np.array([s_kv, s_kv - 3, 2])
        mask = (_t(ref.padding_mask(lq, s_q)), _t(ref.padding_mask(lk, s_kv)))
        args = (mask,)
        ref_kw.update(cu_seqlens_q=ref.cu_seqlens(lq), cu_seqlens_kv=ref.cu_seqlens(lk))
    got = _run(layer, *(_layout(x, fmt) for x in (q, k, v, d_out)), *args)
    _check(got, *(_layout(x, fmt) for x in (q, k, v, d_out)), qkv_format=fmt, **ref_kw)


@pytest.mark.parametrize("mask_type", ["padding", "padding_causal", "causal", "no_mask"])
def test_thd_vs_reference(rng, mask_type):
    lq, lk = np.array([3, 5, 1]), np.array([4, 5, 2])
    t_q, t_kv = int(lq.sum()) + 2, int(lk.sum()) + 1  # trailing tokens past cu_seqlens[-1]
    q = rng.standard_normal((t_q, 4, 8))
    k = rng.standard_normal((t_kv, 2, 8))
    v = rng.standard_normal((t_kv, 2, 8))
    d_out = rng.standard_normal((t_q, 4, 8))
    cu_q, cu_kv = ref.cu_seqlens(lq), ref.cu_seqlens(lk)
    layer = tnn.DotProductAttention(4, 8, num_gqa_groups=2, attn_mask_type=mask_type,
                                    qkv_format="thd")
    got = _run(layer, q, k, v, d_out, cu_seqlens_q=_t(cu_q), cu_seqlens_kv=_t(cu_kv),
               max_seqlen_q=5, max_seqlen_kv=5)
    padded = "padding" + ("_causal" if "causal" in mask_type else "")
    _check(got, q, k, v, d_out, qkv_format="thd", cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv,
           attn_mask_type=padded if not mask_type.startswith("padding") else mask_type)


@pytest.mark.parametrize("fmt", ["bshd", "sbhd"])
@pytest.mark.parametrize("mask_shape", ["b1qk", "bhqk", "qk", "k", "scalar"])
@pytest.mark.parametrize("window", [None, (2, 1)])
def test_arbitrary_vs_reference(rng, fmt, mask_shape, window):
    """Any bool mask that broadcasts to [b, h, s_q, s_kv], down to a single key row or a 0-D one."""
    b, s_q, s_kv = 2, 5, 6
    q, k, v, d_out = _qkv(rng, b, s_q, s_kv)
    shape = {"b1qk": (b, 1, s_q, s_kv), "bhqk": (b, 4, s_q, s_kv), "qk": (s_q, s_kv),
             "k": (s_kv,), "scalar": ()}[mask_shape]
    mask = rng.random(shape) < 0.3
    if len(shape) >= 2:
        mask.reshape(-1, s_kv)[1, :] = True  # a fully masked row: output 0, gradients 0
    layer = tnn.DotProductAttention(4, 8, num_gqa_groups=2, attn_mask_type="arbitrary",
                                    window_size=window, qkv_format=fmt)
    got = _run(layer, *(_layout(x, fmt) for x in (q, k, v, d_out)), _t(mask))
    _check(got, *(_layout(x, fmt) for x in (q, k, v, d_out)), qkv_format=fmt,
           attn_mask_type="arbitrary", window_size=window, attn_mask=mask)


@pytest.mark.parametrize("mask_type", ["causal", "arbitrary"])
def test_mqa_vs_reference(rng, mask_type):
    """One kv head shared by every query head (MQA), fused and unfused."""
    q, k, v, d_out = _qkv(rng, 2, 5, 5, h=4, h_kv=1)
    mask = rng.random((2, 1, 5, 5)) < 0.3
    args = (_t(mask),) if mask_type == "arbitrary" else ()
    layer = tnn.DotProductAttention(4, 8, num_gqa_groups=1, attn_mask_type=mask_type)
    got = _run(layer, q, k, v, d_out, *args)
    _check(got, q, k, v, d_out, attn_mask_type=mask_type,
           attn_mask=mask if mask_type == "arbitrary" else None)


@pytest.mark.parametrize("mask_type", ["causal", "no_mask", "padding", "arbitrary"])
@pytest.mark.parametrize("bias_shape", [(1, 4, 6, 6), (6,), ()])
def test_core_attention_bias_vs_reference(rng, mask_type, bias_shape):
    b, s = 2, 6
    q, k, v, d_out = _qkv(rng, b, s, s)
    bias = np.asarray(rng.standard_normal(bias_shape))
    layer = tnn.DotProductAttention(4, 8, num_gqa_groups=2, attn_mask_type=mask_type)
    ref_kw = dict(attn_mask_type=mask_type, bias=bias)
    args = ()
    if mask_type == "padding":
        lens = np.array([6, 3])
        args = (_t(ref.padding_mask(lens, s)),)
        ref_kw.update(cu_seqlens_q=ref.cu_seqlens(lens), cu_seqlens_kv=ref.cu_seqlens(lens))
    if mask_type == "arbitrary":
        mask = rng.random((b, 1, s, s)) < 0.3
        args = (_t(mask),)
        ref_kw.update(attn_mask=mask)
    tb = _t(bias, True)
    got = _run(layer, q, k, v, d_out, *args, core_attention_bias=tb)
    _check(got, q, k, v, d_out, **ref_kw)
    assert tb.grad is not None and np.all(np.isfinite(tb.grad.numpy()))


@pytest.mark.parametrize("mask_type,window", [("causal_bottom_right", None),
                                              ("causal_bottom_right", (2, 0)),
                                              ("causal", (1, 0))])
def test_bias_with_causal_types_vs_reference(rng, mask_type, window):
    """Bias + causal runs the dedicated causal softmax kernels (or a window mask) unfused."""
    q, k, v, d_out = _qkv(rng, 2, 4, 7)
    bias = rng.standard_normal((2, 1, 4, 7))
    layer = tnn.DotProductAttention(4, 8, num_gqa_groups=2, attn_mask_type=mask_type,
                                    window_size=window)
    got = _run(layer, q, k, v, d_out, core_attention_bias=_t(bias))
    _check(got, q, k, v, d_out, attn_mask_type=mask_type, window_size=window, bias=bias)


def test_bias_gradient_finite_difference(rng):
    """The bias gradient of the unfused path, by central differences."""
    q, k, v, d_out = _qkv(rng, 1, 3, 4, h=2, h_kv=2, d=4)
    bias = rng.standard_normal((1, 2, 3, 4))
    layer = tnn.DotProductAttention(2, 4, attn_mask_type="no_mask")
    tb = _t(bias, True)
    out = layer(_t(q), _t(k), _t(v), core_attention_bias=tb)
    (out * _t(d_out)).sum().backward()

    def f(bb):
        o, _ = ref.attention_fwd(q, k, v, bias=bb)
        return float((o * d_out).sum())

    eps = 1e-6
    num = np.zeros_like(bias)
    for idx in np.ndindex(bias.shape):
        e = np.zeros_like(bias)
        e[idx] = eps
        num[idx] = (f(bias + e) - f(bias - e)) / (2 * eps)
    np.testing.assert_allclose(tb.grad.numpy(), num, rtol=1e-5, atol=1e-7)


# ---- mask forms == cu_seqlens -----------------------------------------------------------------


def test_padding_mask_forms_agree_with_cu_seqlens(rng):
    b, s = 3, 6
    q, k, v, _ = _qkv(rng, b, s, s, h_kv=4)
    layer = tnn.DotProductAttention(4, 8, attn_mask_type="padding_causal")
    lens = np.array([6, 2, 4])
    cu = _t(ref.cu_seqlens(lens))
    direct = layer(_t(q), _t(k), _t(v), cu_seqlens_q=cu, cu_seqlens_kv=cu).numpy()
    pm = ref.padding_mask(lens, s)
    forms = {
        "self [b,1,1,s]": _t(pm),
        "full [b,1,s,s]": _t(ref.full_padding_mask(lens, lens, s, s)),
        "tuple": (_t(pm), _t(pm)),
    }
    for name, m in forms.items():
        np.testing.assert_allclose(layer(_t(q), _t(k), _t(v), m).numpy(), direct,
                                   err_msg=name, **TOL64)


def test_cross_padding_mask_forms_agree_with_cu_seqlens(rng):
    b, s_q, s_kv = 2, 4, 7
    q, k, v, _ = _qkv(rng, b, s_q, s_kv)
    layer = tnn.DotProductAttention(4, 8, num_gqa_groups=2, attn_mask_type="padding",
                                    attention_type="cross")
    lq, lk = np.array([4, 2]), np.array([5, 7])
    direct = layer(_t(q), _t(k), _t(v), cu_seqlens_q=_t(ref.cu_seqlens(lq)),
                   cu_seqlens_kv=_t(ref.cu_seqlens(lk)), max_seqlen_q=s_q,
                   max_seqlen_kv=s_kv).numpy()
    tup = (_t(ref.padding_mask(lq, s_q)), _t(ref.padding_mask(lk, s_kv)))
    full = _t(ref.full_padding_mask(lq, lk, s_q, s_kv))
    for m in (tup, full):
        np.testing.assert_allclose(layer(_t(q), _t(k), _t(v), m).numpy(), direct, **TOL64)
    # Padded query rows are exactly 0.
    assert np.all(direct[1, 2:] == 0)


# ---- dropout, GQA, AMP -------------------------------------------------------------------------


@pytest.mark.parametrize("mask_type", ["causal", "arbitrary"])
def test_dropout_follows_training(rng, mask_type):
    q, k, v, _ = _qkv(rng, 2, 8, 8, h_kv=4)
    args = (_t(rng.random((2, 1, 8, 8)) < 0.2),) if mask_type == "arbitrary" else ()
    plain = tnn.DotProductAttention(4, 8, attn_mask_type=mask_type)
    drop = tnn.DotProductAttention(4, 8, attention_dropout=0.5, attn_mask_type=mask_type)
    want = plain(_t(q), _t(k), _t(v), *args).numpy()
    drop.train()
    paddle.seed(7)
    a = drop(_t(q), _t(k), _t(v), *args).numpy()
    paddle.seed(7)
    b = drop(_t(q), _t(k), _t(v), *args).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, want)
    drop.eval()
    np.testing.assert_allclose(drop(_t(q), _t(k), _t(v), *args).numpy(), want, **TOL64)


def test_autocast_on_cpu_keeps_float32(rng):
    """Paddle's auto_cast does nothing on the CPU; the layer follows (its casts are GPU-only)."""
    q, k, v, _ = _qkv(rng, 1, 4, 4, h_kv=4)
    layer = tnn.DotProductAttention(4, 8)
    tq, tk, tv = (_t(x.astype(np.float32)) for x in (q, k, v))
    with paddle.amp.auto_cast(dtype="float16"):
        out = layer(tq, tk, tv)
    assert out.dtype == paddle.float32


def test_autocast_casts_float32_inputs_on_gpu(rng, monkeypatch):
    """The layer's own AMP cast (custom ops are not cast by Paddle), with the GPU simulated: under
    auto_cast float32 q/k/v/bias run in the autocast dtype; other dtypes are left alone. (Only
    the fused path runs here: Paddle's CPU matmul has no bfloat16 for the unfused one.)"""
    from paddle_te.nn import _core

    monkeypatch.setattr(paddle.amp, "is_autocast_enabled", lambda *a, **k: True)
    monkeypatch.setattr(paddle.amp, "get_autocast_dtype", lambda *a, **k: paddle.bfloat16)
    monkeypatch.setattr(_core, "_on_gpu", lambda t: True)
    q, k, v, _ = _qkv(rng, 1, 4, 4, h_kv=4)
    layer = tnn.DotProductAttention(4, 8, attn_mask_type="causal")
    f32 = [_t(x.astype(np.float32)) for x in (q, k, v)]
    out = layer(*f32)
    assert out.dtype == paddle.bfloat16
    want = tnn.DotProductAttention(4, 8, attn_mask_type="causal")(*[_t(x) for x in (q, k, v)])
    np.testing.assert_allclose(out.astype("float32").numpy(), want.numpy(), atol=5e-2)
    assert layer(*[_t(x) for x in (q, k, v)]).dtype == paddle.float64
    bias = _t(np.zeros((1, 4, 4, 4), np.float32))
    cast = _core.amp_cast(f32[0], None, bias, _t(q))
    assert [c.dtype if c is not None else None for c in cast] == [
        paddle.bfloat16, None, paddle.bfloat16, paddle.float64]


# ---- check_set_window_size (SPEC §2) ----------------------------------------------------------

CAUSAL = ["causal", "padding_causal", "causal_bottom_right", "padding_causal_bottom_right"]
OTHER = ["no_mask", "padding", "arbitrary"]


def _no_warning(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def test_window_reexport():
    from paddle_te import masks

    assert tnn.check_set_window_size is masks.check_set_window_size


@pytest.mark.parametrize("mask_type", CAUSAL)
def test_window_causal_types(mask_type):
    f = tnn.check_set_window_size
    assert _no_warning(f, mask_type, None) == (-1, 0)
    assert _no_warning(f, mask_type, (-1, -1)) == (-1, 0)
    assert _no_warning(f, mask_type, (3, 0)) == (3, 0)
    assert _no_warning(f, mask_type, (-1, 0)) == (-1, 0)
    with pytest.warns(UserWarning):
        assert tuple(f(mask_type, (3, 2))) == (3, 0)
    with pytest.warns(UserWarning):
        assert tuple(f(mask_type, (-1, 5))) == (-1, 0)


@pytest.mark.parametrize("mask_type", OTHER)
def test_window_other_types(mask_type):
    f = tnn.check_set_window_size
    assert _no_warning(f, mask_type, None) == (-1, -1)
    for w in [(-1, -1), (-1, 0), (0, 0), (4, -1), (2, 3)]:
        assert tuple(_no_warning(f, mask_type, w)) == w


@pytest.mark.parametrize("mask_type", CAUSAL + OTHER)
@pytest.mark.parametrize("window", [(-2, 0), (0, -2), (-5, -5), (1,), (1, 2, 3), "ab", (1.5, 2),
                                    (1, None), 3])
def test_window_invalid(mask_type, window):
    with pytest.raises(ValueError):
        tnn.check_set_window_size(mask_type, window)


def test_window_unknown_type():
    with pytest.raises(ValueError):
        tnn.check_set_window_size("sliding", None)


def test_layer_applies_window_policy():
    with pytest.warns(UserWarning):
        layer = tnn.DotProductAttention(2, 8, attn_mask_type="causal", window_size=(2, 2))
    assert tuple(layer.window_size) == (2, 0)
    assert tuple(tnn.DotProductAttention(2, 8, attn_mask_type="no_mask").window_size) == (-1, -1)
    with pytest.raises(ValueError):
        tnn.DotProductAttention(2, 8, window_size=(-3, 0))


# ---- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_type", ["no_mask", "causal", "causal_bottom_right"])
def test_mask_with_type_that_takes_none_is_an_error(rng, mask_type):
    q, k, v, _ = _qkv(rng, 2, 4, 4, h_kv=4)
    layer = tnn.DotProductAttention(4, 8, attn_mask_type=mask_type)
    mask = _t(np.zeros((2, 1, 1, 4), dtype=bool))
    with pytest.raises(ValueError, match=mask_type):
        layer(_t(q), _t(k), _t(v), mask)


def test_mask_plus_cu_seqlens_is_an_error(rng):
    q, k, v, _ = _qkv(rng, 2, 4, 4, h_kv=4)
    cu = _t(np.array([0, 4, 8], dtype=np.int32))
    mask = _t(np.zeros((2, 1, 1, 4), dtype=bool))
    for mask_type in ("padding", "arbitrary"):
        layer = tnn.DotProductAttention(4, 8, attn_mask_type=mask_type)
        with pytest.raises(ValueError, match="cu_seqlens"):
            layer(_t(q), _t(k), _t(v), mask, cu_seqlens_q=cu, cu_seqlens_kv=cu)


def test_other_errors(rng):
    q, k, v, _ = _qkv(rng, 2, 4, 4, h_kv=4)
    tq, tk, tv = _t(q), _t(k), _t(v)
    with pytest.raises(ValueError, match="num_gqa_groups"):
        tnn.DotProductAttention(4, 8, num_gqa_groups=3)
    with pytest.raises(ValueError, match="qkv_format"):
        tnn.DotProductAttention(4, 8, qkv_format="bhsd")
    with pytest.raises(ValueError, match="attention_dropout"):
        tnn.DotProductAttention(4, 8, attention_dropout=1.0)
    with pytest.raises(ValueError, match="softmax_scale"):
        tnn.DotProductAttention(4, 8, softmax_scale=float("nan"))
    with pytest.raises(ValueError, match="attn_mask_type"):
        tnn.DotProductAttention(4, 8, attn_mask_type="sliding")
    # Heads that do not match the configuration.
    with pytest.raises(ValueError, match="heads"):
        tnn.DotProductAttention(2, 8)(tq, tk, tv)
    with pytest.raises(ValueError, match="query"):
        tnn.DotProductAttention(4, 8)(tq[0], tk, tv)
    # Arbitrary masks are bool; additive values go to core_attention_bias.
    arb = tnn.DotProductAttention(4, 8, attn_mask_type="arbitrary")
    with pytest.raises(TypeError, match="bool"):
        arb(tq, tk, tv, _t(np.zeros((4, 4))))
    # Padding masks are bool, rank 4.
    pad = tnn.DotProductAttention(4, 8, attn_mask_type="padding")
    with pytest.raises(TypeError, match="attention_mask"):
        pad(tq, tk, tv, _t(np.zeros((2, 1, 1, 4), dtype=np.int32)))
    with pytest.raises(ValueError, match="attention_mask"):
        pad(tq, tk, tv, _t(np.zeros((2, 4), dtype=bool)))
    # A padding type without lengths.
    with pytest.raises(ValueError):
        pad(tq, tk, tv)
    # Bias must be float.
    with pytest.raises(TypeError, match="core_attention_bias"):
        tnn.DotProductAttention(4, 8)(tq, tk, tv, core_attention_bias=_t(np.zeros((4, 4), bool)))


def test_non_right_padding_mask_names_arbitrary(rng):
    q, k, v, _ = _qkv(rng, 1, 4, 4, h_kv=4)
    hole = np.array([False, True, False, False])[None, None, None, :]
    layer = tnn.DotProductAttention(4, 8, attn_mask_type="padding")
    with pytest.raises(ValueError, match="arbitrary"):
        layer(_t(q), _t(k), _t(v), _t(hole))


def test_package_exports():
    assert paddle_te.nn.DotProductAttention is tnn.DotProductAttention
    for name in ("DotProductAttention", "MultiHeadAttention", "TransformerLayer",
                 "replace_multihead_attention", "check_set_window_size"):
        assert name in tnn.__all__
