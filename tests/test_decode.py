"""decode_attn (SPEC §10) on the CPU against tests/reference.py: contiguous and paged caches
(shuffled page tables, page sizes 1..256), lengths 0, 1 and odd, s_q > 1, windows, GQA/MQA,
the in-place append (every other cache row bit-identical), lse, dtypes, and bad inputs with
clear errors. Through the Paddle op (dygraph) and through paddle_te_core (numpy).
"""

import numpy as np
import paddle
import pytest

import paddle_te
import reference as ref
from core_import import cpu_core


def make_case(rng, *, b=3, s_q=1, h=4, h_kv=2, d=16, d_v=None, lens=(0, 1, 7), page_size=None,
              s_max=None, append=True, dtype=np.float64, shuffle=True):
    """Random unit-scale inputs; a paged cache gets a shuffled page table with spare pages."""
    d_v = d if d_v is None else d_v
    lens = np.asarray(lens, dtype=np.int32)
    need = int(lens.max()) + (s_q if append else 0)
    case = {"q": rng.standard_normal((b, s_q, h, d)).astype(dtype),
            "cache_seqlens": lens}
    if page_size is None:
        s_max = s_max or need + 3
        case["k_cache"] = rng.standard_normal((b, s_max, h_kv, d)).astype(dtype)
        case["v_cache"] = rng.standard_normal((b, s_max, h_kv, d_v)).astype(dtype)
    else:
        pages_per_seq = max(1, -(-need // page_size)) + 1
        num_pages = b * pages_per_seq + 2
        perm = rng.permutation(num_pages) if shuffle else np.arange(num_pages)
        case["block_table"] = perm[: b * pages_per_seq].reshape(b, pages_per_seq).astype(np.int32)
        case["k_cache"] = rng.standard_normal((num_pages, page_size, h_kv, d)).astype(dtype)
        case["v_cache"] = rng.standard_normal((num_pages, page_size, h_kv, d_v)).astype(dtype)
    if append:
        case["k_new"] = rng.standard_normal((b, s_q, h_kv, d)).astype(dtype)
        case["v_new"] = rng.standard_normal((b, s_q, h_kv, d_v)).astype(dtype)
    return case


def reference(case, window_size=None, softmax_scale=None):
    return ref.decode_attn(case["q"], case["k_cache"], case["v_cache"], case["cache_seqlens"],
                           k_new=case.get("k_new"), v_new=case.get("v_new"),
                           block_table=case.get("block_table"), window_size=window_size,
                           softmax_scale=softmax_scale)


def run_paddle(case, dtype="float64", **kw):
    t = {k: paddle.to_tensor(v) for k, v in case.items()}
    for k in ("q", "k_cache", "v_cache", "k_new", "v_new"):
        if k in t:
            t[k] = t[k].astype(dtype)
    out, lse = paddle_te.ops.decode_attn(
        t["q"], t["k_cache"], t["v_cache"], t["cache_seqlens"], k_new=t.get("k_new"),
        v_new=t.get("v_new"), block_table=t.get("block_table"), return_softmax_lse=True, **kw)
    as64 = lambda x: x.astype("float64").numpy()  # noqa: E731
    return as64(out), lse.numpy(), as64(t["k_cache"]), as64(t["v_cache"])


CASES = [
    dict(),
    dict(lens=(0, 0, 0)),
    dict(s_q=3, lens=(0, 1, 5)),
    dict(append=False, lens=(1, 4, 9)),
    dict(append=False, s_q=2, lens=(0, 1, 6)),  # rows with no visible key
    dict(h=6, h_kv=1, lens=(3, 0, 11)),  # MQA
    dict(h=3, h_kv=3, d=8, d_v=24, lens=(2, 5, 1)),  # MHA, d_v != d
    dict(page_size=1, lens=(0, 3, 4)),
    dict(page_size=4, s_q=2, lens=(0, 3, 9)),
    dict(page_size=16, lens=(15, 16, 33)),
    dict(page_size=256, b=2, lens=(255, 3)),
    dict(page_size=5, append=False, lens=(7, 0, 1)),
]


@pytest.mark.parametrize("kw", CASES, ids=[str(i) for i in range(len(CASES))])
def test_decode_matches_reference(rng, kw):
    case = make_case(rng, **kw)
    out_r, lse_r, kc_r, vc_r = reference(case)
    out, lse, kc, vc = run_paddle(case)
    np.testing.assert_allclose(out, out_r, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lse, lse_r, rtol=1e-6, atol=1e-6)
    # The append writes exactly the new rows; every other row is bit-identical.
    np.testing.assert_array_equal(kc, kc_r)
    np.testing.assert_array_equal(vc, vc_r)


@pytest.mark.parametrize("window", [(0, 0), (1, 0), (4, 0), (30, 0)])
@pytest.mark.parametrize("page_size", [None, 3])
def test_decode_window(rng, window, page_size):
    case = make_case(rng, s_q=3, lens=(0, 2, 13), page_size=page_size)
    out_r, lse_r, _, _ = reference(case, window_size=window)
    out, lse, _, _ = run_paddle(case, window_size=window)
    np.testing.assert_allclose(out, out_r, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lse, lse_r, rtol=1e-6, atol=1e-6)


def test_decode_rows_without_keys_are_zero(rng):
    case = make_case(rng, append=False, s_q=4, lens=(0, 2, 1))
    out, lse, _, _ = run_paddle(case)
    assert np.all(out[0] == 0) and np.all(np.isneginf(lse[0]))
    # Sequence 1 has 2 keys for 4 query rows: rows 0 and 1 see nothing (j <= n - s_q + i < 0).
    assert np.all(out[1, :2] == 0) and np.all(np.isneginf(lse[1, :, :2]))
    assert np.all(np.isfinite(lse[1, :, 2:]))


def test_decode_scale_and_splits_hint(rng):
    case = make_case(rng, lens=(4, 9, 2))
    out_r, _, _, _ = reference(case, softmax_scale=0.3)
    out, _, _, _ = run_paddle(case, softmax_scale=0.3, num_splits=3)
    np.testing.assert_allclose(out, out_r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype,floor", [("float32", 1e-5), ("float16", 2e-3), ("bfloat16", 1.6e-2)])
def test_decode_low_precision(rng, dtype, floor):
    case = make_case(rng, s_q=2, lens=(3, 8, 0), page_size=4)
    np_dt = {"float32": np.float32, "float16": np.float16}.get(dtype)
    if np_dt is not None:
        case = {k: (v.astype(np_dt).astype(np.float64) if v.dtype == np.float64 else v)
                for k, v in case.items()}
    out, lse, kc, vc = run_paddle(case, dtype=dtype)
    # The reference on the inputs as stored in `dtype`.
    stored = {k: (paddle.to_tensor(v).astype(dtype).astype("float64").numpy()
                  if v.dtype == np.float64 else v) for k, v in case.items()}
    out_r, lse_r, kc_r, vc_r = reference(stored)
    np.testing.assert_array_equal(kc, kc_r)
    np.testing.assert_array_equal(vc, vc_r)
    # Unit-scale values: the only error is the output rounding (accumulation is in float64).
    assert ref.max_abs_err(out, out_r) <= floor
    np.testing.assert_allclose(lse, lse_r, rtol=1e-6, atol=1e-6)


def test_decode_steps_append_in_place(rng):
    """Several decoding steps on one preallocated cache equal attention over the whole prefix."""
    b, h, h_kv, d, steps = 2, 4, 2, 8, 5
    kc = paddle.zeros([b, steps + 2, h_kv, d], dtype="float64")
    vc = paddle.zeros([b, steps + 2, h_kv, d], dtype="float64")
    ks = rng.standard_normal((b, steps, h_kv, d))
    vs = rng.standard_normal((b, steps, h_kv, d))
    qs = rng.standard_normal((b, steps, h, d))
    lens = paddle.to_tensor([0, 0], dtype="int32")
    for t in range(steps):
        out = paddle_te.ops.decode_attn(
            paddle.to_tensor(qs[:, t:t + 1]), kc, vc, lens,
            k_new=paddle.to_tensor(ks[:, t:t + 1]), v_new=paddle.to_tensor(vs[:, t:t + 1]))
        lens = lens + 1
        full, _ = ref.attention_fwd(qs[:, t:t + 1], ks[:, :t + 1], vs[:, :t + 1])
        np.testing.assert_allclose(out.numpy(), full, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(kc.numpy()[:, :steps], ks)
    assert np.all(kc.numpy()[:, steps:] == 0)


def test_decode_no_grad_graph(rng):
    case = make_case(rng)
    q = paddle.to_tensor(case["q"], stop_gradient=False)
    out = paddle_te.ops.decode_attn(q, paddle.to_tensor(case["k_cache"]),
                                    paddle.to_tensor(case["v_cache"]),
                                    paddle.to_tensor(case["cache_seqlens"]))
    assert out.stop_gradient


# ---- bad input ------------------------------------------------------------------------------


def _tensors(case):
    return {k: paddle.to_tensor(v) for k, v in case.items()}


def _call(t, **kw):
    args = dict(k_new=t.get("k_new"), v_new=t.get("v_new"), block_table=t.get("block_table"))
    args.update(kw)
    return paddle_te.ops.decode_attn(t["q"], t["k_cache"], t["v_cache"], t["cache_seqlens"], **args)


def test_bad_cache_overflow(rng):
    t = _tensors(make_case(rng, lens=(0, 1, 7), s_max=8))
    with pytest.raises(ValueError, match=r"cache_seqlens\[2\]=8 \+ s_q=1: cache overflow"):
        paddle_te.ops.decode_attn(
            t["q"], t["k_cache"], t["v_cache"], paddle.to_tensor([0, 1, 8], dtype="int32"),
            k_new=t["k_new"], v_new=t["v_new"])
    with pytest.raises(ValueError, match=r"cache_seqlens\[0\]=-1: must be >= 0"):
        paddle_te.ops.decode_attn(t["q"], t["k_cache"], t["v_cache"],
                                  paddle.to_tensor([-1, 1, 2], dtype="int32"))


def test_bad_page_index(rng):
    case = make_case(rng, page_size=4, lens=(0, 5, 2))
    case["block_table"][1, 1] = case["k_cache"].shape[0]
    kc_before = case["k_cache"].copy()
    t = _tensors(case)
    with pytest.raises(ValueError, match=r"block_table\[1, 1\]=\d+: page index out of range"):
        _call(t)
    # Nothing was written: the check runs before the append.
    np.testing.assert_array_equal(t["k_cache"].numpy(), kc_before)


def test_bad_page_overflow(rng):
    case = make_case(rng, page_size=4, lens=(0, 5, 2))
    pages = case["block_table"].shape[1]
    t = _tensors(case)
    with pytest.raises(ValueError, match=r"cache overflow.*pages_per_seq=%d x page_size=4" % pages):
        paddle_te.ops.decode_attn(t["q"], t["k_cache"], t["v_cache"],
                                  paddle.to_tensor([0, 4 * pages + 1, 0], dtype="int32"),
                                  block_table=t["block_table"])


@pytest.mark.parametrize(
    "change,err,pattern",
    [
        (lambda t: t.update(q=t["q"][0]), ValueError, r"q has shape .*expected rank 4"),
        (lambda t: t.update(q=t["q"].astype("int32")), TypeError, r"q has dtype int32"),
        (lambda t: t.update(k_cache=t["k_cache"].astype("float32")), TypeError,
         r"k_cache has dtype float32: must be q's dtype float64"),
        (lambda t: t.update(cache_seqlens=t["cache_seqlens"].astype("int64")), TypeError,
         r"cache_seqlens has dtype int64: must be int32"),
        (lambda t: t.update(cache_seqlens=t["cache_seqlens"][:2]), ValueError,
         r"cache_seqlens has shape \[2\]"),
        (lambda t: t.update(k_cache=t["k_cache"][:, :, :, :8]), ValueError,
         r"k_cache has head dim 8: must equal q's head dim 16"),
        (lambda t: t.update(k_cache=t["k_cache"][:2], v_cache=t["v_cache"][:2]), ValueError,
         r"k_cache has shape .*dim 0 must be q's batch 3"),
        (lambda t: t.pop("v_new"), ValueError, r"k_new given without v_new"),
        (lambda t: t.update(k_new=t["k_new"][:, :, :1]), ValueError, r"k_new has shape"),
        (lambda t: t.update(block_table=paddle.zeros([3, 2], dtype="int64")), TypeError,
         r"block_table has dtype int64: must be int32"),
    ],
)
def test_bad_arguments(rng, change, err, pattern):
    t = _tensors(make_case(rng))
    change(t)
    with pytest.raises(err, match=pattern):
        _call(t)


def test_bad_views_and_empty_queries(rng):
    """The in-place append needs the caller's own storage: a strided view of a cache would be
    copied on its way into the op and the append lost, so it is refused; s_q = 0 is refused with
    its reason."""
    t = _tensors(make_case(rng))
    buf_k = paddle.concat([t["k_cache"], t["k_cache"]], axis=1)
    view = buf_k[:, 1:]
    if view.is_contiguous():
        pytest.skip("this Paddle slices into copies")
    t.update(k_cache=view, v_cache=paddle.concat([t["v_cache"], t["v_cache"]], axis=1)[:, 1:])
    with pytest.raises(ValueError, match=r"k_cache is a non-contiguous view.*in-place append"):
        _call(t)
    t = _tensors(make_case(rng))
    t.update(q=t["q"][:, :0], k_new=t["k_new"][:, :0], v_new=t["v_new"][:, :0])
    with pytest.raises(ValueError, match=r"s_q = 0, decode_attn needs s_q >= 1"):
        _call(t)


@pytest.mark.parametrize(
    "kw,err,pattern",
    [
        (dict(num_splits=-1), ValueError, r"num_splits=-1"),
        (dict(num_splits=1.5), TypeError, r"num_splits=1.5"),
        (dict(softmax_scale=0.0), ValueError, r"softmax_scale=0.0"),
        (dict(window_size=(-2, 0)), ValueError, r"window_size"),
        (dict(backend="cudnn"), ValueError, r"backend='cudnn'"),
        (dict(backend="flash"), ValueError, r"backend='flash' cannot run this call"),
    ],
)
def test_bad_options(rng, kw, err, pattern):
    t = _tensors(make_case(rng))
    with pytest.raises(err, match=pattern):
        _call(t, **kw)


def test_right_window_warns_and_is_causal(rng):
    case = make_case(rng, lens=(2, 3, 4))
    out_r, _, _, _ = reference(case, window_size=(2, 0))
    with pytest.warns(UserWarning):
        out, _, _, _ = run_paddle(case, window_size=(2, 5))
    np.testing.assert_allclose(out, out_r, rtol=1e-10, atol=1e-10)


def test_bad_page_size(rng):
    t = _tensors(make_case(rng, page_size=4))
    big = paddle.zeros([2, 257, 2, 16], dtype="float64")
    with pytest.raises(ValueError, match=r"page_size 257 \(dim 1\): must be in \[1, 256\]"):
        paddle_te.ops.decode_attn(
            t["q"], big, big, t["cache_seqlens"], block_table=t["block_table"])


# ---- paddle_te_core (the pybind11 module over the C API) --------------------------------------


core = cpu_core()
needs_core = pytest.mark.skipif(core is None, reason="paddle_te_core is not built (make core)")


@needs_core
@pytest.mark.parametrize("kw", [dict(), dict(page_size=3, s_q=2), dict(append=False, h_kv=1)])
def test_core_decode_numpy(rng, kw):
    case = make_case(rng, **kw)
    out_r, lse_r, kc_r, vc_r = reference(case, window_size=(5, 0))
    kc, vc = case["k_cache"].copy(), case["v_cache"].copy()
    b, s_q, h, _ = case["q"].shape
    out = np.full((b, s_q, h, vc.shape[-1]), np.nan)
    lse = np.full((b, h, s_q), np.nan, dtype=np.float32)
    core.decode_attn(case["q"], kc, vc, case["cache_seqlens"], out, k_new=case.get("k_new"),
                     v_new=case.get("v_new"), block_table=case.get("block_table"), lse=lse,
                     window_size=(5, 0))
    np.testing.assert_allclose(out, out_r, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lse, lse_r, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(kc, kc_r)
    np.testing.assert_array_equal(vc, vc_r)


@needs_core
def test_core_decode_errors(rng):
    case = make_case(rng, page_size=4)
    b, s_q, h, d = case["q"].shape
    out = np.zeros((b, s_q, h, d))
    bt = case["block_table"].copy()
    bt[0, 0] = -3
    with pytest.raises(ValueError, match=r"block_table\[0, 0\]=-3: page index out of range"):
        core.decode_attn(case["q"], case["k_cache"], case["v_cache"], case["cache_seqlens"], out,
                         k_new=case["k_new"], v_new=case["v_new"], block_table=bt)
    with pytest.raises(ValueError, match=r"out has shape"):
        core.decode_attn(case["q"], case["k_cache"], case["v_cache"], case["cache_seqlens"],
                         out[:, :, :1], block_table=case["block_table"])
    with pytest.raises(ValueError, match=r"lse has dtype float64: must be float32"):
        core.decode_attn(case["q"], case["k_cache"], case["v_cache"], case["cache_seqlens"], out,
                         block_table=case["block_table"], lse=np.zeros((b, h, s_q)))
    with pytest.raises(ValueError, match=r"backend=flash: the CUDA decode kernels need CUDA"):
        core.decode_attn(case["q"], case["k_cache"], case["v_cache"], case["cache_seqlens"], out,
                         block_table=case["block_table"], backend="flash")


@needs_core
def test_core_decode_strided_views(rng):
    """Strided views (heads of a wider buffer, a batch-strided q): read and appended in place
    through their strides; the rest of the buffer is untouched."""
    b, s_q, h, h_kv, d, s_max = 2, 2, 4, 2, 8, 9
    big_k = rng.standard_normal((b, s_max, h_kv + 3, d))
    big_v = rng.standard_normal((b, s_max, h_kv + 3, d))
    big_q = rng.standard_normal((b, 5, h, d))
    before_k, before_v = big_k.copy(), big_v.copy()
    kc, vc, q = big_k[:, :, 1:1 + h_kv], big_v[:, :, 1:1 + h_kv], big_q[:, 1:1 + s_q]
    assert not kc.flags.c_contiguous and not q.flags.c_contiguous
    kn = rng.standard_normal((b, s_q, h_kv, d))
    vn = rng.standard_normal((b, s_q, h_kv, d))
    lens = np.array([3, 6], dtype=np.int32)
    out_r, lse_r, kc_r, vc_r = ref.decode_attn(q.copy(), kc.copy(), vc.copy(), lens, k_new=kn,
                                               v_new=vn)
    out = np.full((b, s_q, h, d), np.nan)
    core.decode_attn(q, kc, vc, lens, out, k_new=kn, v_new=vn)
    np.testing.assert_allclose(out, out_r, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(big_k[:, :, 1:1 + h_kv], kc_r)
    np.testing.assert_array_equal(big_v[:, :, 1:1 + h_kv], vc_r)
    for lo, hi in ((0, 1), (1 + h_kv, h_kv + 3)):
        np.testing.assert_array_equal(big_k[:, :, lo:hi], before_k[:, :, lo:hi])
        np.testing.assert_array_equal(big_v[:, :, lo:hi], before_v[:, :, lo:hi])


def test_zero_size_inputs():
    """A batch of 0 gives empty results; a cache without positions (s_max = 0, or no pages) holds
    no key: every row gives 0 and lse -inf, and it takes no append (a custom op cannot receive
    the empty tensors, so decode_attn answers these itself)."""
    d = 8
    z = lambda *s: paddle.zeros(list(s), dtype="float64")  # noqa: E731
    lens = lambda *v: paddle.to_tensor(list(v), dtype="int32")  # noqa: E731
    out, lse = paddle_te.ops.decode_attn(z(0, 2, 4, d), z(0, 5, 2, d), z(0, 5, 2, d),
                                         paddle.zeros([0], dtype="int32"), return_softmax_lse=True)
    assert out.shape == [0, 2, 4, d] and lse.shape == [0, 4, 2]
    q = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 1, 4, d)))
    for kc, extra in ((z(2, 0, 2, d), {}),
                      (z(0, 4, 2, d), dict(block_table=paddle.zeros([2, 3], dtype="int32")))):
        out, lse = paddle_te.ops.decode_attn(q, kc, kc, lens(0, 0), return_softmax_lse=True,
                                             **extra)
        assert out.shape == [2, 1, 4, d] and np.all(out.numpy() == 0)
        assert lse.dtype == paddle.float32 and np.all(lse.numpy() == -np.inf)
    with pytest.raises(ValueError, match="cache overflow"):
        paddle_te.ops.decode_attn(q, z(2, 0, 2, d), z(2, 0, 2, d), lens(0, 1))
    with pytest.raises(ValueError, match="cannot append s_q=1"):
        paddle_te.ops.decode_attn(q, z(2, 0, 2, d), z(2, 0, 2, d), lens(0, 0), k_new=z(2, 1, 2, d),
                                  v_new=z(2, 1, 2, d))
