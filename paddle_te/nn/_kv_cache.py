"""The preallocated KV cache of the MultiHeadAttention drop-in (SPEC §10).

`MultiHeadAttention.gen_cache(key, value=None, type=Cache, max_length=N)` returns an
`InplaceCache`: k and v buffers `[b, N, num_heads, head_dim]` allocated once, and the int32
lengths `[b]` of the cached prefix. Each incremental step writes its new keys and values into
the buffers in place through `paddle_te.ops.decode_attn` and returns the same buffers with the
lengths advanced, where Paddle's own `Cache` concatenates (copying the whole cache every step).
The outputs are Paddle's: a step attends to the cached keys plus its own.
"""

import collections

import paddle

from .. import ops
from .._decode import DECODE_BACKENDS
from ..masks import CAUSAL_MASK_TYPES
from . import _core
from ._core import given


class InplaceCache(collections.namedtuple("InplaceCache", ["k_cache", "v_cache", "seqlens"])):
    """k_cache, v_cache `[b, max_length, num_heads, head_dim]` (written in place); seqlens int32
    `[b]`: positions filled. `k` / `v` give the filled part in the layout of Paddle's `Cache`
    (`[b, num_heads, length, head_dim]`, a copy; dygraph only, it reads the length)."""

    __slots__ = ()

    @property
    def max_length(self):
        return self.k_cache.shape[1]

    def _filled(self, buf):
        n = int(self.seqlens.max()) if self.seqlens.shape[0] else 0
        return buf[:, :n].transpose([0, 2, 1, 3])

    @property
    def k(self):
        return self._filled(self.k_cache)

    @property
    def v(self):
        return self._filled(self.v_cache)


def gen_inplace_cache(mha, key, value, max_length):
    """An InplaceCache of capacity `max_length`: empty (`value` None, `key` gives batch, dtype and
    place) or holding `key`/`value` `[b, num_heads, s, head_dim]` (Paddle's Cache layout)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length={max_length!r}: must be a positive int")
    b = _core.dim(key, 0)
    shape = [b, max_length, mha.num_heads, mha.head_dim]
    k_cache = paddle.zeros(shape, dtype=key.dtype)
    v_cache = paddle.zeros(shape, dtype=key.dtype)
    if not given(value):
        return InplaceCache(k_cache, v_cache, paddle.zeros([b], dtype="int32"))
    s = _core.static_dim(key, 2)
    if s is None:
        raise ValueError("gen_cache(key, value, max_length=...): key's length (dim 2) must be known")
    if s > max_length:
        raise ValueError(f"gen_cache: key holds {s} positions, more than max_length={max_length}")
    if trains(mha, key, value):
        # Training (key/value want gradients): the prefix stays differentiable, as in Paddle's
        # Cache(key, value).
        rest = paddle.zeros([b, max_length - s, mha.num_heads, mha.head_dim], dtype=key.dtype)
        return InplaceCache(paddle.concat([key.transpose([0, 2, 1, 3]), rest], axis=1),
                            paddle.concat([value.transpose([0, 2, 1, 3]), rest], axis=1),
                            paddle.full([b], s, dtype="int32"))
    # Write the given prefix with one decode_attn append (its attention output is not needed).
    q = paddle.zeros([b, s, mha.num_heads, mha.head_dim], dtype=key.dtype)
    ops.decode_attn(q, k_cache, v_cache, paddle.zeros([b], dtype="int32"),
                    k_new=key.transpose([0, 2, 1, 3]), v_new=value.transpose([0, 2, 1, 3]))
    return InplaceCache(k_cache, v_cache, paddle.full([b], s, dtype="int32"))


def _pad_mask(masked, bias, length, max_length):
    """Canonical mask/bias over `length` keys -> over `max_length` keys (the rest masked)."""
    pad = max_length - length
    if pad == 0:
        return masked, bias
    shape = list(masked.shape[:-1]) + [pad]
    masked = paddle.concat([masked, paddle.ones(shape, dtype="bool")], axis=-1)
    if given(bias):
        bias = paddle.concat([bias, paddle.zeros(list(bias.shape[:-1]) + [pad], dtype=bias.dtype)],
                             axis=-1)
    return masked, bias


def step(mha, q, key, value, attn_mask, cache, hint, train=False):
    """One incremental step on an InplaceCache. q `[b, s_q, h, d]`; returns (out `[b, s_q, h, d]`,
    the advanced cache). `train` (trains()): the step draws dropout and stays differentiable."""
    if mha.need_weights:
        raise ValueError(
            "need_weights=True with a preallocated cache (gen_cache(..., max_length=N)): the "
            "weights would span the whole buffer; use gen_cache without max_length"
        )
    dtype = cache.k_cache.dtype
    k_new = _core.split_heads(mha.k_proj(key), mha.num_heads, mha.head_dim).astype(dtype)
    v_new = _core.split_heads(mha.v_proj(value), mha.num_heads, mha.head_dim).astype(dtype)
    q = q.astype(dtype)
    s_q = _core.static_dim(q, 1)
    causal = hint in CAUSAL_MASK_TYPES
    window = mha.window_size
    plain = (not given(attn_mask) and (s_q == 1 or causal) and (causal or tuple(window) == (-1, -1))
             and not train)
    scale = mha.head_dim**-0.5
    if plain:
        # The step's queries are the last s_q positions: bottom-right causal (the only rule that
        # differs from "see every key" is for s_q > 1, which needs a causal hint to come here).
        out = ops.decode_attn(q, cache.k_cache, cache.v_cache, cache.seqlens, k_new=k_new,
                              v_new=v_new, softmax_scale=scale,
                              window_size=(window[0], 0) if causal else None,
                              backend=_decode_backend(mha.backend))
        return out, InplaceCache(cache.k_cache, cache.v_cache, cache.seqlens + _core.dim(q, 1))

    # A mask, a non-causal multi-token step or a training step (dropout, gradients): append, then
    # run the general path over the whole buffer with the keys past each length masked out.
    if train and needs_grad(q, k_new, v_new):
        # Gradients reach this step's keys and values, and earlier steps' through the buffers, as
        # through Paddle's concatenating Cache: the buffers are replaced, not written in place
        # (a copy per step, as the concatenation; the backward keeps what each step read).
        k_all, v_all = _append_copy(cache, k_new, v_new)
    else:
        ops.decode_attn(q, cache.k_cache, cache.v_cache, cache.seqlens, k_new=k_new, v_new=v_new,
                        softmax_scale=scale, backend=_decode_backend(mha.backend))
        k_all, v_all = cache.k_cache, cache.v_cache
    n = cache.seqlens + _core.dim(q, 1)  # [b] keys after the append
    max_length = cache.max_length
    beyond = paddle.arange(max_length, dtype="int32").unsqueeze(0) >= n.unsqueeze(1)
    masked = beyond.unsqueeze([1, 2])  # [b, 1, 1, max_length]
    bias = None
    if given(attn_mask):
        from .multihead import paddle_mask_to_canonical

        user_masked, bias = paddle_mask_to_canonical(attn_mask)
        user_masked = _core.as4d(user_masked)
        length = _core.static_dim(user_masked, 3)
        if length is None:
            raise ValueError("attn_mask with a preallocated cache: its key length must be known")
        user_masked, bias = _pad_mask(user_masked, _core.as4d(bias) if given(bias) else None,
                                      length, max_length)
        masked = paddle.logical_or(masked, user_masked)
    if causal and not given(attn_mask):
        # The step's queries are the last s_q positions of each sequence: row i sees keys
        # < n - s_q + i + 1 (and, with a left window, none before n - s_q + i - left).
        rows = paddle.arange(_core.dim(q, 1), dtype="int32").reshape([1, 1, -1, 1])
        keys = paddle.arange(max_length, dtype="int32").reshape([1, 1, 1, -1])
        last = (n - _core.dim(q, 1)).reshape([-1, 1, 1, 1]) + rows
        masked = paddle.logical_or(masked, keys > last)
        if window[0] >= 0:
            masked = paddle.logical_or(masked, keys < last - window[0])
    float_mask = paddle.where(masked, paddle.full([1], float("-inf"), dtype=dtype),
                              bias.astype(dtype) if given(bias) else paddle.zeros([1], dtype=dtype))
    out, _ = mha._unfused(q, k_all, v_all, "bshd", float_mask, None)
    return out, InplaceCache(k_all, v_all, n)


def _append_copy(cache, k_new, v_new):
    """New buffers: the cache's with k_new / v_new `[b, s_q, h, d]` at positions seqlens[b] ...
    seqlens[b] + s_q - 1 (differentiable in both). The capacity is checked as decode_attn does;
    in dygraph by reading the lengths (training steps are not the decoding hot path)."""
    b, s_q, h, d = (_core.dim(k_new, i) for i in range(4))
    if paddle.in_dynamic_mode() and b:
        longest = int(cache.seqlens.max()) + s_q
        if longest > cache.max_length:
            raise ValueError(
                f"cache: a step of {s_q} positions after {longest - s_q} cached ones exceeds the "
                f"preallocated max_length={cache.max_length}"
            )
    pos = cache.seqlens.unsqueeze(1) + paddle.arange(s_q, dtype="int32").unsqueeze(0)  # [b, s_q]
    idx = pos.astype("int64").reshape([b, s_q, 1, 1]).expand([b, s_q, h, d])
    return (paddle.put_along_axis(cache.k_cache, idx, k_new, axis=1),
            paddle.put_along_axis(cache.v_cache, idx, v_new, axis=1))


def needs_grad(*tensors):
    """Whether autograd will ask for a gradient of any of the tensors."""
    return paddle.is_grad_enabled() and any(not t.stop_gradient for t in tensors)


def trains(mha, *inputs):
    """Whether a step on a cache trains, and so runs as Paddle's layer does rather than through
    decode_attn (inference only: no dropout, no gradient): training mode with dropout, or with
    layer inputs (query, key, value) that want gradients. Inputs that want none (token
    embeddings fed under paddle.no_grad, data tensors) decode even in training mode, so the
    parameters then get no gradient through the step; eval mode always decodes."""
    return mha.training and (float(mha.dropout) > 0.0 or needs_grad(*inputs))


def decodes(mha, q, attn_mask, hint):
    """Whether a step on a Paddle `Cache` / `StaticCache` (keys [b, h, s_kv, d]) is a decoding
    step that decode_attn runs exactly: one query row, no mask, and either no window or a causal
    hint (whose window is bottom-right, as decode_attn's)."""
    if given(attn_mask) or _core.static_dim(q, 1) != 1:
        return False
    causal = hint in CAUSAL_MASK_TYPES
    return causal or (hint in (None, "no_mask", "padding") and tuple(mha.window_size) == (-1, -1))


def attend_cache(mha, q, k, v, hint):
    """decode_attn over the concatenated cache k, v [b, h, s_kv, d] (no append): with one query
    row, "every key" and bottom-right causal are the same rule."""
    # decode_attn takes its caches in place: give it tensors of their own in its layout (a
    # transposed view is refused as an in-place argument in static graphs, and in dygraph the op
    # would receive a contiguous copy anyway).
    k, v = paddle.assign(k.transpose([0, 2, 1, 3])), paddle.assign(v.transpose([0, 2, 1, 3]))
    q, k, v = _core.amp_cast(q, k, v)
    seqlens = paddle.full([_core.dim(k, 0)], _core.dim(k, 1), dtype="int32")
    window = (mha.window_size[0], 0) if hint in CAUSAL_MASK_TYPES else None
    return ops.decode_attn(q, k, v, seqlens, softmax_scale=mha.head_dim**-0.5,
                           window_size=window, backend=_decode_backend(mha.backend))


def _decode_backend(backend):
    return backend if backend in DECODE_BACKENDS else "auto"
