"""The one oracle of paddle_te (STYLE habit 1): float64 numpy, independent of the kernels.

Everything here is built from the visibility rule of SPEC §2, written once in
`visibility_mask`; no code is shared with the C++/CUDA kernels or the Python package. Every test
and every benchmark `--check` compares against these functions.

Conventions (SPEC §1-§3, §8):
* Boolean masks: True = masked out (padding masks, `attn_mask` of `arbitrary`, softmax masks).
  The only exception is `visibility_mask`, which returns True = *visible* (it is the rule itself).
* Dropout keep masks: True = kept.
* Layouts: bshd q [b, s_q, h, d]; sbhd [s_q, b, h, d]; thd [t_q, h, d] packed by cu_seqlens.
* Query head i uses kv head i // (h // h_kv) (GQA/MQA).
* A query row that sees no key: output 0, lse -inf, zero gradients. Positions past a sequence's
  actual length: output 0, gradient 0 (lse there is -inf here; SPEC leaves it unspecified).

The functions take `compute_dtype` (default float64) so that the same code, run in a kernel's
dtype, is the "naive implementation in the same dtype" of FlashAttention's tolerance rule
(STYLE habit 2, `assert_close_fa`).
"""

import math

import numpy as np


def _mm(a, b):
    """a @ b in the arrays' dtype. numpy multiplies float16 matrices without BLAS but accumulates
    each dot product in float32 and rounds once; float32 BLAS on the same float16 values, rounded
    once, is that computation up to summation order (the naive references' cost, ~12 x less)."""
    if a.dtype == np.float16 and b.dtype == np.float16:
        return (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    return a @ b

# --------------------------------------------------------------------------------------------
# Mask types and windows (SPEC §2)
# --------------------------------------------------------------------------------------------

MASK_TYPES = (
    "no_mask",
    "padding",
    "causal",
    "padding_causal",
    "causal_bottom_right",
    "padding_causal_bottom_right",
    "arbitrary",
)
# The types the fused kernels take (arbitrary is run by the layers through the unfused path).
CORE_MASK_TYPES = MASK_TYPES[:-1]
LAYOUTS = ("bshd", "sbhd", "thd")


def _check_mask_type(mask_type):
    if mask_type not in MASK_TYPES:
        raise ValueError(f"attn_mask_type={mask_type!r}: must be one of {MASK_TYPES}")


def is_causal(mask_type):
    _check_mask_type(mask_type)
    return "causal" in mask_type


def is_bottom_right(mask_type):
    _check_mask_type(mask_type)
    return mask_type.endswith("bottom_right")


def has_padding(mask_type):
    _check_mask_type(mask_type)
    return mask_type.startswith("padding")


def resolve_window(mask_type, window=None):
    """(left, right) as the kernels apply it: None -> (-1, -1); causal types force right = 0.

    This is the core's rule (SPEC §8 `paddle_te_core`), not the user-facing warning policy of
    `check_set_window_size` (which a layer test checks separately).
    """
    left, right = (-1, -1) if window is None else (int(window[0]), int(window[1]))
    if left < -1 or right < -1:
        raise ValueError(f"window_size={window!r}: each side must be >= -1")
    if is_causal(mask_type):
        right = 0
    return left, right


def visibility_mask(L_q, L_k, s_q=None, s_kv=None, mask_type="no_mask", window=None):
    """bool [s_q, s_kv], True where query i sees key j (SPEC §2).

    Query i (0 <= i < L_q) sees key j (0 <= j < L_k) iff
        i + delta - left <= j <= i + delta + right,
    left/right == -1 unbounded, delta = L_k - L_q for the bottom-right types, else 0. Rows and
    columns past L_q / L_k (padding up to s_q / s_kv) see nothing.
    """
    s_q = L_q if s_q is None else s_q
    s_kv = L_k if s_kv is None else s_kv
    if not (0 <= L_q <= s_q and 0 <= L_k <= s_kv):
        raise ValueError(f"lengths ({L_q}, {L_k}) must lie in [0, ({s_q}, {s_kv})]")
    left, right = resolve_window(mask_type, window)
    delta = L_k - L_q if is_bottom_right(mask_type) else 0
    i = np.arange(s_q)[:, None]
    j = np.arange(s_kv)[None, :]
    vis = (i < L_q) & (j < L_k)
    if left >= 0:
        vis = vis & (j >= i + delta - left)
    if right >= 0:
        vis = vis & (j <= i + delta + right)
    return vis


def padding_mask(lengths, s):
    """Right-padding mask bool [b, 1, 1, s], True = padding (masked out)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return (np.arange(s)[None, :] >= lengths[:, None])[:, None, None, :]


def full_padding_mask(lengths_q, lengths_kv, s_q, s_kv):
    """The full form [b, 1, s_q, s_kv]: the outer OR of a q and a kv padding mask."""
    mq = padding_mask(lengths_q, s_q)[:, 0, 0, :, None]
    mk = padding_mask(lengths_kv, s_kv)[:, 0, 0, None, :]
    return (mq | mk)[:, None]


def cu_seqlens(lengths):
    """int32 [b+1] with cu[0] = 0 from per-sequence lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def lengths_of(cu):
    return np.diff(np.asarray(cu, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Philox4x32-10 and the dropout rule (csrc/include/paddle_te/attention.h)
# --------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments


def philox4x32_10(counter, key):
    """Philox4x32-10 (Salmon et al., SC'11), vectorized.

    counter: 4 arrays (or ints) broadcastable together, each taken mod 2^32; key: 2 ints.
    Returns 4 uint32 arrays.
    """
    c = [np.asarray(x).astype(np.uint64) & np.uint64(_M32) for x in counter]
    c = np.broadcast_arrays(*c)
    c0, c1, c2, c3 = (x.copy() for x in c)
    k0, k1 = int(key[0]) & _M32, int(key[1]) & _M32
    m32 = np.uint64(_M32)
    for _ in range(10):
        p0 = np.uint64(_PHILOX_M0) * c0  # < 2^64: exact in uint64
        p1 = np.uint64(_PHILOX_M1) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & m32
        hi1, lo1 = p1 >> np.uint64(32), p1 & m32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = (k0 + _PHILOX_W0) & _M32
        k1 = (k1 + _PHILOX_W1) & _M32
    return tuple(x.astype(np.uint32) for x in (c0, c1, c2, c3))


def dropout_threshold(p):
    """Draws below this are dropped: min(floor(p * 2^32), 2^32 - 1), p taken as float32."""
    t = float(np.float32(p)) * 4294967296.0
    return _M32 if t >= float(_M32) else int(t)


def dropout_keep_mask(seed, offset, p, b, h, s_q, s_kv):
    """bool [b, h, s_q, s_kv], True = kept, exactly per attention.h:

    r = philox4x32_10(key = {lo32(seed), hi32(seed) + hi32(offset)},
                      counter = {j / 4, i, b * H + h, lo32(offset)})[j % 4]
    keep iff r >= threshold.  i, j are positions within the sequence (independent of layout).
    """
    seed, offset = int(seed), int(offset)
    key = (seed & _M32, ((seed >> 32) + (offset >> 32)) & _M32)
    n4 = (s_kv + 3) // 4
    bh = (np.arange(b)[:, None] * h + np.arange(h)[None, :])[:, :, None, None]  # [b, h, 1, 1]
    qi = np.arange(s_q)[None, None, :, None]
    j4 = np.arange(n4)[None, None, None, :]
    r = philox4x32_10((j4, qi, bh, offset & _M32), key)  # 4 x [b, h, s_q, n4]
    r = np.stack(r, axis=-1).reshape(b, h, s_q, 4 * n4)[..., :s_kv]
    return r >= np.uint32(dropout_threshold(p))


# --------------------------------------------------------------------------------------------
# Attention forward / backward
# --------------------------------------------------------------------------------------------


def _layout_info(x, qkv_format, cu):
    """(batch, padded length, per-sequence (start, length)) of one tensor."""
    if qkv_format == "bshd":
        b, s = x.shape[0], x.shape[1]
    elif qkv_format == "sbhd":
        s, b = x.shape[0], x.shape[1]
    elif qkv_format == "thd":
        if cu is None:
            raise ValueError("qkv_format='thd' needs cu_seqlens")
        b, s = len(cu) - 1, None
    else:
        raise ValueError(f"qkv_format={qkv_format!r}: must be one of {LAYOUTS}")
    if cu is None:
        lens = np.full(b, s, dtype=np.int64)
        starts = np.zeros(b, dtype=np.int64)
    else:
        cu = np.asarray(cu, dtype=np.int64)
        if len(cu) != b + 1 or cu[0] != 0 or np.any(np.diff(cu) < 0):
            raise ValueError(f"cu_seqlens={cu}: need [b+1] = [{b + 1}], cu[0] = 0, non-decreasing")
        lens = np.diff(cu)
        starts = cu[:-1] if qkv_format == "thd" else np.zeros(b, dtype=np.int64)
        if qkv_format == "thd":
            if cu[-1] > x.shape[0]:
                raise ValueError(f"cu_seqlens[-1]={cu[-1]} > tokens {x.shape[0]}")
        elif np.any(lens > s):
            raise ValueError(f"cu_seqlens lengths {lens} exceed the padded length {s}")
    return b, s, starts, lens


def _seq(x, qkv_format, bi, start, length):
    """Sequence bi of x as a view [length, heads, dim]."""
    if qkv_format == "bshd":
        return x[bi, :length]
    if qkv_format == "sbhd":
        return x[:length, bi]
    return x[start:start + length]


def _seq_slot(qkv_format, bi, start, length):
    if qkv_format == "bshd":
        return (bi, slice(0, length))
    if qkv_format == "sbhd":
        return (slice(0, length), bi)
    return (slice(start, start + length),)


class _Problem:
    """Normalized arguments shared by attention_fwd and attention_bwd."""

    def __init__(self, q, k, v, qkv_format, cu_seqlens_q, cu_seqlens_kv, attn_mask_type,
                 window_size, softmax_scale, attn_mask, bias, dropout_p, dropout_keep, seed,
                 offset, compute_dtype):
        _check_mask_type(attn_mask_type)
        self.fmt = qkv_format
        self.dt = np.dtype(compute_dtype)
        self.q, self.k, self.v = (np.asarray(t) for t in (q, k, v))
        self.b, self.s_q, self.start_q, self.len_q = _layout_info(self.q, qkv_format, cu_seqlens_q)
        b_kv, self.s_kv, self.start_kv, self.len_kv = _layout_info(self.k, qkv_format,
                                                                  cu_seqlens_kv)
        if b_kv != self.b:
            raise ValueError(f"batch of q ({self.b}) != batch of k ({b_kv})")
        self.h, self.d = self.q.shape[-2], self.q.shape[-1]
        self.h_kv, self.d_v = self.k.shape[-2], self.v.shape[-1]
        if self.h % self.h_kv:
            raise ValueError(f"h={self.h} is not a multiple of h_kv={self.h_kv}")
        self.group = self.h // self.h_kv
        # Sequence-local extents of mask / bias / dropout arrays: the padded length, or for thd the
        # longest sequence.
        self.S_q = self.s_q if self.s_q is not None else int(max(self.len_q, default=0))
        self.S_kv = self.s_kv if self.s_kv is not None else int(max(self.len_kv, default=0))
        self.mask_type = attn_mask_type
        self.window = window_size
        self.scale = 1.0 / math.sqrt(self.d) if softmax_scale is None else float(softmax_scale)
        full = (self.b, self.h, self.S_q, self.S_kv)
        self.attn_mask = None if attn_mask is None else np.broadcast_to(
            np.asarray(attn_mask, dtype=bool), full)
        self.bias = None if bias is None else np.broadcast_to(np.asarray(bias), full)
        # The probability crosses the C API as float32 (pte_attn_params_t.dropout), so the
        # kernels' 1/(1-p) rescale is that of the float32 value: model the same number here.
        self.p = float(np.float32(dropout_p))
        if self.p > 0.0:
            if dropout_keep is None:
                if seed is None or offset is None:
                    raise ValueError("dropout_p > 0 needs dropout_keep or (seed, offset)")
                dropout_keep = dropout_keep_mask(seed, offset, self.p, *full)
            self.keep = np.broadcast_to(np.asarray(dropout_keep, dtype=bool), full)
        else:
            self.keep = None

    def sequences(self):
        for bi in range(self.b):
            yield bi, int(self.start_q[bi]), int(self.len_q[bi]), int(self.start_kv[bi]), \
                int(self.len_kv[bi])

    def probs(self, bi, L_q, L_kv, qs, ks):
        """Softmax P [h, L_q, L_kv], lse [h, L_q], and dropped/scaled P for one sequence.

        qs [h, L_q, d], ks [h, L_kv, d] (kv heads already expanded to h).
        """
        dt = self.dt
        vis = visibility_mask(L_q, L_kv, mask_type=self.mask_type, window=self.window)
        vis = np.broadcast_to(vis, (self.h, L_q, L_kv))
        if self.attn_mask is not None:
            vis = vis & ~self.attn_mask[bi, :, :L_q, :L_kv]
        s = dt.type(self.scale) * _mm(qs, ks.transpose(0, 2, 1))
        if self.bias is not None:
            s = s + self.bias[bi, :, :L_q, :L_kv].astype(dt)
        s = np.where(vis, s, -np.inf)
        any_vis = vis.any(axis=-1, keepdims=True)
        m = np.where(any_vis, np.max(s, axis=-1, keepdims=True, initial=-np.inf), 0)
        e = np.where(vis, np.exp(s - m), 0).astype(dt)
        z = e.sum(axis=-1, keepdims=True)
        p = np.where(any_vis, e / np.where(any_vis, z, 1), 0).astype(dt)
        with np.errstate(divide="ignore"):
            lse = np.where(any_vis, m + np.log(np.where(any_vis, z, 1)), -np.inf)[..., 0]
        if self.keep is not None:
            keep = self.keep[bi, :, :L_q, :L_kv]
            pd = np.where(keep, p * dt.type(1.0 / (1.0 - self.p)), 0).astype(dt)
        else:
            keep, pd = None, p
        return p, pd, lse, keep

    def heads(self, x, expand):
        """[L, heads, dim] -> [h, L, dim] in the compute dtype (kv heads repeated for GQA)."""
        x = x.astype(self.dt).transpose(1, 0, 2)
        return np.repeat(x, self.group, axis=0) if expand else x


def _fold_kv(x, group):
    """Sum per-query-head gradients [h, L, dim] into kv heads [h_kv, L, dim]."""
    h, L, dim = x.shape
    return x.reshape(h // group, group, L, dim).sum(axis=1)


def attention_fwd(q, k, v, *, qkv_format="bshd", cu_seqlens_q=None, cu_seqlens_kv=None,
                  attn_mask_type="no_mask", window_size=None, softmax_scale=None, attn_mask=None,
                  bias=None, dropout_p=0.0, dropout_keep=None, seed=None, offset=None,
                  compute_dtype=np.float64):
    """Reference attention forward. Returns (out, lse).

    out has q's layout with head dim d_v; lse is [b, h, s_q] (thd: [h, t_q]), natural log,
    -inf for rows that see no key and at padded positions.
    attn_mask: bool broadcastable to [b, h, S_q, S_kv], True = masked out, combined with the
      window/mask-type rule (SPEC §8 "arbitrary with a window"). S_* are the padded lengths, or
      for thd the longest sequence; indices are positions within a sequence.
    bias: float broadcastable to [b, h, S_q, S_kv], added after scaling (core_attention_bias).
    dropout_keep: bool broadcastable to [b, h, S_q, S_kv], True = kept; if None and
      dropout_p > 0, it is the Philox mask of (seed, offset).
    cu_seqlens_*: actual lengths for bshd/sbhd (right padding), token offsets for thd.
    """
    pb = _Problem(q, k, v, qkv_format, cu_seqlens_q, cu_seqlens_kv, attn_mask_type, window_size,
                  softmax_scale, attn_mask, bias, dropout_p, dropout_keep, seed, offset,
                  compute_dtype)
    out = np.zeros(pb.q.shape[:-1] + (pb.d_v,), dtype=pb.dt)
    if qkv_format == "thd":
        lse = np.full((pb.h, pb.q.shape[0]), -np.inf)
    else:
        lse = np.full((pb.b, pb.h, pb.s_q), -np.inf)
    for bi, sq0, L_q, sk0, L_kv in pb.sequences():
        qs = pb.heads(_seq(pb.q, qkv_format, bi, sq0, L_q), False)
        ks = pb.heads(_seq(pb.k, qkv_format, bi, sk0, L_kv), True)
        vs = pb.heads(_seq(pb.v, qkv_format, bi, sk0, L_kv), True)
        _, pd, lse_b, _ = pb.probs(bi, L_q, L_kv, qs, ks)
        out[_seq_slot(qkv_format, bi, sq0, L_q)] = _mm(pd, vs).transpose(1, 0, 2)
        if qkv_format == "thd":
            lse[:, sq0:sq0 + L_q] = lse_b
        else:
            lse[bi, :, :L_q] = lse_b
    return out, lse


def attention_bwd(q, k, v, d_out, *, qkv_format="bshd", cu_seqlens_q=None, cu_seqlens_kv=None,
                  attn_mask_type="no_mask", window_size=None, softmax_scale=None, attn_mask=None,
                  bias=None, dropout_p=0.0, dropout_keep=None, seed=None, offset=None,
                  compute_dtype=np.float64):
    """Analytic gradients (dq, dk, dv) of attention_fwd(q, k, v, **same keywords) for upstream
    d_out (shaped like out).

    With P the softmax, D the dropout mask scaled by 1/(1-p), Pd = P*D, out = Pd V:
      dV = Pd^T dO,  dP = (dO V^T) * D,  dS = P * (dP - rowsum(dO * out)),
      dQ = scale * dS K,  dK = scale * dS^T Q;  kv-head gradients summed over their query heads.
    """
    fmt = qkv_format
    pb = _Problem(q, k, v, qkv_format, cu_seqlens_q, cu_seqlens_kv, attn_mask_type, window_size,
                  softmax_scale, attn_mask, bias, dropout_p, dropout_keep, seed, offset,
                  compute_dtype)
    d_out = np.asarray(d_out)
    dq = np.zeros(pb.q.shape, dtype=pb.dt)
    dk = np.zeros(pb.k.shape, dtype=pb.dt)
    dv = np.zeros(pb.v.shape, dtype=pb.dt)
    for bi, sq0, L_q, sk0, L_kv in pb.sequences():
        qs = pb.heads(_seq(pb.q, fmt, bi, sq0, L_q), False)
        ks = pb.heads(_seq(pb.k, fmt, bi, sk0, L_kv), True)
        vs = pb.heads(_seq(pb.v, fmt, bi, sk0, L_kv), True)
        dos = pb.heads(_seq(d_out, fmt, bi, sq0, L_q), False)
        p, pd, _, keep = pb.probs(bi, L_q, L_kv, qs, ks)
        dvs = _mm(pd.transpose(0, 2, 1), dos)
        dp = _mm(dos, vs.transpose(0, 2, 1))
        if keep is not None:
            dp = np.where(keep, dp * pb.dt.type(1.0 / (1.0 - pb.p)), 0)
        dsum = (dp * p).sum(axis=-1, keepdims=True)  # == rowsum(dO * out)
        ds = p * (dp - dsum)
        dqs = pb.dt.type(pb.scale) * _mm(ds, ks)
        dks = pb.dt.type(pb.scale) * _mm(ds.transpose(0, 2, 1), qs)
        dq[_seq_slot(fmt, bi, sq0, L_q)] = dqs.transpose(1, 0, 2)
        dk[_seq_slot(fmt, bi, sk0, L_kv)] = _fold_kv(dks, pb.group).transpose(1, 0, 2)
        dv[_seq_slot(fmt, bi, sk0, L_kv)] = _fold_kv(dvs, pb.group).transpose(1, 0, 2)
    return dq, dk, dv


def valid_rows(qkv_format, shape, cu_seqlens=None):
    """bool over the token positions of a q/k-shaped tensor: True inside a sequence.

    bshd -> [b, s]; sbhd -> [s, b]; thd -> [t]. Padded positions are False.
    """
    if qkv_format == "thd":
        t = np.arange(shape[0])
        return t < (int(cu_seqlens[-1]) if cu_seqlens is not None else shape[0])
    b, s = (shape[0], shape[1]) if qkv_format == "bshd" else (shape[1], shape[0])
    lens = lengths_of(cu_seqlens) if cu_seqlens is not None else np.full(b, s)
    rows = np.arange(s)[None, :] < np.asarray(lens)[:, None]  # [b, s]
    return rows if qkv_format == "bshd" else rows.T


# --------------------------------------------------------------------------------------------
# Masked softmax (SPEC §3)
# --------------------------------------------------------------------------------------------


def softmax_fwd(x, mask=None, scale=1.0, causal=None, compute_dtype=np.float64):
    """softmax(scale * x) over the last axis, masked elements excluded; fully masked rows -> 0.

    x [b, h, s_q, s_kv]; mask bool broadcastable to x, True = masked out;
    causal None | "top_left" (key j visible iff j <= i) | "bottom_right" (j <= i + s_kv - s_q).
    """
    dt = np.dtype(compute_dtype)
    x = np.asarray(x).astype(dt)
    s_q, s_kv = x.shape[-2:]
    masked = np.zeros(x.shape, dtype=bool)
    if mask is not None:
        masked = masked | np.asarray(mask, dtype=bool)
    if causal is not None:
        kind = {"top_left": "causal", "bottom_right": "causal_bottom_right"}[causal]
        masked = masked | ~visibility_mask(s_q, s_kv, mask_type=kind)
    s = np.where(masked, -np.inf, dt.type(scale) * x)
    any_vis = ~masked.all(axis=-1, keepdims=True)
    m = np.where(any_vis, s.max(axis=-1, keepdims=True), 0)
    e = np.where(masked, 0, np.exp(s - m)).astype(dt)
    z = e.sum(axis=-1, keepdims=True)
    return np.where(any_vis, e / np.where(any_vis, z, 1), 0).astype(dt)


def softmax_bwd(y, d_y, scale=1.0, compute_dtype=np.float64):
    """d_x = scale * y * (d_y - rowsum(d_y * y)); masked elements (y == 0) get 0."""
    dt = np.dtype(compute_dtype)
    y = np.asarray(y).astype(dt)
    d_y = np.asarray(d_y).astype(dt)
    return dt.type(scale) * y * (d_y - (d_y * y).sum(axis=-1, keepdims=True))


def scaled_softmax(x, scale=1.0):
    return softmax_fwd(x, scale=scale)


def scaled_masked_softmax(x, mask, scale=1.0):
    return softmax_fwd(x, mask=mask, scale=scale)


def scaled_upper_triang_masked_softmax(x, scale=1.0):
    return softmax_fwd(x, scale=scale, causal="top_left")


def scaled_aligned_causal_masked_softmax(x, scale=1.0):
    return softmax_fwd(x, scale=scale, causal="bottom_right")


# --------------------------------------------------------------------------------------------
# Padding masks -> cu_seqlens (SPEC §3 mask_to_cu_seqlens)
# --------------------------------------------------------------------------------------------


def _right_padding_lengths(m):
    """m bool [b, s], True = padding -> (lengths [b], ok): ok iff each row is F..F T..T."""
    lens = (~m).sum(axis=-1)
    ok = bool(np.array_equal(m, np.arange(m.shape[-1])[None, :] >= lens[:, None]))
    return lens, ok


def mask_lengths(mask, mask_kv=None):
    """(lengths_q, lengths_kv, is_right_padding) for the three forms of SPEC §3.

    [b, 1, 1, s] alone (self-attention), [b, 1, 1, s_q] + mask_kv [b, 1, 1, s_kv], or a full
    [b, 1, s_q, s_kv] mask: q length = rows with any False, kv length = columns with any False;
    the full form is right padding iff it equals the outer OR of its row and column padding and
    both are right padding.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask shape {mask.shape}: need [b, 1, 1, s] or [b, 1, s_q, s_kv]")
    if mask_kv is not None:
        mask_kv = np.asarray(mask_kv, dtype=bool)
        if mask.shape[2] != 1 or mask_kv.ndim != 4 or mask_kv.shape[1:3] != (1, 1) or \
                mask_kv.shape[0] != mask.shape[0]:
            raise ValueError(f"mask {mask.shape} + mask_kv {mask_kv.shape}: need [b,1,1,s_q] and "
                             "[b,1,1,s_kv]")
        lq, okq = _right_padding_lengths(mask[:, 0, 0])
        lk, okk = _right_padding_lengths(mask_kv[:, 0, 0])
        return lq, lk, okq and okk
    if mask.shape[2] == 1:
        lq, ok = _right_padding_lengths(mask[:, 0, 0])
        return lq, lq.copy(), ok
    full = mask[:, 0]
    row_pad = full.all(axis=-1)  # [b, s_q]
    col_pad = full.all(axis=-2)  # [b, s_kv]
    lq, okq = _right_padding_lengths(row_pad)
    lk, okk = _right_padding_lengths(col_pad)
    outer = bool(np.array_equal(full, row_pad[:, :, None] | col_pad[:, None, :]))
    return lq, lk, okq and okk and outer


def is_right_padding(mask, mask_kv=None):
    return mask_lengths(mask, mask_kv)[2]


def mask_to_cu_seqlens(mask, mask_kv=None):
    """(cu_seqlens_q, cu_seqlens_kv) int32 [b+1]; ValueError if the mask is not right padding."""
    lq, lk, ok = mask_lengths(mask, mask_kv)
    if not ok:
        raise ValueError('mask is not right padding; use attn_mask_type="arbitrary"')
    return cu_seqlens(lq), cu_seqlens(lk)


# --------------------------------------------------------------------------------------------
# Tolerances (STYLE habit 2)
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Decoding with a KV cache (SPEC §10)
# --------------------------------------------------------------------------------------------


def decode_append(k_cache, v_cache, cache_seqlens, k_new=None, v_new=None, block_table=None):
    """The caches after the in-place append, and each sequence's keys/values in order.

    Returns (k_cache', v_cache', keys, values): copies of the caches with k_new/v_new written at
    positions cache_seqlens[b] ... (paged: page block_table[b, p // page_size], row
    p % page_size), and per sequence arrays [n_b, h_kv, d] / [n_b, h_kv, d_v].
    """
    kc, vc = np.array(k_cache, copy=True), np.array(v_cache, copy=True)
    lens = np.asarray(cache_seqlens, dtype=np.int64)
    s_new = 0 if k_new is None else k_new.shape[1]

    def where(bi, pos):
        if block_table is None:
            return bi, pos
        page_size = kc.shape[1]
        return int(block_table[bi][pos // page_size]), pos % page_size

    keys, values = [], []
    for bi in range(lens.shape[0]):
        for i in range(s_new):
            slab, row = where(bi, int(lens[bi]) + i)
            kc[slab, row] = k_new[bi, i]
            vc[slab, row] = v_new[bi, i]
        n = int(lens[bi]) + s_new
        rows = [where(bi, j) for j in range(n)]
        keys.append(np.stack([kc[a, r] for a, r in rows]) if n else kc[:0, 0])
        values.append(np.stack([vc[a, r] for a, r in rows]) if n else vc[:0, 0])
    return kc, vc, keys, values


def decode_attn(q, k_cache, v_cache, cache_seqlens, *, k_new=None, v_new=None, block_table=None,
                softmax_scale=None, window_size=None, compute_dtype=np.float64):
    """Reference decode attention (SPEC §10). Returns (out [b, s_q, h, d_v], lse [b, h, s_q],
    k_cache', v_cache').

    Sequence b has n_b = cache_seqlens[b] (+ s_q with k_new) keys; query i sees key j iff
    j <= n_b - s_q + i and, with window_size=(left, 0), j >= n_b - s_q + i - left: SPEC §2's
    causal_bottom_right rule with L_q = s_q, L_k = n_b, evaluated by attention_fwd.
    """
    b, s_q, h, _ = q.shape
    kc, vc, keys, values = decode_append(k_cache, v_cache, cache_seqlens, k_new, v_new, block_table)
    d_v = vc.shape[-1]
    out = np.zeros((b, s_q, h, d_v), dtype=compute_dtype)
    lse = np.full((b, h, s_q), -np.inf)
    window = None if window_size is None else (window_size[0], 0)
    for bi in range(b):
        if keys[bi].shape[0] == 0:
            continue
        o, l = attention_fwd(q[bi:bi + 1], keys[bi][None], values[bi][None],
                             attn_mask_type="causal_bottom_right", window_size=window,
                             softmax_scale=softmax_scale, compute_dtype=compute_dtype)
        out[bi], lse[bi] = o[0], l[0]
    return out, lse, kc, vc


def max_abs_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)))


def assert_close_fa(actual, ref64, naive, floor, name="output"):
    """FlashAttention's rule: |actual - ref64| <= 2 * |naive - ref64| + floor (max norms).

    `naive` is the reference run in the kernel's dtype; `floor` absorbs accumulation-order noise
    when the naive error is tiny.
    """
    err = max_abs_err(actual, ref64)
    naive_err = max_abs_err(naive, ref64)
    bound = 2.0 * naive_err + floor
    assert np.all(np.isfinite(np.asarray(actual, dtype=np.float64))), f"{name}: non-finite values"
    assert err <= bound, f"{name}: max error {err:.3e} > 2 * naive {naive_err:.3e} + {floor:.1e}"


# The one tolerance of attention outputs, for every backend and variant (CPU suite and GPU
# harness alike): FlashAttention's rule above, with
# * `naive` the reference run in the kernel's dtype. numpy has no bfloat16 arithmetic: a bfloat16
#   kernel's naive run is done in float16 and its error scaled by the ratio of the unit roundoffs
#   (2^-8 / 2^-11 = 8);
# * the floor, relative to max(1, max |ref|): accumulation-order noise where the naive error is
#   tiny (a row with one visible key is exact in any dtype). Gradients sum over a whole sequence
#   per element, the forward over one row of probabilities: twice the forward's floor there.
ATTN_NAIVE = {"float16": (np.float16, 1.0), "bfloat16": (np.float16, 8.0),
              "float32": (np.float32, 1.0)}
ATTN_FLOOR = {"float16": (2e-3, 4e-3), "bfloat16": (2e-3, 4e-3), "float32": (1e-5, 1e-5)}


def naive_compute_dtype(dtype):
    """The numpy dtype in which to run the naive reference of a kernel computing in `dtype`
    ("float16", "bfloat16", "float32")."""
    return ATTN_NAIVE[str(dtype)][0]


def assert_attention_close(actual, ref64, naive, dtype, name="output", grad=False):
    """FlashAttention's rule for attention outputs (out, lse, gradients) of a kernel computing in
    `dtype`: max |actual - ref64| <= 2 * scale * max |naive - ref64| + floor * max(1, max |ref64|),
    with `naive` from `naive_compute_dtype(dtype)`, and every value finite."""
    dtype = str(dtype)
    ref64 = np.asarray(ref64, dtype=np.float64)
    naive = np.asarray(naive, dtype=np.float64)
    scale = ATTN_NAIVE[dtype][1]
    floor = ATTN_FLOOR[dtype][1 if grad else 0] * max(1.0, float(np.max(np.abs(ref64), initial=0.0)))
    assert_close_fa(actual, ref64, ref64 + scale * (naive - ref64), floor, name=name)


# --------------------------------------------------------------------------------------------
# Pictures (docs/masks.md is generated from and checked against these)
# --------------------------------------------------------------------------------------------


def render_mask(masked):
    """Text picture of a bool [s_q, s_kv] mask in the canonical convention: 1 = masked out."""
    masked = np.asarray(masked, dtype=bool)
    lines = ["     " + " ".join(f"k{j}" for j in range(masked.shape[1]))]
    for i, row in enumerate(masked):
        lines.append(f"q{i} | " + "  ".join("1" if x else "0" for x in row))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# FlashMask column bounds (SPEC §9), written from the table there
# --------------------------------------------------------------------------------------------

def flashmask_dense(startend_row_indices, s_q, causal, num_heads=None):
    """bool [b, m, s_q, s_kv] (m the mask heads, or `num_heads` with query head i taking mask head
    i // (num_heads // m)), True = masked out by the intervals of SPEC §9's table:

      causal  C=1: rows >= LTS[j]          causal  C=2: LTS[j] <= row < LTE[j]
      !causal C=2: rows >= LTS[j] or rows < UTE[j]
      !causal C=4: LTS[j] <= row < LTE[j] or UTS[j] <= row < UTE[j]

    The causal rule itself is not included (pass attn_mask_type="causal" to attention_fwd).
    """
    se = np.asarray(startend_row_indices).astype(np.int64)
    if se.ndim != 4:
        raise ValueError(f"startend_row_indices: rank {se.ndim}, expected 4")
    b, m, s_kv, C = se.shape
    rows = np.arange(s_q)[None, None, :, None]          # [1, 1, s_q, 1]
    col = lambda k: se[:, :, None, :, k]                # [b, m, 1, s_kv]
    if causal and C == 1:
        masked = rows >= col(0)
    elif causal and C == 2:
        masked = (rows >= col(0)) & (rows < col(1))
    elif not causal and C == 2:
        masked = (rows >= col(0)) | (rows < col(1))
    elif not causal and C == 4:
        masked = ((rows >= col(0)) & (rows < col(1))) | ((rows >= col(2)) & (rows < col(3)))
    else:
        raise ValueError(f"startend_row_indices: C={C} with causal={causal} is not in SPEC §9")
    masked = np.broadcast_to(masked, (b, m, s_q, s_kv))
    if num_heads is not None and num_heads != m:
        masked = np.repeat(masked, num_heads // m, axis=1)
    return np.ascontiguousarray(masked)


def flashmask_attention_fwd(q, k, v, startend_row_indices, *, causal, **kw):
    """attention_fwd (bshd) with a FlashMask: the window/causal rule AND the intervals."""
    mask = flashmask_dense(startend_row_indices, np.asarray(q).shape[1], causal,
                           np.asarray(q).shape[2])
    return attention_fwd(q, k, v, attn_mask_type="causal" if causal else "no_mask",
                         attn_mask=mask, **kw)


def flashmask_attention_bwd(q, k, v, d_out, startend_row_indices, *, causal, **kw):
    """attention_bwd matching flashmask_attention_fwd."""
    mask = flashmask_dense(startend_row_indices, np.asarray(q).shape[1], causal,
                           np.asarray(q).shape[2])
    return attention_bwd(q, k, v, d_out, attn_mask_type="causal" if causal else "no_mask",
                         attn_mask=mask, **kw)
