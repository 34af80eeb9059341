"""paddle_te.ops.fused_attn (SPEC §3) against the float64 oracle in tests/reference.py.

Grid: layouts bshd/sbhd/thd x the six core mask types x float32/float64 x four shape sets that
together cover s_q != s_kv, sequence lengths 0, 1, 17 and 129, GQA 4:1, MQA, d_v != d, windows
with both alignments and max_seqlen given or derived. Each case checks the forward, lse and all
three gradients (random upstream gradient), exact zeros where SPEC §2 says 0, and finiteness.

Tolerances (STYLE habit 2): float64 kernels within 1e-10 of the reference; float32 kernels within
FlashAttention's rule, 2x the error of the same reference computed in float32 plus a floor of
1e-5 (relative to the largest magnitude, at least 1) for accumulation order; lse (always float32)
within 1e-6 relative + 1e-5 absolute.
"""

import dataclasses
import warnings

import numpy as np
import paddle
import pytest

import paddle_te
import reference as R

paddle.set_device("cpu")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _t(x, dtype=None, grad=False):
    t = paddle.to_tensor(np.ascontiguousarray(x if dtype is None else x.astype(dtype)))
    t.stop_gradient = not grad
    return t


def _cu(x):
    return None if x is None else paddle.to_tensor(np.asarray(x, dtype=np.int32))


def run_op(q, k, v, d_out, *, dtype, cu_seqlens_q=None, cu_seqlens_kv=None, **kw):
    """fused_attn forward (with lse) and its gradients for upstream d_out, as numpy arrays."""
    qt, kt, vt = (_t(x, dtype, grad=True) for x in (q, k, v))
    out, lse = paddle_te.ops.fused_attn(qt, kt, vt, cu_seqlens_q=_cu(cu_seqlens_q),
                                        cu_seqlens_kv=_cu(cu_seqlens_kv),
                                        return_softmax_lse=True, **kw)
    grads = paddle.grad([out], [qt, kt, vt], grad_outputs=[_t(d_out, dtype)])
    return out.numpy(), lse.numpy(), [g.numpy() for g in grads]


def assert_matches(actual, ref64, naive, dtype, name):
    assert actual.shape == ref64.shape, f"{name}: shape {actual.shape} != {ref64.shape}"
    assert actual.dtype == np.dtype(dtype), f"{name}: dtype {actual.dtype} != {dtype}"
    assert np.all(np.isfinite(actual)), f"{name}: non-finite values"
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(actual, ref64, rtol=1e-10, atol=1e-10, err_msg=name)
    else:
        R.assert_attention_close(actual, ref64, naive, "float32", name=name)


def rows_to_layout(lse, fmt):
    """[b, h, s] (thd: [h, t]) -> the (token, head) axes of q's layout."""
    if fmt == "bshd":
        return lse.transpose(0, 2, 1)
    if fmt == "sbhd":
        return lse.transpose(2, 0, 1)
    return lse.T


def assert_lse(lse, ref_lse, valid, name="lse"):
    """lse float32; -inf exactly where a valid row sees nothing; unspecified at padded rows."""
    assert lse.dtype == np.float32, f"{name}: dtype {lse.dtype}, want float32"
    assert lse.shape == ref_lse.shape, f"{name}: shape {lse.shape} != {ref_lse.shape}"
    empty = valid & np.isneginf(ref_lse)
    assert np.all(np.isneginf(lse[empty])), f"{name}: rows that see no key must be -inf"
    live = valid & np.isfinite(ref_lse)
    np.testing.assert_allclose(lse[live], ref_lse[live], rtol=1e-6, atol=1e-5, err_msg=name)


def lse_valid(fmt, ref_lse, q_shape, cu_q):
    """bool like lse: True at rows inside a sequence."""
    rows = R.valid_rows(fmt, q_shape, cu_q)  # bshd [b, s], sbhd [s, b], thd [t]
    if fmt == "thd":
        return np.broadcast_to(rows[None, :], ref_lse.shape)
    rows = rows if fmt == "bshd" else rows.T
    return np.broadcast_to(rows[:, None, :], ref_lse.shape)


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Shape:
    b: int
    s_q: int
    s_kv: int
    h: int
    h_kv: int
    d: int
    d_v: int
    lens_q: list  # actual lengths for padding types and thd
    lens_kv: list
    window: tuple  # for non-causal types
    causal_window: tuple  # for causal types (right side 0: no warning)
    give_max_seqlen: bool


SHAPES = {
    # s_q < s_kv, GQA 4:1, length 1 and a full 129, both-sided window.
    "gqa": Shape(2, 17, 129, 8, 2, 32, 32, [17, 1], [129, 17], (4, 9), (16, 0), True),
    # s_q > s_kv, MQA, d_v != d, empty sequences on either side.
    "mqa": Shape(3, 129, 17, 4, 1, 16, 8, [129, 0, 17], [17, 5, 0], (-1, 0), None, False),
    # s_q == s_kv, d = 64, one-sided windows, a query length 1.
    "d64": Shape(3, 17, 17, 2, 2, 64, 64, [1, 17, 9], [17, 1, 17], (0, -1), (3, 0), True),
    # a single query row against 33 keys, d_v > d.
    "row": Shape(2, 1, 33, 4, 4, 8, 24, [1, 1], [33, 0], None, None, False),
}

THD_EXTRA_TOKENS = 3  # tokens past cu_seqlens[-1]: must come back 0 with gradient 0


def make_case(rng, fmt, mask_type, sh):
    """Inputs (q, k, v, d_out) in fmt and the keyword arguments shared by the op and the oracle."""
    padded = R.has_padding(mask_type) or fmt == "thd"
    lens_q = sh.lens_q if padded else [sh.s_q] * sh.b
    lens_kv = sh.lens_kv if padded else [sh.s_kv] * sh.b
    kw = dict(qkv_format=fmt, attn_mask_type=mask_type,
              window_size=sh.causal_window if R.is_causal(mask_type) else sh.window)
    if padded:
        kw.update(cu_seqlens_q=R.cu_seqlens(lens_q), cu_seqlens_kv=R.cu_seqlens(lens_kv))
    if fmt == "thd":
        t_q, t_kv = sum(lens_q) + THD_EXTRA_TOKENS, sum(lens_kv) + THD_EXTRA_TOKENS
        shapes = [(t_q, sh.h, sh.d), (t_kv, sh.h_kv, sh.d), (t_kv, sh.h_kv, sh.d_v),
                  (t_q, sh.h, sh.d_v)]
        max_q, max_kv = max(lens_q), max(lens_kv)
    else:
        lead_q = (sh.b, sh.s_q) if fmt == "bshd" else (sh.s_q, sh.b)
        lead_kv = (sh.b, sh.s_kv) if fmt == "bshd" else (sh.s_kv, sh.b)
        shapes = [lead_q + (sh.h, sh.d), lead_kv + (sh.h_kv, sh.d), lead_kv + (sh.h_kv, sh.d_v),
                  lead_q + (sh.h, sh.d_v)]
        max_q, max_kv = sh.s_q, sh.s_kv
    op_kw = dict(kw)
    if sh.give_max_seqlen:
        op_kw.update(max_seqlen_q=max_q, max_seqlen_kv=max_kv)
    q, k, v, d_out = (rng.standard_normal(s) for s in shapes)
    return (q, k, v, d_out), kw, op_kw


def check_case(inputs, kw, op_kw, dtype, **run_kw):
    q, k, v, d_out = (x.astype(dtype) for x in inputs)  # the oracle sees the rounded inputs
    fmt = kw.get("qkv_format", "bshd")
    out, lse, grads = run_op(q, k, v, d_out, dtype=dtype, **op_kw, **run_kw)
    ref_out, ref_lse = R.attention_fwd(q, k, v, **kw)
    ref_grads = R.attention_bwd(q, k, v, d_out, **kw)
    naive_out = naive_grads = None
    if np.dtype(dtype) != np.float64:
        naive_out, _ = R.attention_fwd(q, k, v, compute_dtype=dtype, **kw)
        naive_grads = R.attention_bwd(q, k, v, d_out, compute_dtype=dtype, **kw)
    assert_matches(out, ref_out, naive_out, dtype, "out")
    for name, g, rg, ng in zip(("dq", "dk", "dv"), grads, ref_grads,
                               naive_grads or (None,) * 3):
        assert_matches(g, rg, ng, dtype, name)
    cu_q, cu_kv = kw.get("cu_seqlens_q"), kw.get("cu_seqlens_kv")
    assert_lse(lse, ref_lse, lse_valid(fmt, ref_lse, q.shape, cu_q))
    # Exact zeros (SPEC §2): padded query rows and rows that see no key give out 0 and dq 0;
    # padded key rows give dk = dv = 0. The oracle's lse is -inf at exactly those query rows.
    dead_q = np.isneginf(rows_to_layout(ref_lse, fmt))
    assert np.all(out[dead_q] == 0), "out must be exactly 0 at padded / no-visible-key rows"
    assert np.all(grads[0][dead_q] == 0), "dq must be exactly 0 at padded / no-visible-key rows"
    dead_kv = ~R.valid_rows(fmt, k.shape, cu_kv)
    assert np.all(grads[1][dead_kv] == 0), "dk must be exactly 0 at padded keys"
    assert np.all(grads[2][dead_kv] == 0), "dv must be exactly 0 at padded keys"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mask_type", R.CORE_MASK_TYPES)
@pytest.mark.parametrize("fmt", R.LAYOUTS)
def test_fused_attn_grid(rng, fmt, mask_type, shape, dtype):
    inputs, kw, op_kw = make_case(rng, fmt, mask_type, SHAPES[shape])
    check_case(inputs, kw, op_kw, dtype)


@pytest.mark.parametrize("backend", ["cpu", "unfused"])
@pytest.mark.parametrize("fmt,mask_type,shape", [
    ("bshd", "no_mask", "gqa"),
    ("bshd", "causal_bottom_right", "gqa"),
    ("sbhd", "padding_causal", "mqa"),
    ("bshd", "padding_causal_bottom_right", "d64"),
    ("thd", "padding", "gqa"),
    ("thd", "causal_bottom_right", "mqa"),
])
def test_explicit_backends(rng, backend, fmt, mask_type, shape):
    inputs, kw, op_kw = make_case(rng, fmt, mask_type, SHAPES[shape])
    if backend == "unfused" and fmt == "thd":
        # A backend that cannot run a call says why (SPEC §3); unfused has no packed layout.
        with pytest.raises(ValueError, match="thd"):
            check_case(inputs, kw, op_kw, np.float32, backend=backend)
        return
    check_case(inputs, kw, op_kw, np.float64, backend=backend)
    check_case(inputs, kw, op_kw, np.float32, backend=backend)


def test_softmax_scale_and_default(rng):
    q, k, v, do = (rng.standard_normal(s) for s in [(2, 5, 2, 16), (2, 7, 2, 16), (2, 7, 2, 16),
                                                    (2, 5, 2, 16)])
    check_case((q, k, v, do), dict(softmax_scale=0.37), dict(softmax_scale=0.37), np.float64)
    out_default, _, _ = run_op(q, k, v, do, dtype=np.float64)
    out_explicit, _, _ = run_op(q, k, v, do, dtype=np.float64, softmax_scale=0.25)
    np.testing.assert_array_equal(out_default, out_explicit)


def test_lse_not_requested_then_backward(rng):
    """return_softmax_lse=True, with gradient flowing through out only (lse gets none)."""
    q, k, v, do = (rng.standard_normal(s) for s in [(1, 9, 2, 8)] * 4)
    qt, kt, vt = (_t(x, np.float64, grad=True) for x in (q, k, v))
    out, lse = paddle_te.ops.fused_attn(qt, kt, vt, attn_mask_type="causal",
                                        return_softmax_lse=True)
    (out * _t(do)).sum().backward()
    ref = R.attention_bwd(q, k, v, do, attn_mask_type="causal")
    for t, r in zip((qt, kt, vt), ref):
        np.testing.assert_allclose(t.grad.numpy(), r, rtol=1e-10, atol=1e-10)
    out2 = paddle_te.ops.fused_attn(qt, kt, vt, attn_mask_type="causal")
    assert not isinstance(out2, (tuple, list))
    np.testing.assert_array_equal(out2.numpy(), out.numpy())


def test_thd_all_sequences_empty(rng):
    """Every sequence empty: every token lies past cu_seqlens[-1] and must be 0."""
    q, k, v, do = (rng.standard_normal((4, 2, 8)) for _ in range(4))
    kw = dict(qkv_format="thd", attn_mask_type="padding", cu_seqlens_q=[0, 0, 0],
              cu_seqlens_kv=[0, 0, 0])
    out, _, grads = run_op(q, k, v, do, dtype=np.float32, **kw)
    assert np.all(out == 0) and all(np.all(g == 0) for g in grads)


# --------------------------------------------------------------------------------------------
# Zero-size inputs: Paddle hands a custom op an empty tensor as if it were absent, so fused_attn
# answers these calls itself. SPEC §2: a row that sees no key gives 0, lse -inf, gradient 0.
# --------------------------------------------------------------------------------------------

# id -> (qkv_format, q shape, k shape, v shape, extra keywords)
ZERO_SIZE = {
    "no_keys": ("bshd", (2, 3, 4, 8), (2, 0, 2, 8), (2, 0, 2, 6), dict(attn_mask_type="causal")),
    "no_keys_sbhd": ("sbhd", (3, 2, 2, 8), (0, 2, 2, 8), (0, 2, 2, 8), {}),
    "no_keys_padding": ("bshd", (2, 3, 2, 8), (2, 0, 2, 8), (2, 0, 2, 8),
                        dict(attn_mask_type="padding_causal", cu_seqlens_q=[0, 1, 3],
                             cu_seqlens_kv=[0, 0, 0])),
    "no_queries": ("bshd", (2, 0, 2, 8), (2, 5, 2, 8), (2, 5, 2, 8), {}),
    "empty_batch": ("bshd", (0, 3, 2, 8), (0, 4, 1, 8), (0, 4, 1, 8), {}),
    "empty_batch_padding": ("sbhd", (3, 0, 2, 8), (4, 0, 2, 8), (4, 0, 2, 8),
                            dict(attn_mask_type="padding", cu_seqlens_q=[0], cu_seqlens_kv=[0])),
    "no_heads": ("bshd", (2, 3, 0, 8), (2, 4, 0, 8), (2, 4, 0, 8), {}),
    "thd_no_keys": ("thd", (3, 2, 8), (0, 1, 8), (0, 1, 4),
                    dict(cu_seqlens_q=[0, 1, 3], cu_seqlens_kv=[0, 0, 0])),
    "thd_no_sequences": ("thd", (3, 2, 8), (5, 2, 8), (5, 2, 8),
                         dict(cu_seqlens_q=[0], cu_seqlens_kv=[0])),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend", ["auto", "cpu", "unfused"])
@pytest.mark.parametrize("case", list(ZERO_SIZE))
def test_zero_size_inputs(rng, case, backend, dtype):
    fmt, q_shape, k_shape, v_shape, kw = ZERO_SIZE[case]
    if backend == "unfused" and fmt == "thd":
        pytest.skip("unfused takes no thd (tested above)")
    kw = dict(kw, qkv_format=fmt)
    q, k, v = (rng.standard_normal(sh).astype(dtype) for sh in (q_shape, k_shape, v_shape))
    d_out = rng.standard_normal(q_shape[:-1] + v_shape[-1:]).astype(dtype)
    out, lse, grads = run_op(q, k, v, d_out, dtype=dtype, backend=backend, **kw)
    want = [np.zeros(sh, dtype) for sh in (d_out.shape, q_shape, k_shape, v_shape)]
    lse_shape = (q_shape[1], q_shape[0]) if fmt == "thd" else (
        (q_shape[0], q_shape[2], q_shape[1]) if fmt == "bshd" else (q_shape[1], q_shape[2], q_shape[0]))
    if k_shape[-2] > 0:  # the oracle needs kv heads to group the query heads by
        ref_out, ref_lse = R.attention_fwd(q, k, v, **kw)
        want = [ref_out] + list(R.attention_bwd(q, k, v, d_out, **kw))
        assert ref_lse.shape == lse_shape and np.all(np.isneginf(ref_lse))
    for name, got, w in zip(("out", "dq", "dk", "dv"), [out] + grads, want):
        assert got.shape == w.shape and got.dtype == np.dtype(dtype), f"{name}: {got.shape} {got.dtype}"
        np.testing.assert_array_equal(got, w, err_msg=name)  # all exactly 0 (or empty)
    assert lse.dtype == np.float32 and lse.shape == lse_shape, (lse.dtype, lse.shape)
    assert np.all(np.isneginf(lse)), "a row that sees no key has lse -inf"


def test_zero_size_gradient_never_nan(rng):
    """No keys: the gradient of q is exactly 0 whatever q and the upstream gradient hold (no
    0 * inf), in float16 too (computed in float32 on the CPU, returned in q's dtype)."""
    for dtype in ("float32", "float16"):
        q = paddle.to_tensor(np.full((1, 3, 2, 8), np.inf, np.float32)).astype(dtype)
        k = paddle.zeros([1, 0, 2, 8], dtype=dtype)
        q.stop_gradient = k.stop_gradient = False
        out, lse = paddle_te.ops.fused_attn(q, k, k, return_softmax_lse=True)
        assert out.dtype == q.dtype and list(out.shape) == [1, 3, 2, 8]
        assert np.all(out.astype("float32").numpy() == 0) and np.all(np.isneginf(lse.numpy()))
        d_out = paddle.full([1, 3, 2, 8], np.nan, dtype="float32").astype(dtype)
        dq, dk = paddle.grad([out], [q, k], grad_outputs=[d_out])
        assert np.all(dq.astype("float32").numpy() == 0) and list(dk.shape) == [1, 0, 2, 8]


def test_zero_size_under_no_grad_builds_no_graph():
    q = _t(np.ones((1, 3, 2, 8), np.float32), grad=True)
    k = _t(np.ones((1, 0, 2, 8), np.float32), grad=True)
    with paddle.no_grad():
        out = paddle_te.ops.fused_attn(q, k, k)
    assert out.stop_gradient


def test_zero_size_static_mode():
    """No keys, the zero known while the program is built (q's batch dim is not): the same
    zeros, -inf and zero gradients as in dygraph. A window past the int32 range builds too."""
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            q = paddle.static.data("q", [-1, 3, 2, 8], "float32")
            k = paddle.static.data("k", [2, 0, 2, 8], "float32")
            q.stop_gradient = k.stop_gradient = False
            out, lse = paddle_te.ops.fused_attn(q, k, k, return_softmax_lse=True,
                                                window_size=(2**31, 0))
            dq, dk = paddle.static.gradients([out], [q, k])
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        feed = {"q": np.ones((2, 3, 2, 8), np.float32), "k": np.zeros((2, 0, 2, 8), np.float32)}
        out, lse, dq, dk = exe.run(main, feed=feed, fetch_list=[out, lse, dq, dk])
    finally:
        paddle.disable_static()
    assert out.shape == (2, 3, 2, 8) and np.all(out == 0)
    assert lse.shape == (2, 2, 3) and np.all(np.isneginf(lse))
    assert dq.shape == (2, 3, 2, 8) and np.all(dq == 0) and dk.shape == (2, 0, 2, 8)


def test_deterministic_backward_is_bitwise_repeatable(rng):
    inputs, kw, op_kw = make_case(rng, "bshd", "padding_causal", SHAPES["gqa"])
    q, k, v, do = (x.astype(np.float32) for x in inputs)
    a = run_op(q, k, v, do, dtype=np.float32, deterministic=True, **op_kw)
    b = run_op(q, k, v, do, dtype=np.float32, deterministic=True, **op_kw)
    for x, y in zip(a[2], b[2]):
        np.testing.assert_array_equal(x, y)


def test_no_grad_builds_no_graph(rng):
    q = _t(rng.standard_normal((1, 4, 2, 8)), np.float32, grad=True)
    with paddle.no_grad():
        out = paddle_te.ops.fused_attn(q, q, q)
    assert out.stop_gradient


# --------------------------------------------------------------------------------------------
# Bad input this suite's grid relies on being rejected (the rest of §7 is tested elsewhere)
# --------------------------------------------------------------------------------------------


def test_mask_type_and_cu_seqlens_must_agree(rng):
    x = _t(rng.standard_normal((2, 4, 2, 8)), np.float32)
    with pytest.raises(ValueError, match="cu_seqlens"):
        paddle_te.ops.fused_attn(x, x, x, attn_mask_type="padding")
    with pytest.raises(ValueError, match="cu_seqlens"):
        paddle_te.ops.fused_attn(x, x, x, attn_mask_type="no_mask", cu_seqlens_q=_cu([0, 3, 4]),
                                 cu_seqlens_kv=_cu([0, 3, 4]))


@pytest.mark.parametrize("backend", ["flash", "cudnn"])
def test_gpu_backends_refuse_cpu_tensors(rng, backend):
    x = _t(rng.standard_normal((1, 4, 2, 8)), np.float32)
    with pytest.raises(ValueError, match=backend):
        paddle_te.ops.fused_attn(x, x, x, backend=backend)


def test_causal_window_with_right_side_warns(rng):
    x = rng.standard_normal((1, 6, 2, 8))
    with pytest.warns(UserWarning):
        out_w = paddle_te.ops.fused_attn(_t(x), _t(x), _t(x), attn_mask_type="causal",
                                         window_size=(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = paddle_te.ops.fused_attn(_t(x), _t(x), _t(x), attn_mask_type="causal",
                                       window_size=(2, 0))
    np.testing.assert_array_equal(out_w.numpy(), out.numpy())


@pytest.mark.parametrize("backend", ["auto", "cpu", "unfused"])
@pytest.mark.parametrize("mask_type,window,unbounded", [
    ("no_mask", (2**31, 0), (-1, 0)),
    ("no_mask", (3, 2**31 - 1), (3, -1)),
    ("padding", (2**40, 2**32), (-1, -1)),
    ("causal_bottom_right", (2**31, 0), (-1, 0)),
])
def test_window_past_int32_is_unbounded(rng, backend, mask_type, window, unbounded):
    """SPEC §2 keeps any side >= -1; one >= 2^31 - 1 excludes no key (lengths are < 2^31), so
    the result is the unbounded side's, bit for bit (the op attributes are 32-bit)."""
    sh = SHAPES["gqa"]
    inputs, kw, op_kw = make_case(rng, "bshd", mask_type, sh)
    kw["window_size"] = op_kw["window_size"] = window
    check_case(inputs, kw, op_kw, np.float64, backend=backend)
    q, k, v, d_out = inputs
    got = run_op(q, k, v, d_out, dtype=np.float64, backend=backend, **op_kw)
    want = run_op(q, k, v, d_out, dtype=np.float64, backend=backend,
                  **dict(op_kw, window_size=unbounded))
    for a, b in zip([got[0], got[1]] + got[2], [want[0], want[1]] + want[2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mask_type", ["no_mask", "causal", "arbitrary"])
def test_layer_window_past_int32(rng, mask_type):
    """DotProductAttention keeps the window it was given (check_set_window_size) and runs it as
    the unbounded one, on the fused path and on the unfused path of arbitrary masks."""
    q = _t(rng.standard_normal((2, 5, 2, 8)), np.float32)
    kv = _t(rng.standard_normal((2, 7, 2, 8)), np.float32)
    mask = (_t(rng.random((2, 1, 5, 7)) < 0.3),) if mask_type == "arbitrary" else ()
    big = paddle_te.nn.DotProductAttention(2, 8, attn_mask_type=mask_type, window_size=(2**32, 0))
    ref = paddle_te.nn.DotProductAttention(2, 8, attn_mask_type=mask_type, window_size=(-1, 0))
    assert tuple(big.window_size) == (2**32, 0)
    np.testing.assert_array_equal(big(q, kv, kv, *mask).numpy(), ref(q, kv, kv, *mask).numpy())


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------

DROP_P = 0.3


def recover_keep_mask(b, h, s_q, s_kv, p, dtype=np.float32, **kw):
    """Run the op on inputs that expose its dropout mask: q = 0 makes every visible key equally
    likely (P = 1/s_kv), and v[j] = e_j (d_v = s_kv) puts key j's weight in output column j,
    so out[b, i, h, j] = keep[b, h, i, j] / ((1 - p) * s_kv). Returns keep [b, h, s_q, s_kv]."""
    q = np.zeros((b, s_q, h, 8), dtype=dtype)
    k = np.ones((b, s_kv, h, 8), dtype=dtype)
    v = np.broadcast_to(np.eye(s_kv, dtype=dtype)[None, :, None, :], (b, s_kv, h, s_kv))
    out = paddle_te.ops.fused_attn(_t(q), _t(k), _t(v), dropout=p, **kw).numpy()
    scaled = out.transpose(0, 2, 1, 3) * ((1 - p) * s_kv)
    keep = scaled > 0.5
    np.testing.assert_allclose(scaled[keep], 1.0, rtol=1e-5)  # kept weights are 1/(1-p) exactly
    assert np.all(scaled[~keep] == 0)
    return keep


def test_dropout_repeatable_under_paddle_seed():
    paddle.seed(1234)
    a = recover_keep_mask(2, 2, 16, 32, DROP_P)
    paddle.seed(1234)
    b = recover_keep_mask(2, 2, 16, 32, DROP_P)
    np.testing.assert_array_equal(a, b)
    paddle.seed(4321)
    c = recover_keep_mask(2, 2, 16, 32, DROP_P)
    assert not np.array_equal(a, c)


def test_dropout_fresh_between_calls():
    paddle.seed(7)
    masks = [recover_keep_mask(1, 2, 16, 32, DROP_P) for _ in range(3)]
    assert not np.array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[1], masks[2])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keep_rate(p):
    paddle.seed(99)
    keep = recover_keep_mask(2, 4, 128, 128, p)
    n = keep.size
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 6 * sigma, (keep.mean(), 1 - p)
    # No structure by head or by key column modulo 4 (the four Philox lanes).
    for lane in range(4):
        rate = keep[..., lane::4].mean()
        assert abs(rate - (1 - p)) < 6 * sigma * 2, (lane, rate)


def test_dropout_off_when_not_training(rng):
    q, k, v, do = (rng.standard_normal((2, 9, 2, 8)) for _ in range(4))
    out, _, grads = run_op(q, k, v, do, dtype=np.float64, dropout=0.5, training=False)
    np.testing.assert_allclose(out, R.attention_fwd(q, k, v)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt,mask_type", [("bshd", "causal_bottom_right"),
                                           ("thd", "padding_causal")])
def test_dropout_forward_and_backward_use_one_mask(rng, fmt, mask_type):
    """Recover the mask drawn after paddle.seed(n), then rerun with random inputs after the same
    seed: out and all gradients must match the oracle given that mask (SPEC §8: the backward uses
    the forward's mask; the mask is a function of (seed, offset, batch, head, query, key) only)."""
    sh = SHAPES["gqa"]
    inputs, kw, op_kw = make_case(rng, fmt, mask_type, sh)
    s_q = max(sh.lens_q) if fmt == "thd" else sh.s_q
    s_kv = max(sh.lens_kv) if fmt == "thd" else sh.s_kv
    paddle.seed(2024)
    keep = recover_keep_mask(sh.b, sh.h, s_q, s_kv, DROP_P)
    for dtype in (np.float64, np.float32):
        paddle.seed(2024)
        q, k, v, do = (x.astype(dtype) for x in inputs)
        out, _, grads = run_op(q, k, v, do, dtype=dtype, dropout=DROP_P, **op_kw)
        dkw = dict(kw, dropout_p=DROP_P, dropout_keep=keep)
        ref = (R.attention_fwd(q, k, v, **dkw)[0],) + R.attention_bwd(q, k, v, do, **dkw)
        naive = (None,) * 4
        if dtype == np.float32:
            naive = (R.attention_fwd(q, k, v, compute_dtype=dtype, **dkw)[0],) + \
                R.attention_bwd(q, k, v, do, compute_dtype=dtype, **dkw)
        for name, a, r, n in zip(("out", "dq", "dk", "dv"), [out] + grads, ref, naive):
            assert_matches(a, r, n, dtype, name)


def test_dropout_mask_is_the_documented_philox_mask():
    """Bit-for-bit: the kernel's mask equals attention.h's Philox rule for the (seed, offset) that
    fused_attn draws from Paddle's generator (ops._seed_offset, replayed after the same seed)."""
    b, h, s_q, s_kv = 2, 3, 16, 37  # s_kv not a multiple of 4: the last Philox group is partial
    paddle.seed(31337)
    seed, offset = (int(x) for x in paddle_te.ops._seed_offset(DROP_P, _t(np.zeros(1))).numpy())
    paddle.seed(31337)
    keep = recover_keep_mask(b, h, s_q, s_kv, DROP_P)
    np.testing.assert_array_equal(keep, R.dropout_keep_mask(seed, offset, DROP_P, b, h, s_q, s_kv))


def test_window_warning_points_at_the_caller():
    """The causal-window warning names the user's line, whether check_set_window_size is called
    directly or reached through fused_attn or a layer."""
    from paddle_te.nn import DotProductAttention, check_set_window_size

    q = paddle.randn([1, 4, 1, 8])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_set_window_size("causal", (2, 3))
        paddle_te.fused_attn(q, q, q, attn_mask_type="causal", window_size=(2, 3))
        DotProductAttention(1, 8, attn_mask_type="causal", window_size=(2, 3))
    assert len(caught) == 3
    assert all(w.filename == __file__ and issubclass(w.category, UserWarning) for w in caught)
