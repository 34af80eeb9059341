"""paddle_te_core (the pybind11 module over the C API, SPEC §5) on numpy arrays on the CPU.

Small on purpose (it runs in CI): one case per entry point against tests/reference.py, the
DLPack conversions (strided views, bool masks, int32 outputs) and the error mapping
(ValueError for bad arguments, TypeError for non-arrays). The module comes from PYTHONPATH
(`make test` puts build/core/python there) or build/core/python / build/python.
"""

import numpy as np
import pytest

import reference as ref
from core_import import cpu_core

core = cpu_core()
if core is None:
    pytest.skip("paddle_te_core is not built (make core)", allow_module_level=True)


def _poisoned(shape, dtype=np.float64):
    return np.full(shape, np.nan, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", ["none", "mask", "top_left", "bottom_right"])
def test_softmax_fwd_bwd(rng, dtype, variant):
    shape = (2, 3, 5, 7)
    x = rng.standard_normal(shape).astype(dtype)
    mask = causal = None
    if variant == "mask":
        mask = rng.random((1, 1, 5, 7)) < 0.4
        mask[0, 0, 2] = True  # a fully masked row
    elif variant != "none":
        causal = variant
    y = _poisoned(shape, dtype)
    core.softmax_fwd(x, y, mask=mask, scale=0.625, causal=causal)
    want = ref.softmax_fwd(x, mask=mask, scale=0.625, causal=causal)
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y, want, atol=tol, rtol=0)
    if mask is not None:
        assert np.all(y[:, :, 2] == 0)

    d_y = rng.standard_normal(shape).astype(dtype)
    d_x = _poisoned(shape, dtype)
    core.softmax_bwd(y, d_y, d_x, scale=0.625)
    np.testing.assert_allclose(d_x, ref.softmax_bwd(y, d_y, scale=0.625), atol=tol, rtol=0)


@pytest.mark.parametrize("form", ["self", "cross", "full"])
def test_mask_to_cu_seqlens(form):
    lq, lk = np.array([3, 0, 6]), np.array([2, 5, 5])
    if form == "self":
        mask, mask_kv = ref.padding_mask(lq, 6), None
    elif form == "cross":
        mask, mask_kv = ref.padding_mask(lq, 6), ref.padding_mask(lk, 5)
    else:
        mask, mask_kv = ref.full_padding_mask(lq, lk, 6, 5), None
    mask = np.ascontiguousarray(mask)
    mask_kv = None if mask_kv is None else np.ascontiguousarray(mask_kv)
    cu_q = np.full(4, -1, np.int32)
    cu_kv = np.full(4, -1, np.int32)
    core.mask_to_cu_seqlens(mask, cu_q, cu_kv, mask_kv=mask_kv)
    want_q, want_kv = ref.mask_to_cu_seqlens(mask, mask_kv)
    np.testing.assert_array_equal(cu_q, want_q)
    np.testing.assert_array_equal(cu_kv, want_kv)


def test_mask_to_cu_seqlens_not_right_padding():
    mask = np.ascontiguousarray(ref.padding_mask(np.array([2, 4]), 4)[:, :, :, ::-1])  # left
    cu_q, cu_kv = np.zeros(3, np.int32), np.zeros(3, np.int32)
    with pytest.raises(ValueError, match='attn_mask_type="arbitrary"'):
        core.mask_to_cu_seqlens(mask, cu_q, cu_kv)
    valid = np.full(1, 7, np.int32)
    core.mask_to_cu_seqlens(mask, cu_q, cu_kv, valid=valid)  # verdict only, no exception
    assert valid[0] == 0
    core.mask_to_cu_seqlens(mask, cu_q, cu_kv, check=False)  # asked not to look
    with pytest.raises(ValueError, match='attn_mask_type="arbitrary"'):
        core.mask_to_cu_seqlens(mask, cu_q, cu_kv, check=True)
    with pytest.raises(ValueError, match="check=True"):
        core.mask_to_cu_seqlens(mask, cu_q, cu_kv, valid=valid, check=True)
    with pytest.raises(TypeError, match="check"):
        core.mask_to_cu_seqlens(mask, cu_q, cu_kv, check=1)


def test_attn_check():
    """The capability check without a call: "" or the core's reason; bad arguments raise."""
    q = np.zeros((2, 5, 4, 16))
    kv = np.zeros((2, 7, 2, 16))
    out = np.zeros_like(q)
    assert core.attn_check(q, kv, kv, out, backend="cpu", attn_mask_type="causal") == ""
    assert core.attn_check(q, kv, kv, out, backend="auto", backward=True, dropout=0.3) == ""
    assert "CUDA" in core.attn_check(q, kv, kv, out, backend="flash")
    assert "CUDA" in core.attn_check(q, kv, kv, out, backend="cudnn", backward=True)
    t = np.zeros((9, 4, 16))
    cu = np.array([0, 4, 9], np.int32)
    assert core.attn_check(t, t, t, t.copy(), qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                           backend="cpu", backward=True) == ""
    with pytest.raises(ValueError, match="head dim"):
        core.attn_check(q, np.zeros((2, 7, 2, 8)), kv, out, backend="cpu")
    with pytest.raises(ValueError, match="backend"):
        core.attn_check(q, kv, kv, out, backend="unfused")


@pytest.mark.parametrize("mask_type", ["no_mask", "causal", "padding_causal_bottom_right"])
def test_fused_attn_fwd_bwd(rng, mask_type):
    b, s_q, s_kv, h, h_kv, d = 2, 5, 7, 4, 2, 16  # default scale 1/sqrt(16) = 1/4
    q = rng.standard_normal((b, s_q, h, d))
    k = rng.standard_normal((b, s_kv, h_kv, d))
    v = rng.standard_normal((b, s_kv, h_kv, d))
    kw = {"attn_mask_type": mask_type}
    if mask_type.startswith("padding"):
        kw["cu_seqlens_q"] = ref.cu_seqlens(np.array([5, 3]))
        kw["cu_seqlens_kv"] = ref.cu_seqlens(np.array([4, 7]))
    out = _poisoned(q.shape)
    lse = _poisoned((b, h, s_q), np.float32)
    core.fused_attn_fwd(q, k, v, out, lse=lse, backend="cpu", **kw)
    want_out, want_lse = ref.attention_fwd(q, k, v, **kw)
    np.testing.assert_allclose(out, want_out, atol=1e-10, rtol=0)
    rows = np.isfinite(want_lse)
    np.testing.assert_allclose(lse[rows], want_lse[rows], atol=1e-5, rtol=0)

    d_out = rng.standard_normal(out.shape)
    d_q, d_k, d_v = _poisoned(q.shape), _poisoned(k.shape), _poisoned(v.shape)
    core.fused_attn_bwd(q, k, v, out, d_out, lse, d_q, d_k, d_v, backend="cpu", **kw)
    for got, want in zip((d_q, d_k, d_v), ref.attention_bwd(q, k, v, d_out, **kw)):
        np.testing.assert_allclose(got, want, atol=1e-8, rtol=0)


def test_strided_views_sbhd():
    """sbhd inputs as transposed (non-contiguous) views of bshd arrays: strides come through
    DLPack in elements and give the same result as bshd."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 6, 2, 8)) for _ in range(3))
    out_bshd = np.zeros_like(q)
    core.fused_attn_fwd(q, k, v, out_bshd, attn_mask_type="causal", backend="cpu")
    out_sbhd = np.zeros((6, 2, 2, 8))
    core.fused_attn_fwd(q.transpose(1, 0, 2, 3), k.transpose(1, 0, 2, 3),
                        v.transpose(1, 0, 2, 3), out_sbhd, qkv_format="sbhd",
                        attn_mask_type="causal", backend="cpu")
    np.testing.assert_allclose(out_sbhd.transpose(1, 0, 2, 3), out_bshd, atol=1e-12)


def test_backends():
    info = core.backends()
    assert set(info) >= {"flash", "cudnn", "cpu"}
    assert info["cpu"] == {"available": True, "reason": ""}
    for name, e in info.items():
        assert isinstance(e["available"], bool) and isinstance(e["reason"], str)
        if not e["available"]:
            assert e["reason"], name


def test_errors():
    x = np.zeros((1, 1, 2, 3))
    with pytest.raises(ValueError, match="y"):
        core.softmax_fwd(x, np.zeros((1, 1, 2, 4)))  # shape mismatch names y
    with pytest.raises(ValueError):
        core.softmax_fwd(x, np.zeros_like(x), causal="sideways")
    with pytest.raises(TypeError, match="x"):
        core.softmax_fwd([1.0, 2.0], np.zeros_like(x))
    with pytest.raises(ValueError, match="unsupported dtype"):
        core.softmax_fwd(x.astype(np.complex64), np.zeros_like(x))
    q = np.zeros((1, 2, 1, 8))
    with pytest.raises(ValueError, match="arbitrary"):
        core.fused_attn_fwd(q, q, q, np.zeros_like(q), attn_mask_type="arbitrary")
    with pytest.raises(ValueError, match="qkv_format"):
        core.fused_attn_fwd(q, q, q, np.zeros_like(q), qkv_format="bhsd")
    with pytest.raises(ValueError):
        core.fused_attn_fwd(q, q, q, np.zeros_like(q), backend="flash")  # no GPU arrays here
