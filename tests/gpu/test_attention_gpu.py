"""Fused attention on the GPU through paddle_te_core, against tests/reference.py (float64).

Parametrized over every CUDA attention backend the module reports as available (`cudnn`, and
`flash` once its kernels are built), so each backend meets the same grid:
layouts bshd / sbhd / thd, every core mask type, windows with both alignments, GQA / MQA,
sequence lengths including 0 and 1, float16 / bfloat16, forward + lse + gradients.

Habits (STYLE 1-2): unit-scale random inputs drawn fresh for every case, outputs poisoned with
NaN before each call, FlashAttention's rule (error <= 2 x the error of the reference run in the
kernel's dtype + a floor), exact zeros at padded positions and rows that see no key.
"""

import zlib

import numpy as np
import pytest

import reference as R

torch = pytest.importorskip("torch")

ATTN_BACKENDS = ("cudnn", "flash")


def _available_backends():
    # tests/gpu/conftest.py has put the module's folder on sys.path (or skips this file).
    try:
        import paddle_te_core
    except ImportError:
        return []
    if not getattr(paddle_te_core, "with_cuda", False) or not torch.cuda.is_available():
        return []
    info = paddle_te_core.backends()
    return [b for b in ATTN_BACKENDS if info.get(b, {}).get("available")]


BACKENDS = _available_backends() or ["cudnn"]  # the conftest skips everything without a module

# Floor of the tolerance, relative to max |ref|: accumulation-order noise where the naive error
# is tiny (e.g. a row with one visible key is exact in any dtype).
FLOOR = {"float16": 2e-3, "bfloat16": 1.6e-2}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def np64(t):
    return t.detach().to("cpu", dtype=torch.float64).numpy()


def poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


def naive_dtype(dtype):
    """numpy dtype for the reference run in the kernel's precision (FlashAttention's naive):
    float16, or bfloat16 from ml_dtypes (numpy has none of its own)."""
    if dtype == torch.float16:
        return np.float16
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    try:
        np.ones((2, 2), bf16) @ np.ones((2, 2), bf16)
    except TypeError:
        pytest.skip("this ml_dtypes has no bfloat16 matmul for the naive reference")
    return bf16


class Case:
    """One attention call: shapes, lengths, mask, window; builds inputs in q's layout."""

    def __init__(self, fmt, mask, window=None, b=2, s_q=96, s_kv=128, h=4, h_kv=2, d=64, d_v=None,
                 lens_q=None, lens_kv=None, dtype=torch.float16, tail=5):
        self.fmt, self.mask, self.window = fmt, mask, window
        self.b, self.s_q, self.s_kv, self.h, self.h_kv = b, s_q, s_kv, h, h_kv
        self.d, self.d_v, self.dtype = d, d if d_v is None else d_v, dtype
        padded = fmt == "thd" or R.has_padding(mask)
        self.lens_q = lens_q if lens_q is not None else ([s_q] * b)
        self.lens_kv = lens_kv if lens_kv is not None else ([s_kv] * b)
        self.cu_q = R.cu_seqlens(self.lens_q) if padded else None
        self.cu_kv = R.cu_seqlens(self.lens_kv) if padded else None
        self.tail = tail if fmt == "thd" else 0  # packed tokens after the last sequence

    def shape(self, side, dim):
        heads = self.h if side == "q" else self.h_kv
        s = self.s_q if side == "q" else self.s_kv
        if self.fmt == "bshd":
            return (self.b, s, heads, dim)
        if self.fmt == "sbhd":
            return (s, self.b, heads, dim)
        cu = self.cu_q if side == "q" else self.cu_kv
        return (int(cu[-1]) + self.tail, heads, dim)

    def lse_shape(self):
        if self.fmt == "thd":
            return (self.h, int(self.cu_q[-1]) + self.tail)
        return (self.b, self.h, self.s_q)

    def randn(self, side, dim):
        return torch.randn(self.shape(side, dim), dtype=self.dtype, device="cuda")

    def kwargs(self):
        kw = dict(qkv_format=self.fmt, attn_mask_type=self.mask,
                  window_size=self.window if self.window is not None else (-1, -1))
        if self.cu_q is not None:
            kw.update(cu_seqlens_q=torch.tensor(self.cu_q, dtype=torch.int32, device="cuda"),
                      cu_seqlens_kv=torch.tensor(self.cu_kv, dtype=torch.int32, device="cuda"),
                      max_seqlen_q=max(self.s_q, 1), max_seqlen_kv=max(self.s_kv, 1))
        return kw

    def ref_kwargs(self):
        return dict(qkv_format=self.fmt, attn_mask_type=self.mask, window_size=self.window,
                    cu_seqlens_q=self.cu_q, cu_seqlens_kv=self.cu_kv)


def run(core, case, backend, *, grads=True, dropout=0.0, seed=0, deterministic=False,
        inputs=None, stream=None):
    """Forward (+ lse) and, if asked, backward on fresh random inputs; every output poisoned."""
    q, k, v, do = inputs if inputs is not None else (
        case.randn("q", case.d), case.randn("kv", case.d), case.randn("kv", case.d_v),
        case.randn("q", case.d_v))
    out = poisoned(case.shape("q", case.d_v), case.dtype)
    lse = poisoned(case.lse_shape(), torch.float32)
    kw = case.kwargs()
    extra = dict(dropout=dropout, seed=seed, offset=0, backend=backend)
    if stream is not None:
        extra["stream"] = stream
    core.fused_attn_fwd(q, k, v, out, lse=lse, **kw, **extra)
    res = dict(q=q, k=k, v=v, do=do, out=out, lse=lse)
    if grads:
        dq, dk, dv = (poisoned(t.shape, case.dtype) for t in (q, k, v))
        core.fused_attn_bwd(q, k, v, out, do, lse, dq, dk, dv, **kw, **extra,
                            deterministic=deterministic)
        res.update(dq=dq, dk=dk, dv=dv)
    return res


def check_close(actual, ref64, naive, dtype, name):
    assert np.all(np.isfinite(actual)), f"{name}: non-finite values (unwritten or NaN)"
    floor = FLOOR[str(dtype).split(".")[-1]] * max(1.0, float(np.max(np.abs(ref64), initial=0)))
    R.assert_close_fa(actual, ref64, naive, floor=floor, name=name)


def lse_rows_valid(case, valid_q, lse_shape):
    """bool over the lse array: True at the rows of real (unpadded) queries."""
    if case.fmt == "thd":
        return np.broadcast_to(valid_q[None, :], lse_shape)
    per_bs = valid_q if case.fmt == "bshd" else valid_q.T  # [b, s]
    return np.broadcast_to(per_bs[:, None, :], lse_shape)


def check_against_reference(case, res):
    q, k, v, do = (np64(res[n]) for n in ("q", "k", "v", "do"))
    kw = case.ref_kwargs()
    ref_out, ref_lse = R.attention_fwd(q, k, v, **kw)
    nd = naive_dtype(case.dtype)
    naive_out, naive_lse = R.attention_fwd(q, k, v, compute_dtype=nd, **kw)
    out, lse = np64(res["out"]), np64(res["lse"])

    valid_q = R.valid_rows(case.fmt, q.shape, case.cu_q)
    check_close(out[valid_q], ref_out[valid_q], naive_out[valid_q].astype(np.float64), case.dtype,
                "out")
    assert np.all(out[~valid_q] == 0), "out: padded positions must be exactly 0"
    # lse at real rows: -inf exactly where the reference has -inf (no visible key), close
    # elsewhere; unspecified at padded positions (SPEC §8).
    sel = lse_rows_valid(case, valid_q, lse.shape)
    r, a, n = ref_lse[sel], lse[sel], np.asarray(naive_lse, np.float64)[sel]
    empty = np.isneginf(r)
    assert np.all(np.isneginf(a[empty])), "lse: rows that see no key must be -inf"
    if np.any(~empty):
        check_close(a[~empty], r[~empty], n[~empty], case.dtype, "lse")

    if "dq" not in res:
        return
    ref_g = R.attention_bwd(q, k, v, do, **kw)
    naive_g = R.attention_bwd(q, k, v, do, compute_dtype=nd, **kw)
    valid_kv = R.valid_rows(case.fmt, k.shape, case.cu_kv)
    for name, g, rg, ng, valid in zip(("dq", "dk", "dv"), (res["dq"], res["dk"], res["dv"]),
                                      ref_g, naive_g, (valid_q, valid_kv, valid_kv)):
        g = np64(g)
        check_close(g[valid], rg[valid], ng[valid].astype(np.float64), case.dtype, name)
        assert np.all(g[~valid] == 0), f"{name}: padded positions must be exactly 0"


def expect_runs(core, case, backend, **kw):
    """run(), but a backend that cannot take the call is a skip with its reason, except cuDNN on
    the calls paddle_te documents it for (docs/backends.md), where it is a failure."""
    try:
        return run(core, case, backend, **kw)
    except ValueError as e:
        if backend == "cudnn" and not cudnn_may_refuse(case, kw.get("dropout", 0.0)):
            raise
        pytest.skip(f"{backend}: {e}")


def cudnn_may_refuse(case, dropout):
    major = torch.cuda.get_device_capability()[0]
    if case.fmt == "thd" and major < 9:
        return True
    return dropout > 0 and R.is_bottom_right(case.mask)


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------

NON_CAUSAL_WINDOWS = [None, (16, -1), (-1, 8), (24, 8), (0, 0)]
CAUSAL_WINDOWS = [None, (16, 0), (0, 0)]


def _grid():
    for fmt in R.LAYOUTS:
        for mask in R.CORE_MASK_TYPES:
            windows = CAUSAL_WINDOWS if R.is_causal(mask) else NON_CAUSAL_WINDOWS
            for window in windows:
                yield fmt, mask, window


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt,mask,window", list(_grid()))
def test_layouts_masks_windows(core, backend, fmt, mask, window):
    # Lengths: s_q < s_kv in one sequence and s_q > s_kv in the other, so both alignments matter
    # and bottom-right rows with no key exist.
    padded = fmt == "thd" or R.has_padding(mask)
    dtype = torch.float16 if zlib.crc32(repr((fmt, mask, window)).encode()) % 2 else torch.bfloat16
    if padded:
        case = Case(fmt, mask, window, s_q=96, s_kv=128, lens_q=[96, 70], lens_kv=[50, 128],
                    dtype=dtype)
    else:
        case = Case(fmt, mask, window, s_q=96, s_kv=128, dtype=dtype)
    check_against_reference(case, expect_runs(core, case, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", R.LAYOUTS)
@pytest.mark.parametrize("mask", ["causal_bottom_right", "no_mask"])
def test_more_queries_than_keys(core, backend, fmt, mask):
    """s_q > s_kv: bottom-right causal leaves the first s_q - s_kv rows without keys."""
    case = Case(fmt, mask, s_q=128, s_kv=80)
    if fmt == "thd":
        case = Case(fmt, mask, s_q=128, s_kv=80, lens_q=[128, 100], lens_kv=[80, 80])
    check_against_reference(case, expect_runs(core, case, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("h_kv", [8, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("mask", ["no_mask", "causal", "padding_causal"])
def test_gqa_mqa(core, backend, dtype, h_kv, mask):
    lens = [128, 77] if R.has_padding(mask) else None
    case = Case("bshd", mask, b=2, s_q=128, s_kv=128, h=8, h_kv=h_kv, d=128, lens_q=lens,
                lens_kv=lens, dtype=dtype)
    check_against_reference(case, expect_runs(core, case, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", R.LAYOUTS)
@pytest.mark.parametrize("mask", ["padding", "padding_causal", "padding_causal_bottom_right"])
def test_lengths_zero_and_one(core, backend, fmt, mask):
    """Sequences of length 0 and 1 on either side, next to ordinary ones."""
    case = Case(fmt, mask, b=5, s_q=64, s_kv=64, lens_q=[0, 1, 64, 1, 33],
                lens_kv=[5, 0, 1, 1, 64])
    check_against_reference(case, expect_runs(core, case, backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d,d_v", [(128, 64), (64, 128), (256, 256), (32, 32)])
def test_head_dims(core, backend, d, d_v):
    case = Case("bshd", "causal", b=1, s_q=128, s_kv=128, h=2, h_kv=1, d=d, d_v=d_v)
    check_against_reference(case, expect_runs(core, case, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_scale(core, backend):
    case = Case("bshd", "causal", s_q=64, s_kv=64)
    q, k, v, do = (case.randn("q", 64), case.randn("kv", 64), case.randn("kv", 64),
                   case.randn("q", 64))
    out = poisoned(q.shape, case.dtype)
    lse = poisoned(case.lse_shape(), torch.float32)
    core.fused_attn_fwd(q, k, v, out, lse=lse, softmax_scale=0.3, backend=backend,
                        **case.kwargs())
    ref, _ = R.attention_fwd(np64(q), np64(k), np64(v), softmax_scale=0.3, **case.ref_kwargs())
    naive, _ = R.attention_fwd(np64(q), np64(k), np64(v), softmax_scale=0.3,
                               compute_dtype=np.float16, **case.ref_kwargs())
    check_close(np64(out), ref, naive.astype(np.float64), case.dtype, "out")


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_backward(core, backend):
    case = Case("bshd", "causal", b=2, s_q=256, s_kv=256, h=8, h_kv=2, d=64)
    first = expect_runs(core, case, backend, deterministic=True)
    inputs = tuple(first[n] for n in ("q", "k", "v", "do"))
    second = run(core, case, backend, deterministic=True, inputs=inputs)
    for n in ("out", "lse", "dq", "dk", "dv"):
        assert torch.equal(first[n], second[n]), f"{n}: deterministic=True is not bitwise repeatable"


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream(core, backend):
    """The call runs on the stream it is given (a side stream, with the default stream busy)."""
    case = Case("bshd", "causal", b=2, s_q=128, s_kv=128)
    side = torch.cuda.Stream()
    inputs = (case.randn("q", 64), case.randn("kv", 64), case.randn("kv", 64), case.randn("q", 64))
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        res = expect_runs(core, case, backend, inputs=inputs, stream=side.cuda_stream)
    side.synchronize()
    check_against_reference(case, res)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt,mask", [("bshd", "causal"), ("thd", "padding"),
                                      ("bshd", "padding_causal")])
def test_dropout(core, backend, fmt, mask):
    """Dropout: same (seed, offset) -> same result; another seed -> another one; finite outputs
    and gradients, zeros at padded positions. cuDNN's mask is its own RNG (not the Philox function
    of attention.h), so the values are not compared with the reference's mask."""
    p = 0.25
    lens = [96, 40] if (fmt == "thd" or R.has_padding(mask)) else None
    case = Case(fmt, mask, s_q=96, s_kv=96, lens_q=lens, lens_kv=lens)
    a = expect_runs(core, case, backend, dropout=p, seed=1234)
    inputs = tuple(a[n] for n in ("q", "k", "v", "do"))
    b = run(core, case, backend, dropout=p, seed=1234, inputs=inputs)
    c = run(core, case, backend, dropout=p, seed=99, inputs=inputs, grads=False)
    valid = R.valid_rows(case.fmt, tuple(a["q"].shape), case.cu_q)
    for n in ("out", "dq", "dk", "dv"):
        arr = np64(a[n])
        assert np.all(np.isfinite(arr)), f"{n}: non-finite values with dropout"
    assert torch.equal(a["out"], b["out"]), "out: same (seed, offset) gave another result"
    assert np.all(np64(a["out"])[~valid] == 0)
    assert not torch.equal(a["out"], c["out"]), "a different seed gave the same dropout mask"
    # The lse is the softmax statistic before dropout: equal to the reference's.
    _, ref_lse = R.attention_fwd(np64(a["q"]), np64(a["k"]), np64(a["v"]), **case.ref_kwargs())
    lse = np64(a["lse"])
    fin = np.isfinite(ref_lse) & lse_rows_valid(case, valid, ref_lse.shape)
    np.testing.assert_allclose(lse[fin], ref_lse[fin], atol=2e-2, rtol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_rate_follows_p(core, backend):
    """Calls with several probabilities on one shape each drop their own share: with q = 0 every
    key has probability 1/s_kv and v = identity, so out[i, j] = keep_ij / (s_kv (1 - p)) and the
    fraction of zeros in out is the drop rate. Catches a backend that reuses one call's dropout
    setting (e.g. a cached graph keyed without p) for another."""
    s, d = 64, 64
    q = torch.zeros(4, s, 8, d, dtype=torch.float16, device="cuda")
    v = torch.eye(s, d, dtype=torch.float16, device="cuda")[None, :, None, :].expand(4, s, 8, d)
    v = v.contiguous()
    for p in (0.1, 0.5, 0.3):
        out = torch.empty_like(q)
        lse = torch.empty(4, 8, s, dtype=torch.float32, device="cuda")
        core.fused_attn_fwd(q, q, v, out, lse=lse, dropout=p, seed=5, offset=1, backend=backend)
        torch.cuda.synchronize()
        dropped = (out == 0).float().mean().item()
        assert abs(dropped - p) < 0.02, f"p={p}: {dropped:.3f} of the probabilities dropped"


def test_auto_with_dropout_uses_flash(core):
    """With dropout, `auto` runs the flash kernels (the documented Philox mask), forward and
    backward alike, so their results equal an explicit backend="flash" call bit for bit."""
    if "flash" not in BACKENDS:
        pytest.skip("flash backend not available")
    case = Case("bshd", "causal", b=2, s_q=96, s_kv=96)
    # deterministic=True: gradients are bitwise comparable between two runs.
    a = expect_runs(core, case, "flash", dropout=0.2, seed=11, deterministic=True)
    inputs = tuple(a[n] for n in ("q", "k", "v", "do"))
    b = run(core, case, "auto", dropout=0.2, seed=11, inputs=inputs, deterministic=True)
    for n in ("out", "lse", "dq", "dk", "dv"):
        assert torch.equal(a[n], b[n]), f"{n}: auto with dropout differs from flash"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sbhd_strided_views(core, backend):
    """q, k, v as views into one packed [s, b, 3, h, d] tensor (Megatron's layout)."""
    s, b, h, d = 128, 2, 4, 64
    qkv = torch.randn(s, b, 3, h, d, dtype=torch.float16, device="cuda")
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    case = Case("sbhd", "causal", b=b, s_q=s, s_kv=s, h=h, h_kv=h, d=d)
    do = case.randn("q", d)
    res = expect_runs(core, case, backend, inputs=(q, k, v, do))
    check_against_reference(case, res)


def test_cudnn_check_reason(core):
    """A call cuDNN cannot run is a ValueError naming the reason (dtype here)."""
    if "cudnn" not in BACKENDS:
        pytest.skip("cudnn backend not available")
    q = torch.randn(1, 64, 2, 64, dtype=torch.float32, device="cuda")
    out = torch.empty_like(q)
    with pytest.raises(ValueError):
        core.fused_attn_fwd(q, q, q, out, backend="cudnn")
