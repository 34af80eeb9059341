"""MultiHeadAttention: a drop-in for `paddle.nn.MultiHeadAttention` (SPEC §4).

It subclasses Paddle's layer so that the constructor, the sublayers (`q_proj`, `k_proj`,
`v_proj`, `out_proj`), the parameter names, `Cache`/`StaticCache` and `isinstance` checks are
Paddle's own; `forward`, `compute_kv` and `gen_cache` are ours. Masks follow Paddle's convention
(bool True = keep, int 1 = keep, float added to the scores) and are converted to the canonical
one (True = masked out) here, at the boundary.
"""

import paddle

from .. import ops
from ..masks import (
    BOTTOM_RIGHT_MASK_TYPES,
    MASK_TYPES,
    PADDING_MASK_TYPES,
    check_set_window_size,
)
from . import _core, _kv_cache
from ._core import given

# A float mask element at or below this counts as masked out: it covers -inf and the -1e9 that
# Paddle's own bool/int -> float conversion (used by paddle.nn.Transformer*) writes. Any such
# element contributes exp(<= -1e9) == 0 to the softmax in every float dtype, so the only visible
# effect of the threshold is on rows whose keys are all masked (0 here, SPEC §8).
MASKED_FLOAT_THRESHOLD = -1e9

# With a Cache the queries are the last s_q of the s_kv positions, so "causal" means bottom-right.
_WITH_CACHE = {"causal": "causal_bottom_right", "padding_causal": "padding_causal_bottom_right"}


def paddle_mask_to_canonical(attn_mask, name="attn_mask"):
    """Paddle's mask convention -> (masked bool tensor, additive float bias or None).

    bool: True = keep; int: 0 = masked, non-zero = keep; float: <= -1e9 (incl. -inf) = masked,
    other values added to the scores.
    """
    if attn_mask.ndim > 4:
        raise ValueError(
            f"{name} has shape {list(attn_mask.shape)}: must be broadcastable to "
            f"[batch_size, num_heads, query_length, key_length]"
        )
    if attn_mask.dtype == paddle.bool:
        return paddle.logical_not(attn_mask), None
    if _core.is_int(attn_mask):
        return attn_mask == 0, None
    if _core.is_float(attn_mask):
        masked = attn_mask <= MASKED_FLOAT_THRESHOLD
        bias = paddle.where(masked, paddle.zeros_like(attn_mask), attn_mask)
        return masked, bias
    raise TypeError(
        f"{name} has dtype {attn_mask.dtype}: must be bool (True = keep), an int type "
        f"(1 = keep) or a float type (added to the scores)"
    )


class MultiHeadAttention(paddle.nn.MultiHeadAttention):
    """`paddle.nn.MultiHeadAttention` with paddle_te's attention core.

    Same constructor, sublayers, parameters, forward, return values, caches and mask semantics as
    Paddle's layer. Keyword-only hints:

    * `attn_mask_type`: a SPEC §2 type describing the mask. `"causal"` / `"padding"` (and their
      combinations) let the fused kernels run without looking at the mask's values: a causal hint
      replaces the mask by the causal rule (bottom-right when decoding with a `Cache`), a padding
      hint reads sequence lengths from a `[b, 1, 1, s_kv]` key-padding mask or a full
      `[b, 1, s_q, s_kv]` padding mask. `None` (default): with no mask the fused path runs; with a
      mask the unfused path honours any mask exactly.
    * `window_size`: `(left, right)` sliding window on top of the mask.
    * `backend`: passed to `paddle_te.ops.fused_attn`.
    """

    def __init__(
        self,
        embed_dim,
        num_heads,
        dropout=0.0,
        kdim=None,
        vdim=None,
        need_weights=False,
        weight_attr=None,
        bias_attr=None,
        *,
        attn_mask_type=None,
        window_size=None,
        backend="auto",
    ):
        # Checked here first: Paddle's own constructor asserts (AssertionError) or fails later.
        embed_dim = _core.check_positive_int(embed_dim, "embed_dim")
        num_heads = _core.check_positive_int(num_heads, "num_heads")
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}"
            )
        dropout = _core.check_probability(dropout, "dropout")
        kdim = _core.check_optional_positive_int(kdim, "kdim")
        vdim = _core.check_optional_positive_int(vdim, "vdim")
        _core.check_bool(need_weights, "need_weights")
        if attn_mask_type is not None:
            _core.check_choice(attn_mask_type, "attn_mask_type", MASK_TYPES)
        _core.check_backend(backend)
        super().__init__(
            embed_dim,
            num_heads,
            dropout=dropout,
            kdim=kdim,
            vdim=vdim,
            need_weights=need_weights,
            weight_attr=weight_attr,
            bias_attr=bias_attr,
        )
        self.attn_mask_type = attn_mask_type
        # Warns here, once, for a causal hint with a right window.
        self.window_size = check_set_window_size(attn_mask_type or "no_mask", window_size)
        self.backend = backend

    def extra_repr(self):
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"attn_mask_type={self.attn_mask_type}, window_size={self.window_size}"
        )

    def compute_kv(self, key, value):
        """key [b, s, kdim], value [b, s, vdim] -> k, v [b, num_heads, s, head_dim] (Paddle's
        layout, which is also the layout of the caches)."""
        k = _core.split_heads(self.k_proj(key), self.num_heads, self.head_dim)
        v = _core.split_heads(self.v_proj(value), self.num_heads, self.head_dim)
        return k.transpose([0, 2, 1, 3]), v.transpose([0, 2, 1, 3])

    #: The preallocated cache of `gen_cache(..., max_length=N)` (SPEC §10).
    InplaceCache = _kv_cache.InplaceCache

    def gen_cache(self, key, value=None, type=paddle.nn.MultiHeadAttention.Cache, *,
                  max_length=None):
        """Same contract as Paddle: `StaticCache` of `compute_kv(key, value)`; an empty `Cache`
        `[b, num_heads, 0, head_dim]` when `value` is None; else `Cache(key, value)`.

        With `max_length` (type `Cache` only): an `InplaceCache` whose buffers
        `[b, max_length, num_heads, head_dim]` are allocated once; each incremental step appends
        its keys and values in place (`paddle_te.ops.decode_attn`) instead of concatenating."""
        _core.check_tensor(key, "key")
        if type not in (self.Cache, self.StaticCache):
            raise TypeError(
                f"type={type!r}: must be MultiHeadAttention.Cache or MultiHeadAttention.StaticCache"
            )
        if max_length is not None:
            if type != self.Cache:
                raise ValueError("type=StaticCache with max_length: gen_cache(max_length=...) "
                                 "preallocates a Cache; a StaticCache does not grow")
            return _kv_cache.gen_inplace_cache(self, key, value, max_length)
        if type == self.StaticCache:
            return self.StaticCache(*self.compute_kv(key, value))
        if not given(value):
            b = _core.dim(key, 0)
            empty = paddle.zeros([b, self.num_heads, 0, self.head_dim], dtype=key.dtype)
            return self.Cache(empty, empty)
        return self.Cache(key, value)

    def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
        """query [b, s_q, embed_dim]; key [b, s_kv, kdim]; value [b, s_kv, vdim]. Returns `out`,
        or a tuple `(out[, weights][, cache])` exactly as Paddle's layer does."""
        if not given(key):
            key = query
        if not given(value):
            value = query
        self._check_inputs(query, key, value, attn_mask, cache)
        has_mask = given(attn_mask)
        hint = self.attn_mask_type
        if hint in _WITH_CACHE and isinstance(cache, self.Cache):
            hint = _WITH_CACHE[hint]
        if hint == "no_mask" and has_mask:
            raise ValueError(
                "attn_mask was given but the layer's attn_mask_type hint is 'no_mask': drop the "
                "mask or the hint"
            )

        # q: [b, s_q, h, d]; the caches hold k, v as [b, h, s, d]. Steps on a cache decode
        # (decode_attn, inference only) unless they train: dropout, or inputs that want gradients.
        train = _kv_cache.trains(self, query, key, value)
        q = _core.split_heads(self.q_proj(query), self.num_heads, self.head_dim)
        if isinstance(cache, self.InplaceCache):
            out, cache = _kv_cache.step(self, q, key, value, attn_mask, cache, hint, train)
            return self.out_proj(_core.merge_heads(out)), cache
        if isinstance(cache, self.StaticCache):
            k, v = cache.k, cache.v
            kv_layout = "bhsd"
        elif isinstance(cache, self.Cache):
            k, v = self.compute_kv(key, value)
            k = paddle.concat([cache.k, k], axis=2)
            v = paddle.concat([cache.v, v], axis=2)
            cache = self.Cache(k, v)
            kv_layout = "bhsd"
        elif given(cache):
            raise TypeError(
                f"cache is a {type(cache).__name__}: must be None, MultiHeadAttention.Cache or "
                f"MultiHeadAttention.StaticCache"
            )
        else:
            k = _core.split_heads(self.k_proj(key), self.num_heads, self.head_dim)
            v = _core.split_heads(self.v_proj(value), self.num_heads, self.head_dim)
            kv_layout = "bshd"

        use_fused = not self.need_weights and (
            not has_mask or hint not in (None, "arbitrary")
        )
        if use_fused:
            out = self._fused(q, k, v, kv_layout, attn_mask, hint, decode=not train)
            weights = None
        else:
            out, weights = self._unfused(q, k, v, kv_layout, attn_mask, hint)

        out = self.out_proj(_core.merge_heads(out))
        outs = [out]
        if self.need_weights:
            outs.append(weights)
        if given(cache):
            outs.append(cache)
        return out if len(outs) == 1 else tuple(outs)

    @paddle.jit.not_to_static
    def _check_inputs(self, query, key, value, attn_mask, cache):
        """[b, s_q, embed_dim], [b, s_kv, kdim], [b, s_kv, vdim]; a mask broadcastable to
        [b, num_heads, s_q, s_kv] (s_kv counting a Cache's earlier keys)."""
        static = isinstance(cache, self.StaticCache)  # its k, v replace key and value
        checked = [("query", query, self.embed_dim, "embed_dim")]
        if not static:
            checked += [("key", key, self.kdim, "kdim"), ("value", value, self.vdim, "vdim")]
        for name, t, width, width_name in checked:
            _core.check_tensor(t, name)
            if t.ndim != 3:
                raise ValueError(
                    f"{name} has shape {list(t.shape)}: must be [batch_size, length, {width_name}]"
                )
            last = _core.static_dim(t, 2)
            if last is not None and last != width:
                raise ValueError(
                    f"{name} has shape {list(t.shape)}: its last dim must be "
                    f"{width_name}={width}"
                )
            _core.check_input_dtype(t, name, self.q_proj.weight.dtype)
        b = _core.static_dim(query, 0)
        for name, t in () if static else (("key", key), ("value", value)):
            bb = _core.static_dim(t, 0)
            if b is not None and bb is not None and bb != b:
                raise ValueError(f"{name} has shape {list(t.shape)}: batch {bb} must equal query's {b}")
        s_k, s_v = (None, None) if static else (_core.static_dim(key, 1), _core.static_dim(value, 1))
        if s_k is not None and s_v is not None and s_k != s_v:
            raise ValueError(f"value has shape {list(value.shape)}: length {s_v} must equal key's {s_k}")
        if isinstance(cache, (self.Cache, self.StaticCache)):
            self._check_cache(cache, b)
        if not given(attn_mask):
            return
        _core.check_tensor(attn_mask, "attn_mask")
        if static:
            s_kv = _core.static_dim(cache.k, 2)
        elif isinstance(cache, self.InplaceCache):
            # Any key length up to the buffer's: the step pads the mask to the whole buffer.
            s_kv = None
            length = _core.static_dim(attn_mask, attn_mask.ndim - 1)
            if length is not None and length > cache.max_length:
                raise ValueError(
                    f"attn_mask has shape {list(attn_mask.shape)}: its key length {length} exceeds "
                    f"the preallocated cache's max_length={cache.max_length}"
                )
        elif isinstance(cache, self.Cache):
            prev = _core.static_dim(cache.k, 2)
            s_kv = None if prev is None or s_k is None else prev + s_k
        else:
            s_kv = s_k
        _core.check_broadcastable(
            attn_mask, "attn_mask", [b, self.num_heads, _core.static_dim(query, 1), s_kv],
            "[batch_size, num_heads, query_length, key_length]")

    @paddle.jit.not_to_static
    def _check_cache(self, cache, b):
        """A Cache / StaticCache: k and v [b, num_heads, length, head_dim] of one length, in the
        dtype of the keys they join (else paddle.concat / the op fail with Paddle's messages)."""
        kind = type(cache).__name__
        want = [b, self.num_heads, None, self.head_dim]
        lengths = []
        for part in ("k", "v"):
            name = f"cache.{part}"
            t = _core.check_tensor(getattr(cache, part), name)
            shape = list(t.shape)
            if len(shape) != 4 or any(
                w is not None and d is not None and d >= 0 and d != w for d, w in zip(shape, want)
            ):
                raise ValueError(
                    f"{name} has shape {shape}: a {kind} holds [batch_size, num_heads, length, "
                    f"head_dim] = {_core._show(want)}"
                )
            _core.check_input_dtype(t, name, self.k_proj.weight.dtype)
            lengths.append(_core.static_dim(t, 2))
        if None not in lengths and lengths[0] != lengths[1]:
            raise ValueError(
                f"cache.v has shape {list(cache.v.shape)}: its length {lengths[1]} must equal "
                f"cache.k's {lengths[0]}"
            )

    def _fused(self, q, k, v, kv_layout, attn_mask, hint, decode=True):
        if kv_layout == "bhsd" and decode and _kv_cache.decodes(self, q, attn_mask, hint):
            return _kv_cache.attend_cache(self, q, k, v, hint)  # incremental step (SPEC §10)
        if kv_layout == "bhsd":
            k, v = k.transpose([0, 2, 1, 3]), v.transpose([0, 2, 1, 3])
        q, k, v = _core.amp_cast(q, k, v)
        mask_type = "no_mask" if hint in (None, "arbitrary") else hint
        cu_q = cu_kv = None
        max_q = max_kv = None
        if mask_type in PADDING_MASK_TYPES:
            if not given(attn_mask):
                # No mask: nothing is padded.
                mask_type = {
                    "padding": "no_mask",
                    "padding_causal": "causal",
                    "padding_causal_bottom_right": "causal_bottom_right",
                }[mask_type]
            else:
                cu_q, cu_kv = self._padding_cu_seqlens(attn_mask, q, k)
                max_q, max_kv = _core.static_dim(q, 1), _core.static_dim(k, 1)
        return ops.fused_attn(
            q,
            k,
            v,
            cu_seqlens_q=cu_q,
            cu_seqlens_kv=cu_kv,
            max_seqlen_q=max_q,
            max_seqlen_kv=max_kv,
            qkv_format="bshd",
            attn_mask_type=mask_type,
            window_size=self.window_size,
            softmax_scale=self.head_dim**-0.5,
            dropout=float(self.dropout),
            training=self.training,
            backend=self.backend,
        )  # [b, s_q, h, d]

    def _padding_cu_seqlens(self, attn_mask, q, k):
        """A Paddle-convention padding mask -> (cu_seqlens_q, cu_seqlens_kv).

        A mask with a single query row ([.., 1, s_kv]) masks keys only, so every query row is kept
        (as in Paddle, padded queries still attend to the valid keys); a full [.., s_q, s_kv] mask
        gives query lengths too.
        """
        masked, _ = paddle_mask_to_canonical(attn_mask)
        masked = _core.as4d(masked)
        if _core.static_dim(masked, 1) not in (1, None):
            raise ValueError(
                f"attn_mask has shape {list(attn_mask.shape)}: with attn_mask_type="
                f"{self.attn_mask_type!r} the mask must be the same for every head "
                f"([b, 1, 1, s_kv] or [b, 1, s_q, s_kv])"
            )
        b, s_q, s_kv = _core.dim(q, 0), _core.dim(q, 1), _core.dim(k, 1)
        if _core.static_dim(masked, 2) == 1:
            mask_kv = _core.expand_bool(masked, [b, 1, 1, s_kv])
            mask_q = paddle.zeros([b, 1, 1, s_q], dtype="bool")
            return _core.padding_mask_to_cu_seqlens(mask_q, mask_kv, ("attn_mask", "attn_mask"))
        return _core.padding_mask_to_cu_seqlens(_core.expand_bool(masked, [b, 1, s_q, s_kv]),
                                                None, ("attn_mask", "attn_mask"))

    def _unfused(self, q, k, v, kv_layout, attn_mask, hint):
        q = q.transpose([0, 2, 1, 3])  # [b, h, s_q, d]
        if kv_layout == "bshd":
            k, v = k.transpose([0, 2, 1, 3]), v.transpose([0, 2, 1, 3])
        masked = bias = None
        if given(attn_mask):
            masked, bias = paddle_mask_to_canonical(attn_mask)
        q, k, v, bias = _core.amp_cast(q, k, v, bias)
        mask_type = "no_mask" if hint is None else hint
        # The hint's rule (causal, window) on top of the mask; padding comes from the mask itself.
        rule, causal = _core.type_rule(_core.dim(q, 2), _core.dim(k, 2), self.window_size,
                                       mask_type)
        if given(masked):
            rule = _core.window_mask(_core.dim(q, 2), _core.dim(k, 2), self.window_size,
                                     mask_type in BOTTOM_RIGHT_MASK_TYPES)
            causal = None
        masked = _core.or_masks(masked, rule)
        out, probs, _ = _core.unfused_attention_bhsd(
            q,
            k,
            v,
            masked=masked,
            bias=bias,
            scale=self.head_dim**-0.5,
            dropout=float(self.dropout),
            training=self.training,
            causal=causal,
        )
        return out.transpose([0, 2, 1, 3]), probs  # [b, s_q, h, d], [b, h, s_q, s_kv]

