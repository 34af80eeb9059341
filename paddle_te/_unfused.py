"""The unfused attention path: matmul, paddle_te's masked softmax (+ bias, dropout), matmul.

The one implementation behind ``fused_attn(backend="unfused")``, ``auto``'s fallback (float32 on
the GPU, a call no fused backend can take) and the layers' arbitrary masks, additive biases and
attention weights. It follows SPEC §2's visibility rule, so a call gives the same result here as
in the fused kernels (up to dropout's random stream: this path uses Paddle's dropout). Built from
Paddle ops only: it works in dygraph, in static mode and under ``paddle.jit.to_static``.

Masks here use the canonical convention: a boolean element that is True is masked out.

Import note: this module and ``paddle_te.ops`` import each other (the softmax ops live there, and
``fused_attn`` routes here). Neither uses the other at import time, only inside functions.
"""

import paddle
import paddle.nn.functional as F
from paddle.jit.marker import unified

from . import _ops_lib, ops
from .masks import BOTTOM_RIGHT_MASK_TYPES, CAUSAL_MASK_TYPES


def given(x):
    """`x is not None`, as a value.

    The layers test optional tensors with `if given(x):` rather than `if x is not None:`. Python
    3.11 compiles the latter to a jump on the tensor itself (POP_JUMP_IF_NONE), which
    `paddle.jit.to_static`'s default SOT mode (Paddle 3.3) treats as a data-dependent branch and
    breaks the graph at; a jump on a plain bool does not. For the same reason the traced code has
    no closures or generator expressions (SOT cannot resume a broken frame that has them).
    """
    return x is not None


def dim(x, axis):
    """Size of `x` along `axis`: a Python int when static, else a 0-D int tensor (static mode)."""
    n = x.shape[axis]
    if n is not None and n >= 0:
        return n
    return paddle.shape(x)[axis]


@paddle.jit.not_to_static
def static_dim(x, axis):
    """Size of `x` along `axis` when it is known at trace time, else None.

    Not converted by to_static: traced, its conditional would become a graph `cond` with a None
    branch (dynamic lengths make `x.shape[axis]` a tensor there)."""
    n = x.shape[axis]
    return n if (n is not None and n >= 0) else None


@unified
def on_gpu(t):
    """Whether `t` lives (dygraph) or will run (static graph: the expected place) on a GPU.
    (Marked unified: to_static calls it as it is; reading a place is a graph break under SOT.)"""
    if paddle.in_dynamic_mode():
        return t.place.is_gpu_place()
    return paddle.device.get_device().startswith("gpu")


def window_mask(s_q, s_kv, window, bottom_right, len_q=None, len_kv=None):
    """Boolean masked-out tensor for the SPEC §2 rule, or None when nothing is masked.

    Query i sees key j iff i + δ − left <= j <= i + δ + right (a side of −1 is unbounded), and,
    when lengths are given, i < len_q and j < len_kv. δ is 0 (top-left) or len_kv − len_q
    (bottom-right), with the padded sizes standing in for missing lengths.

    s_q, s_kv: ints (or 0-D int tensors in static mode); len_q, len_kv: int [b] tensors or None.
    Returns bool [b or 1, 1, s_q, s_kv], True = masked out.
    """
    left, right = window
    has_len = given(len_q)
    if left < 0 and right < 0 and not has_len:
        return None
    i = paddle.arange(s_q, dtype="int64").reshape([1, 1, -1, 1])  # [1, 1, s_q, 1]
    j = paddle.arange(s_kv, dtype="int64").reshape([1, 1, 1, -1])  # [1, 1, 1, s_kv]
    if has_len:
        lq = len_q.astype("int64").reshape([-1, 1, 1, 1])  # [b, 1, 1, 1]
        lk = len_kv.astype("int64").reshape([-1, 1, 1, 1])
    if bottom_right:
        if has_len:
            delta = lk - lq
        else:
            delta = paddle.to_tensor(s_kv, dtype="int64") - paddle.to_tensor(s_q, dtype="int64")
        center = i + delta
    else:
        center = i
    masked = None
    if left >= 0:
        masked = or_masks(masked, j < center - left)
    if right >= 0:
        masked = or_masks(masked, j > center + right)
    if has_len:
        masked = or_masks(masked, paddle.logical_or(i >= lq, j >= lk))
    return masked


def type_rule(s_q, s_kv, window, mask_type, len_q=None, len_kv=None):
    """(masked, causal) for the unfused path: a plain causal type (no window, no lengths) maps to
    the dedicated causal softmax kernels (`causal` = "top_left"/"bottom_right", masked None);
    anything else to an explicit mask from `window_mask` (or None)."""
    bottom_right = mask_type in BOTTOM_RIGHT_MASK_TYPES
    # A side past the int32 range is unbounded, as the fused path reads it (window_mask itself
    # computes in int64, where such a side masks nothing either).
    window = _ops_lib.op_window(window)
    if mask_type in CAUSAL_MASK_TYPES and window == (-1, 0) and not given(len_q):
        return None, ("bottom_right" if bottom_right else "top_left")
    return window_mask(s_q, s_kv, window, bottom_right, len_q, len_kv), None


def or_masks(a, b):
    """Union of two masked-out masks, either of which may be None (nothing masked); ranks are
    aligned to 4 first."""
    if not given(a):
        return b
    if not given(b):
        return a
    return paddle.logical_or(as4d(a), as4d(b))


def as4d(m):
    """Prepend size-1 axes up to rank 4."""
    while m.ndim < 4:
        m = m.unsqueeze(0)
    return m


def to_bhsd(x, qkv_format):
    """[b, s, h, d] (bshd) or [s, b, h, d] (sbhd) -> [b, h, s, d]."""
    return x.transpose([0, 2, 1, 3] if qkv_format == "bshd" else [1, 2, 0, 3])


def from_bhsd(x, qkv_format):
    """[b, h, s, d] -> [b, s, h, d] (bshd) or [s, b, h, d] (sbhd)."""
    return x.transpose([0, 2, 1, 3] if qkv_format == "bshd" else [2, 0, 1, 3])


def seqlens_from_cu(cu):
    """int32 [b+1] cumulative lengths -> int [b] lengths."""
    return cu[1:] - cu[:-1]


def expand_bool(mask, shape):
    """paddle.expand of a bool tensor. Static mode refuses a bool input that is marked as needing
    a gradient (a graph input usually is); a mask never has one."""
    mask.stop_gradient = True
    return paddle.expand(mask, shape)


def unfused_attention_bhsd(q, k, v, *, masked, bias, scale, dropout, training, causal=None,
                           want_lse=False):
    """Matmul + paddle_te masked softmax (+ bias, dropout) + matmul, heads first.

    q: [b, h, s_q, d]; k: [b, h_kv, s_kv, d]; v: [b, h_kv, s_kv, d_v] with h % h_kv == 0.
    masked: bool broadcastable to [b, h, s_q, s_kv] (True = masked out) or None.
    bias: float broadcastable to [b, h, s_q, s_kv], added after scaling, or None.
    causal: None, "top_left" or "bottom_right" -- a causal mask with no other masking, which has
    a dedicated softmax kernel (used only when `masked` is None).
    Returns (out [b, h, s_q, d_v] in q's dtype, probabilities after dropout [b, h, s_q, s_kv],
    lse float32 [b, h, s_q] or None unless `want_lse`: -inf in rows that see no key).
    """
    out_dtype = q.dtype
    if not on_gpu(q) and q.dtype in (paddle.float16, paddle.bfloat16):
        # Paddle's CPU matmul has no float16/bfloat16 kernels: computed in float32 (SPEC §3).
        q, k, v = q.astype("float32"), k.astype("float32"), v.astype("float32")
    h = static_dim(q, 1)
    h_kv = static_dim(k, 1)
    if h is not None and h_kv is not None and h != h_kv:
        # GQA/MQA: query head i uses kv head i // (h / h_kv) (SPEC §8).
        k = _repeat_heads(k, h // h_kv)
        v = _repeat_heads(v, h // h_kv)
    scores = paddle.matmul(q, k, transpose_y=True)  # [b, h, s_q, s_kv]
    softmax_scale = scale
    if given(bias):
        scores = scores * scale + bias.astype(scores.dtype)
        softmax_scale = 1.0
    if not given(masked):
        if causal == "top_left":
            probs = ops.scaled_upper_triang_masked_softmax(scores, scale=softmax_scale)
        elif causal == "bottom_right":
            probs = ops.scaled_aligned_causal_masked_softmax(scores, scale=softmax_scale)
        else:
            probs = ops.scaled_softmax(scores, scale=softmax_scale)
    else:
        probs = _masked_softmax(scores, masked, softmax_scale)
    lse = None
    if want_lse:
        # (Keyword-only parameters are never reassigned: paddle.jit.to_static's AST mode would
        # reset them to undefined in front of a branch that assigns them.)
        lse_mask = masked
        if not given(masked) and given(causal):
            lse_mask = window_mask(dim(q, 2), dim(k, 2), (-1, 0), causal == "bottom_right")
        lse = _lse(scores, lse_mask, softmax_scale)
    if dropout > 0.0:
        probs = F.dropout(probs, dropout, training=training, mode="upscale_in_train")
    out = paddle.matmul(probs, v)
    if out.dtype != out_dtype:
        out = out.astype(out_dtype)
    return out, probs, lse


def _lse(scores, masked, scale):
    """float32 [b, h, s_q]: log-sum-exp of the visible scaled scores, -inf where none is visible
    (SPEC §8). No gradient flows through it."""
    with paddle.no_grad():
        z = (scores.detach() * scale).astype("float32")
        neg_inf = paddle.full([1], float("-inf"), dtype="float32")
        if not given(masked):
            return paddle.logsumexp(z, axis=-1)
        masked = as4d(masked)
        z = paddle.where(masked, neg_inf, z)
        any_visible = paddle.logical_not(masked).any(axis=-1)
        lse = paddle.logsumexp(z, axis=-1)
        return paddle.where(any_visible, lse, neg_inf)


def _repeat_heads(x, group):
    """[b, h_kv, s, d] -> [b, h_kv * group, s, d], each kv head repeated `group` times in a row.
    (Written with expand + reshape: repeat_interleave takes a tensor of repeats under SOT.)"""
    b, h_kv, s, d = dim(x, 0), dim(x, 1), dim(x, 2), dim(x, 3)
    x = x.unsqueeze(2).expand([b, h_kv, group, s, d])
    return x.reshape([b, h_kv * group, s, d])


def _masked_softmax(scores, masked, scale):
    """scores [b, h, s_q, s_kv]; masked bool broadcastable to it. The softmax op takes a mask of
    shape [b or 1, 1, s_q, s_kv]: a per-head mask is handled by folding heads into the batch."""
    masked = as4d(masked)
    b, h = dim(scores, 0), dim(scores, 1)
    s_q, s_kv = dim(scores, 2), dim(scores, 3)
    mask_h = static_dim(masked, 1)
    if mask_h == 1:
        masked = expand_bool(masked, [-1, 1, s_q, s_kv])
        return ops.scaled_masked_softmax(scores, masked, scale=scale)
    masked = expand_bool(masked, [b, h, s_q, s_kv]).reshape([-1, 1, s_q, s_kv])
    folded = scores.reshape([-1, 1, s_q, s_kv])
    probs = ops.scaled_masked_softmax(folded, masked, scale=scale)
    return probs.reshape([b, h, s_q, s_kv])


def fused_attn_unfused(q, k, v, *, cu_q, cu_kv, qkv_format, mask_type, window, scale, dropout,
                       want_lse):
    """``fused_attn``'s unfused path (bshd/sbhd): q, k, v in the layout, returns (out, lse)."""
    s_axis = 1 if qkv_format == "bshd" else 0
    s_q, s_kv = dim(q, s_axis), dim(k, s_axis)
    len_q = len_kv = None
    if given(cu_q):
        len_q, len_kv = seqlens_from_cu(cu_q), seqlens_from_cu(cu_kv)
    masked, causal = type_rule(s_q, s_kv, window, mask_type, len_q, len_kv)
    out, _, lse = unfused_attention_bhsd(
        to_bhsd(q, qkv_format), to_bhsd(k, qkv_format), to_bhsd(v, qkv_format),
        masked=masked, bias=None, scale=scale, dropout=dropout, training=True, causal=causal,
        want_lse=want_lse,
    )
    return from_bhsd(out, qkv_format), lse
