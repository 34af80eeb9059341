"""GPU tests of paddle_te's own flash-attention kernels (backend="flash") through paddle_te_core.

What this file adds to the backend-parametrized grid of test_attention_gpu.py:
* forward + lse + all three gradients of the flash kernels over layouts, mask types, windows in
  both alignments, GQA/MQA, lengths 0/1/odd, a head dim that is not compiled but padded up to one
  that is (d = 40, 80), fp16 and bf16, checked against tests/reference.py (float64) with
  FlashAttention's tolerance rule, outputs poisoned with NaN, exact zeros at padded positions and
  in rows that see no key, lse = -inf there;
* the dropout mask, bit for bit: with V = identity the output *is* the dropped, rescaled
  probability matrix, so its zero pattern is the kernel's keep mask, compared exactly with
  reference.dropout_keep_mask (the documented Philox rule);
* forward and backward with dropout against the reference given the same (seed, offset);
* both backward modes on the whole grid: deterministic=True (no atomics, bitwise repeatable) and
  deterministic=False (dQ accumulated with fp32 atomics: dK/dV still bitwise repeatable, dQ equal
  to the deterministic one up to summation order);
* the capability check's reasons (dtype, head dim).

Skips cleanly without CUDA, torch or a CUDA build of the module (conftest.py).
"""

import math
import zlib

import numpy as np
import pytest

import reference as ref


def to_numpy64(t):
    return t.detach().to("cpu", dtype=__import__("torch").float64).numpy()


def poison(t):
    """NaN everywhere, so an element the kernel does not write shows up."""
    return t.fill_(float("nan"))


# bf16 keeps 8 significant bits, fp16 11: the naive-implementation error of the tolerance rule is
# measured in fp16 (numpy has no bf16) and scaled by the ratio of unit roundoffs for bf16.
_NAIVE_SCALE = {"float16": 1.0, "bfloat16": 8.0}


def _flash_available(core):
    info = core.backends().get("flash", {})
    return bool(info.get("available")), info.get("reason", "")


@pytest.fixture(scope="module")
def flash(core):
    ok, why = _flash_available(core)
    if not ok:
        pytest.skip(f"flash backend not available: {why}")
    return core


class Case:
    """One attention call: layout, lengths, heads, mask, window, dtype."""

    def __init__(self, fmt, mask_type, lens_q, lens_kv, s_q=None, s_kv=None, h=4, h_kv=None,
                 d=64, window=None, dtype="bfloat16", tail=0, use_cu=None):
        self.fmt, self.mask_type, self.window = fmt, mask_type, window
        self.lens_q, self.lens_kv = list(lens_q), list(lens_kv)
        self.b = len(lens_q)
        self.s_q = s_q if s_q is not None else max(self.lens_q + [1])
        self.s_kv = s_kv if s_kv is not None else max(self.lens_kv + [1])
        self.h, self.h_kv, self.d = h, (h if h_kv is None else h_kv), d
        self.dtype, self.tail = dtype, tail
        # cu_seqlens: always for thd; for bshd/sbhd only with padding types (SPEC §8).
        self.use_cu = (fmt == "thd" or mask_type.startswith("padding")) if use_cu is None else use_cu

    def __repr__(self):
        return (f"{self.fmt}-{self.mask_type}-w{self.window}-q{self.lens_q}-kv{self.lens_kv}"
                f"-h{self.h}/{self.h_kv}-d{self.d}-{self.dtype}")


def _shape(case, lens, s, heads, d, tail):
    if case.fmt == "bshd":
        return (case.b, s, heads, d)
    if case.fmt == "sbhd":
        return (s, case.b, heads, d)
    return (sum(lens) + tail, heads, d)


def _inputs(torch, case, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    dt = getattr(torch, case.dtype)

    def rnd(shape):
        return torch.randn(shape, generator=g, device="cuda", dtype=torch.float32).to(dt)

    q = rnd(_shape(case, case.lens_q, case.s_q, case.h, case.d, case.tail))
    k = rnd(_shape(case, case.lens_kv, case.s_kv, case.h_kv, case.d, case.tail + 3))
    v = rnd(_shape(case, case.lens_kv, case.s_kv, case.h_kv, case.d, case.tail + 3))
    d_out = rnd(q.shape)
    return q, k, v, d_out


def _cu(lens):
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)


def _kwargs(torch, case, scale):
    kw = dict(qkv_format=case.fmt, attn_mask_type=case.mask_type,
              window_size=case.window if case.window is not None else (-1, -1),
              softmax_scale=scale, backend="flash")
    ref_kw = dict(qkv_format=case.fmt, attn_mask_type=case.mask_type, window_size=case.window,
                  softmax_scale=scale)
    if case.use_cu:
        cq, ckv = _cu(case.lens_q), _cu(case.lens_kv)
        kw.update(cu_seqlens_q=torch.from_numpy(cq).cuda(), cu_seqlens_kv=torch.from_numpy(ckv).cuda(),
                  max_seqlen_q=int(case.s_q), max_seqlen_kv=int(case.s_kv))
        ref_kw.update(cu_seqlens_q=cq, cu_seqlens_kv=ckv)
    return kw, ref_kw


def _lse_shape(case, q):
    return (case.h, q.shape[0]) if case.fmt == "thd" else (case.b, case.h, case.s_q)


def _run_fwd(core, torch, case, q, k, v, kw, dropout=0.0, seed=0, offset=0):
    out = poison(torch.empty_like(q))
    lse = poison(torch.empty(_lse_shape(case, q), device="cuda", dtype=torch.float32))
    core.fused_attn_fwd(q, k, v, out, lse=lse, dropout=dropout, seed=seed, offset=offset, **kw)
    torch.cuda.synchronize()
    return out, lse


def _run_bwd(core, torch, q, k, v, out, d_out, lse, kw, deterministic=False, **extra):
    dq, dk, dv = (poison(torch.empty_like(t)) for t in (q, k, v))
    core.fused_attn_bwd(q, k, v, out, d_out, lse, dq, dk, dv, deterministic=deterministic,
                        **kw, **extra)
    torch.cuda.synchronize()
    return dq, dk, dv


def _assert_close(name, actual, ref64, naive, dtype, floor_rel=2e-3):
    """FlashAttention's rule: err <= 2 * naive error + floor, with finite values everywhere."""
    a = to_numpy64(actual) if not isinstance(actual, np.ndarray) else actual
    assert np.all(np.isfinite(a)), f"{name}: non-finite values (unwritten or NaN)"
    err = ref.max_abs_err(a, ref64)
    naive_err = ref.max_abs_err(naive, ref64) * _NAIVE_SCALE[dtype]
    scale = max(1.0, float(np.max(np.abs(ref64))) if ref64.size else 1.0)
    bound = 2.0 * naive_err + floor_rel * scale
    assert err <= bound, f"{name}: max error {err:.3e} > bound {bound:.3e} (naive {naive_err:.3e})"


def _valid(case, shape, lens):
    cu = _cu(lens) if case.use_cu else None
    return ref.valid_rows(case.fmt, shape, cu)


def _padded_zero(name, t, valid):
    """Every element outside the sequences is exactly 0."""
    a = to_numpy64(t)
    bad = a[~valid] if valid is not None else a[:0]
    assert np.all(bad == 0.0), f"{name}: padded positions are not exactly zero"


CASES = [
    Case("bshd", "no_mask", [128, 128], [128, 128], d=64, dtype="float16"),
    Case("bshd", "causal", [77], [77], h=3, d=128, dtype="bfloat16"),
    Case("sbhd", "causal", [65, 65], [65, 65], d=64, dtype="bfloat16"),
    Case("bshd", "causal_bottom_right", [37, 37], [150, 150], d=64, dtype="float16"),
    Case("bshd", "causal_bottom_right", [150], [37], d=128, dtype="bfloat16"),  # empty rows
    Case("bshd", "causal", [150], [37], d=64, dtype="bfloat16"),  # top-left, rows past L_kv
    Case("bshd", "padding", [33, 0, 100, 1], [90, 5, 0, 128], s_q=128, s_kv=128, d=64,
         dtype="float16"),
    Case("sbhd", "padding_causal", [70, 1, 129], [70, 64, 129], s_q=130, s_kv=131, d=128,
         dtype="bfloat16"),
    Case("bshd", "padding_causal_bottom_right", [5, 64, 1], [70, 3, 129], s_q=64, s_kv=129,
         d=64, dtype="bfloat16"),
    Case("thd", "padding", [0, 1, 37, 130], [3, 1, 0, 131], d=64, dtype="bfloat16", tail=5),
    Case("thd", "padding_causal", [17, 200, 64], [17, 200, 64], d=128, dtype="float16", tail=2),
    Case("thd", "padding_causal_bottom_right", [5, 64, 1], [70, 3, 129], d=64, dtype="float16"),
    # windows, both alignments
    Case("bshd", "no_mask", [190], [190], window=(16, 8), d=64, dtype="bfloat16"),
    Case("bshd", "no_mask", [100], [300], window=(0, 0), d=64, dtype="float16"),
    Case("bshd", "causal", [257], [257], window=(32, 0), d=128, dtype="bfloat16"),
    Case("bshd", "causal_bottom_right", [100], [230], window=(20, 0), d=64, dtype="bfloat16"),
    Case("sbhd", "padding_causal_bottom_right", [60, 129], [100, 40], s_q=129, s_kv=100,
         window=(10, 0), d=64, dtype="float16"),
    Case("thd", "padding", [50, 140], [140, 50], window=(7, 3), d=128, dtype="bfloat16"),
    Case("bshd", "no_mask", [64], [200], window=(-1, 5), d=64, dtype="float16"),
    # GQA / MQA
    Case("bshd", "causal", [96, 96], [96, 96], h=8, h_kv=2, d=64, dtype="bfloat16"),
    Case("thd", "padding_causal", [33, 90], [33, 90], h=8, h_kv=1, d=128, dtype="float16"),
    Case("bshd", "no_mask", [45], [130], h=6, h_kv=3, window=(30, 30), d=64, dtype="bfloat16"),
    # head dims padded up to a compiled one (columns past d are zero-filled, never stored)
    Case("bshd", "causal", [70], [70], d=40, dtype="bfloat16"),
    Case("thd", "padding", [30, 71], [50, 9], d=80, dtype="float16"),
    # the other generated head dims (skipped unless the build compiled them: PTE_HDIMS)
    Case("thd", "padding_causal", [33, 70], [33, 70], d=32, dtype="bfloat16"),
    Case("bshd", "padding", [50, 77], [90, 13], s_q=80, s_kv=96, d=96, dtype="float16"),
    Case("bshd", "causal", [100], [100], h=4, h_kv=2, d=160, dtype="bfloat16"),
    Case("sbhd", "no_mask", [70], [140], window=(20, 10), d=192, dtype="float16"),
    Case("thd", "padding_causal_bottom_right", [40, 9], [60, 30], d=224, dtype="bfloat16"),
    Case("bshd", "causal", [130], [130], h=2, d=256, dtype="bfloat16"),
    Case("thd", "padding", [20, 65], [100, 1], d=248, dtype="float16"),
    # lengths 1 and 0
    Case("bshd", "no_mask", [1], [1], d=64, dtype="bfloat16"),
    Case("thd", "padding_causal", [0, 0], [0, 5], d=64, dtype="bfloat16", tail=3),
]


def _skip_uncompiled(core, torch, case):
    """Skip a case whose head dim exceeds the compiled set (the check's reason says so)."""
    try:
        q = torch.zeros((1, 1, 1, case.d), device="cuda", dtype=torch.float16)
        core.fused_attn_fwd(q, q, q, torch.empty_like(q), backend="flash")
    except ValueError as e:
        if "head_dim" in str(e):
            pytest.skip(str(e))
        raise


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_flash_fwd_bwd(flash, torch, case):
    _skip_uncompiled(flash, torch, case)
    q, k, v, d_out = _inputs(torch, case, seed=zlib.crc32(repr(case).encode()))
    scale = 1.0 / math.sqrt(case.d) if case.d != 64 else 0.11  # a non-default scale too
    kw, ref_kw = _kwargs(torch, case, scale)

    out, lse = _run_fwd(flash, torch, case, q, k, v, kw)
    q64, k64, v64, do64 = (to_numpy64(t) for t in (q, k, v, d_out))
    out_ref, lse_ref = ref.attention_fwd(q64, k64, v64, **ref_kw)
    out_naive, _ = ref.attention_fwd(q64, k64, v64, compute_dtype=np.float16, **ref_kw)

    valid_q = _valid(case, q.shape, case.lens_q)
    valid_kv = _valid(case, k.shape, case.lens_kv)
    o = to_numpy64(out)
    _padded_zero("out", out, valid_q)  # padded rows, and thd tokens after the last sequence
    _assert_close("out", o, out_ref, out_naive, case.dtype)

    # lse on valid rows: -inf exactly where the reference has no visible key.
    l = to_numpy64(lse)
    lv = lse_ref.copy()
    rows = _lse_valid(case, valid_q)
    assert np.array_equal(np.isneginf(l[rows]), np.isneginf(lv[rows])), "lse: -inf rows differ"
    fin = rows & np.isfinite(lv)
    assert np.all(np.abs(l[fin] - lv[fin]) <= 2e-3 * np.maximum(1, np.abs(lv[fin]))), "lse"
    # Rows that see no key: output exactly 0.
    empty = _rows_to_tokens(case, rows & np.isneginf(lv), o.shape)
    assert np.all(o[empty] == 0.0), "out: rows without visible keys are not exactly zero"

    grads_ref = ref.attention_bwd(q64, k64, v64, do64, **ref_kw)
    grads_naive = ref.attention_bwd(q64, k64, v64, do64, compute_dtype=np.float16, **ref_kw)
    # Both backward paths: atomic dQ (deterministic=False) and the three-kernel one.
    for det in (False, True):
        dq, dk, dv = _run_bwd(flash, torch, q, k, v, out, d_out, lse, kw, deterministic=det)
        for name, t, r, n, valid in zip(("d_q", "d_k", "d_v"), (dq, dk, dv), grads_ref,
                                        grads_naive, (valid_q, valid_kv, valid_kv)):
            name = f"{name} (deterministic={det})"
            _padded_zero(name, t, valid)
            _assert_close(name, to_numpy64(t), r, n, case.dtype, floor_rel=4e-3)
        # Rows that see no key: zero d_q.
        assert np.all(to_numpy64(dq)[empty] == 0.0), "d_q: rows without visible keys are not zero"


def _lse_valid(case, valid_q):
    """bool in lse's layout: True at rows inside a sequence."""
    if case.fmt == "thd":
        return np.broadcast_to(valid_q[None, :], (case.h, valid_q.shape[0]))
    rows = valid_q if case.fmt == "bshd" else valid_q.T  # [b, s]
    return np.broadcast_to(rows[:, None, :], (case.b, case.h, case.s_q))


def _rows_to_tokens(case, lse_mask, out_shape):
    """lse-layout bool -> bool index over out's [..., h] positions (without the head dim)."""
    if case.fmt == "thd":
        return lse_mask.T  # [t, h]
    m = np.transpose(lse_mask, (0, 2, 1))  # [b, s, h]
    return m if case.fmt == "bshd" else np.transpose(m, (1, 0, 2))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fmt", ["bshd", "thd"])
def test_flash_dropout_mask_exact(flash, torch, dtype, fmt):
    """The kernel's keep mask equals the Philox rule of attention.h bit for bit.

    V = identity (keys x head dim) makes out[i, :L_kv] = P[i, :] * keep / (1 - p), so the zero
    pattern of the output is the keep mask (every probability is > 0 here).
    """
    p, seed, offset = 0.37, 0x1234_5678_9ABC, (5 << 32) + 77
    b, h, s_q, s_kv, d = 2, 3, 50, 61, 64
    lens_q, lens_kv = [50, 29], [61, 44]
    dt = getattr(torch, dtype)
    g = torch.Generator(device="cuda").manual_seed(7)
    if fmt == "bshd":
        q = (0.3 * torch.randn((b, s_q, h, d), generator=g, device="cuda")).to(dt)
        k = (0.3 * torch.randn((b, s_kv, h, d), generator=g, device="cuda")).to(dt)
        eye = torch.eye(s_kv, d, device="cuda", dtype=dt)
        v = eye[None, :, None, :].expand(b, s_kv, h, d).contiguous()
        case = Case("bshd", "no_mask", [s_q] * b, [s_kv] * b, h=h, d=d, dtype=dtype)
    else:
        q = (0.3 * torch.randn((sum(lens_q), h, d), generator=g, device="cuda")).to(dt)
        k = (0.3 * torch.randn((sum(lens_kv), h, d), generator=g, device="cuda")).to(dt)
        v = torch.cat([torch.eye(L, d, device="cuda", dtype=dt) for L in lens_kv])
        v = v[:, None, :].expand(-1, h, d).contiguous()
        case = Case("thd", "padding", lens_q, lens_kv, h=h, d=d, dtype=dtype)
    kw, ref_kw = _kwargs(torch, case, 0.125)
    out, _ = _run_fwd(flash, torch, case, q, k, v, kw, dropout=p, seed=seed, offset=offset)
    o = to_numpy64(out)
    S_q, S_kv = max(case.lens_q), max(case.lens_kv)
    keep = ref.dropout_keep_mask(seed, offset, p, b, h, S_q, S_kv)  # [b, h, S_q, S_kv]
    for bi in range(b):
        L_q, L_kv = case.lens_q[bi], case.lens_kv[bi]
        if fmt == "bshd":
            got = o[bi, :L_q, :, :L_kv] != 0  # [L_q, h, L_kv]
        else:
            q0 = int(_cu(lens_q)[bi])
            got = o[q0:q0 + L_q, :, :L_kv] != 0
        want = np.transpose(keep[bi, :, :L_q, :L_kv], (1, 0, 2))
        assert np.array_equal(got, want), f"dropout keep mask differs in sequence {bi}"
    # And the values: the same forward in float64 with the same keep mask.
    q64, k64, v64 = (to_numpy64(t) for t in (q, k, v))
    out_ref, _ = ref.attention_fwd(q64, k64, v64, dropout_p=p, seed=seed, offset=offset, **ref_kw)
    out_naive, _ = ref.attention_fwd(q64, k64, v64, dropout_p=p, seed=seed, offset=offset,
                                     compute_dtype=np.float16, **ref_kw)
    _assert_close("out (dropout)", o, out_ref, out_naive, dtype)


@pytest.mark.parametrize("case", [
    Case("bshd", "causal", [100, 100], [100, 100], h=4, h_kv=2, d=64, dtype="bfloat16"),
    Case("thd", "padding_causal_bottom_right", [40, 77], [90, 77], d=128, dtype="float16"),
    Case("sbhd", "no_mask", [70, 70], [50, 50], window=(8, 8), d=256, dtype="bfloat16"),
], ids=repr)
def test_flash_dropout_fwd_bwd(flash, torch, case):
    _skip_uncompiled(flash, torch, case)
    p, seed, offset = 0.2, 2026, 1 << 33
    q, k, v, d_out = _inputs(torch, case, seed=11)
    scale = 1.0 / math.sqrt(case.d)
    kw, ref_kw = _kwargs(torch, case, scale)
    out, lse = _run_fwd(flash, torch, case, q, k, v, kw, dropout=p, seed=seed, offset=offset)
    q64, k64, v64, do64 = (to_numpy64(t) for t in (q, k, v, d_out))
    dkw = dict(dropout_p=p, seed=seed, offset=offset)
    out_ref, _ = ref.attention_fwd(q64, k64, v64, **dkw, **ref_kw)
    out_naive, _ = ref.attention_fwd(q64, k64, v64, compute_dtype=np.float16, **dkw, **ref_kw)
    _assert_close("out", to_numpy64(out), out_ref, out_naive, case.dtype)
    grads = _run_bwd(flash, torch, q, k, v, out, d_out, lse, kw, dropout=p, seed=seed,
                     offset=offset)
    grads_ref = ref.attention_bwd(q64, k64, v64, do64, **dkw, **ref_kw)
    grads_naive = ref.attention_bwd(q64, k64, v64, do64, compute_dtype=np.float16, **dkw, **ref_kw)
    for name, t, r, n in zip(("d_q", "d_k", "d_v"), grads, grads_ref, grads_naive):
        _assert_close(name, to_numpy64(t), r, n, case.dtype, floor_rel=4e-3)


def test_flash_backward_bitwise_repeatable(flash, torch):
    """GQA with a window: several query heads and tiles feed each dK/dV and each dQ row.
    deterministic=True: every gradient is equal bit for bit across runs. deterministic=False (dQ
    through fp32 atomics): dK and dV are still bitwise repeatable, dQ differs from the
    deterministic one by summation order only."""
    case = Case("bshd", "causal", [300, 257], [300, 257], h=8, h_kv=2, d=128, window=(100, 0),
                dtype="bfloat16")
    _skip_uncompiled(flash, torch, case)
    q, k, v, d_out = _inputs(torch, case, seed=3)
    kw, _ = _kwargs(torch, case, None)
    out, lse = _run_fwd(flash, torch, case, q, k, v, kw)
    first = _run_bwd(flash, torch, q, k, v, out, d_out, lse, kw, deterministic=True)
    for _ in range(3):
        again = _run_bwd(flash, torch, q, k, v, out, d_out, lse, kw, deterministic=True)
        for a, b_ in zip(first, again):
            assert torch.equal(a.view(torch.int16), b_.view(torch.int16))
    dq0 = first[0].float()
    _, dk0, dv0 = _run_bwd(flash, torch, q, k, v, out, d_out, lse, kw, deterministic=False)
    for _ in range(3):
        dq, dk, dv = _run_bwd(flash, torch, q, k, v, out, d_out, lse, kw, deterministic=False)
        assert torch.equal(dk.view(torch.int16), dk0.view(torch.int16)), "d_k"
        assert torch.equal(dv.view(torch.int16), dv0.view(torch.int16)), "d_v"
        # Summation order only: a few bf16 ulps of the largest element.
        err = (dq.float() - dq0).abs().max().item()
        assert err <= 2e-2 * max(1.0, dq0.abs().max().item()), f"d_q differs by {err}"


def test_flash_check_reasons(flash, torch):
    """The capability check names what it cannot run; auto still runs it elsewhere."""
    q32 = torch.zeros((1, 4, 2, 64), device="cuda", dtype=torch.float32)
    with pytest.raises(ValueError, match="(?i)dtype|float16|bfloat16"):
        flash.fused_attn_fwd(q32, q32, q32, torch.empty_like(q32), backend="flash")
    q = torch.zeros((1, 4, 2, 264), device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="(?i)head"):
        flash.fused_attn_fwd(q, q, q, torch.empty_like(q), backend="flash")
