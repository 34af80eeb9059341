"""DotProductAttention: the attention core as a layer (SPEC §4)."""

import math

import paddle
from paddle import nn

from .. import ops
# Module level: a function-local relative import fails once paddle.jit.to_static rewrites the
# function (full_graph=True: "attempted relative import with no known parent package").
from ..distributed import check_cp_args, context_parallel_attn
from ..masks import (
    BOTTOM_RIGHT_MASK_TYPES,
    PADDING_MASK_TYPES,
    check_set_window_size,
)
from ..ops import QKV_FORMATS
from . import _core
from ._core import given


class DotProductAttention(nn.Layer):
    """Scaled dot-product attention over per-head tensors, fused wherever the mask allows.

    Args:
        num_attention_heads: query heads `h`.
        kv_channels: head dim `d`; the default softmax scale is `1/sqrt(kv_channels)`.
        num_gqa_groups: kv heads `h_kv` (None = `h`); must divide `h` (GQA/MQA).
        attention_dropout: dropout probability on the attention probabilities, applied while
            `self.training`.
        attn_mask_type: one of SPEC §2's types.
        window_size: `(left, right)`, normalised by `check_set_window_size`.
        attention_type: "self" or "cross" (informational; masks are taken per SPEC §4).
        qkv_format: "bshd" `[b, s, h, d]`, "sbhd" `[s, b, h, d]` or "thd" `[t, h, d]`.
        softmax_scale: None = `1/sqrt(kv_channels)`.
        deterministic: bitwise-repeatable backward.
        backend: passed to `paddle_te.ops.fused_attn` ("auto", "flash", "cudnn", "unfused", "cpu").
        cp_group, cp_global_ranks, cp_comm_type, cp_stream: context parallelism (SPEC §11,
            docs/context_parallel.md); see `set_context_parallel_group`.

    Masks are in the canonical convention: True = masked out.
    """

    def __init__(
        self,
        num_attention_heads,
        kv_channels,
        num_gqa_groups=None,
        attention_dropout=0.0,
        attn_mask_type="causal",
        window_size=None,
        attention_type="self",
        qkv_format="bshd",
        softmax_scale=None,
        deterministic=False,
        backend="auto",
        cp_group=None,
        cp_global_ranks=None,
        cp_comm_type="p2p",
        cp_stream=None,
    ):
        super().__init__()
        num_attention_heads = _core.check_positive_int(num_attention_heads, "num_attention_heads")
        kv_channels = _core.check_positive_int(kv_channels, "kv_channels")
        if num_gqa_groups is None:
            num_gqa_groups = num_attention_heads
        num_gqa_groups = _core.check_positive_int(num_gqa_groups, "num_gqa_groups")
        if num_attention_heads % num_gqa_groups != 0:
            raise ValueError(
                f"num_gqa_groups={num_gqa_groups!r}: must be a positive int that divides "
                f"num_attention_heads={num_attention_heads}"
            )
        attention_dropout = _core.check_probability(attention_dropout, "attention_dropout")
        _core.check_choice(attention_type, "attention_type", ("self", "cross"))
        _core.check_choice(qkv_format, "qkv_format", QKV_FORMATS)
        if softmax_scale is not None:
            softmax_scale = _core.check_positive_float(softmax_scale, "softmax_scale")
        _core.check_bool(deterministic, "deterministic")
        _core.check_backend(backend)
        # Validates the mask type too (unknown type -> ValueError); warns for a causal type
        # given a right window, once, here.
        self.window_size = check_set_window_size(attn_mask_type, window_size)
        self.num_attention_heads = num_attention_heads
        self.kv_channels = kv_channels
        self.num_gqa_groups = num_gqa_groups
        self.attention_dropout = float(attention_dropout)
        self.attn_mask_type = attn_mask_type
        self.attention_type = attention_type
        self.qkv_format = qkv_format
        self.softmax_scale = (
            float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(kv_channels)
        )
        self.deterministic = deterministic
        self.backend = backend
        # The name users know the mask by, for messages (TransformerLayer's cross-attention says
        # enc_dec_attn_mask).
        self._mask_name = "attention_mask"
        self.set_context_parallel_group(cp_group, cp_global_ranks, cp_stream, cp_comm_type)

    def set_context_parallel_group(self, cp_group, cp_global_ranks=None, cp_stream=None,
                                   cp_comm_type="p2p"):
        """Shard the sequence over `cp_group` (a paddle.distributed group of N >= 2 ranks; None
        turns context parallelism off). Each rank then passes its shard of q, k, v (chunks r and
        2N-1-r of 2N, `paddle_te.distributed.get_batch_on_this_cp_rank`) and gets its shard of the
        output. `cp_comm_type`: "p2p" (ring) or "all_gather". `cp_stream` is accepted for
        TransformerEngine compatibility: Paddle's asynchronous send/recv already run on the
        group's communication stream, which is what the ring overlaps with its compute."""
        self.cp_global_ranks = check_cp_args(cp_group, cp_global_ranks, cp_comm_type, cp_stream)
        self.cp_group = cp_group
        self.cp_comm_type = cp_comm_type
        self.cp_stream = cp_stream

    def extra_repr(self):
        return (
            f"heads={self.num_attention_heads}, kv_heads={self.num_gqa_groups}, "
            f"kv_channels={self.kv_channels}, attn_mask_type={self.attn_mask_type}, "
            f"window_size={self.window_size}, qkv_format={self.qkv_format}"
        )

    def forward(
        self,
        query,
        key,
        value,
        attention_mask=None,
        *,
        cu_seqlens_q=None,
        cu_seqlens_kv=None,
        max_seqlen_q=None,
        max_seqlen_kv=None,
        core_attention_bias=None,
        startend_row_indices=None,
    ):
        """query `[b, s_q, h, d]` / `[s_q, b, h, d]` / `[t_q, h, d]` per `qkv_format`; key and value
        the same with `h_kv` heads. Returns the output in query's layout with `d_v` channels.

        `startend_row_indices` (int32 `[b, mask_heads, s_kv, C]`, SPEC §9): a FlashMask for layers
        whose attn_mask_type is 'no_mask' or 'causal' (bshd/sbhd), run by `flashmask_attention`."""
        fmt = self.qkv_format
        mask_type = self.attn_mask_type
        self._check_qkv(query, key, value)
        if given(startend_row_indices):
            return self._flashmask_forward(query, key, value, attention_mask, cu_seqlens_q,
                                           cu_seqlens_kv, core_attention_bias,
                                           startend_row_indices)
        # Keyword-only parameters are never reassigned: paddle.jit.to_static (AST mode) does not
        # see them as arguments and would reset them to undefined in front of a branch that
        # assigns them. Locals carry the values instead.
        cu_q, cu_kv = cu_seqlens_q, cu_seqlens_kv
        max_q, max_kv = max_seqlen_q, max_seqlen_kv
        if not given(cu_kv) and given(cu_q) and self.attention_type == "self":
            cu_kv = cu_q
        has_cu = given(cu_q) or given(cu_kv)
        if self.cp_group is not None:
            return self._forward_cp(query, key, value, attention_mask, cu_q, cu_kv,
                                    core_attention_bias)

        mask_q = mask_kv = arbitrary_mask = None
        if given(attention_mask):
            if has_cu:
                raise ValueError(
                    f"{self._mask_name} and cu_seqlens_q/cu_seqlens_kv were both given: pass one "
                    "(a padding mask is converted to cu_seqlens)"
                )
            if fmt == "thd":
                raise ValueError(
                    f"{self._mask_name} with qkv_format='thd': thd takes cu_seqlens_q/cu_seqlens_kv"
                )
            if mask_type in PADDING_MASK_TYPES:
                mask_q, mask_kv = self._check_padding_mask(attention_mask, query, key)
            elif mask_type == "arbitrary":
                arbitrary_mask = self._check_arbitrary_mask(attention_mask, query, key)
            else:
                raise ValueError(
                    f"{self._mask_name} was given but attn_mask_type={mask_type!r} takes no mask: "
                    f"use a 'padding*' type for a padding mask or 'arbitrary' for any other "
                    f"(True = masked out)"
                )
        if mask_type == "arbitrary" and has_cu:
            raise ValueError(
                "cu_seqlens_q/cu_seqlens_kv with attn_mask_type='arbitrary': the arbitrary mask "
                f"is passed as {self._mask_name}"
            )

        bias = core_attention_bias
        if given(bias):
            _core.check_tensor(bias, "core_attention_bias", "a float paddle.Tensor")
            if not _core.is_float(bias):
                raise TypeError(
                    f"core_attention_bias has dtype {bias.dtype}: must be a float tensor"
                )
            if fmt == "thd":
                raise ValueError(
                    "core_attention_bias with qkv_format='thd' is not supported: use bshd/sbhd"
                )
            _core.check_broadcastable(bias, "core_attention_bias", self._bhss(query, key),
                                      "[b, h, s_q, s_kv]")

        query, key, value, bias = _core.amp_cast(query, key, value, bias)

        if given(mask_q):
            # Padding mask -> cu_seqlens; the padded sizes are exact upper bounds (no sync).
            cu_q, cu_kv = _mask_to_cu_seqlens(mask_q, mask_kv, self._padding_mask_names(
                attention_mask))
            seq_axis = 1 if fmt == "bshd" else 0
            if not given(max_q):
                max_q = _core.static_dim(query, seq_axis)
            if not given(max_kv):
                max_kv = _core.static_dim(key, seq_axis)

        if not given(arbitrary_mask) and not given(bias):
            fused_type = "no_mask" if mask_type == "arbitrary" else mask_type
            return ops.fused_attn(
                query,
                key,
                value,
                cu_seqlens_q=cu_q,
                cu_seqlens_kv=cu_kv,
                max_seqlen_q=max_q,
                max_seqlen_kv=max_kv,
                qkv_format=fmt,
                attn_mask_type=fused_type,
                window_size=self.window_size,
                softmax_scale=self.softmax_scale,
                dropout=self.attention_dropout,
                training=self.training,
                deterministic=self.deterministic,
                backend=self.backend,
            )

        # Unfused path: arbitrary mask and/or bias (bshd/sbhd only).
        if mask_type in PADDING_MASK_TYPES and not given(cu_q):
            raise ValueError(
                f"attn_mask_type={mask_type!r} needs a padding {self._mask_name} or cu_seqlens_q/"
                f"cu_seqlens_kv"
            )
        if mask_type not in PADDING_MASK_TYPES and has_cu:
            raise ValueError(
                f"cu_seqlens_q/cu_seqlens_kv with attn_mask_type={mask_type!r}: only 'padding*' "
                f"types take sequence lengths"
            )
        seq_axis = 1 if fmt == "bshd" else 0
        self._check_unfused_seqlens(query, key, cu_q, cu_kv, max_q, max_kv, seq_axis)
        s_q, s_kv = _core.dim(query, seq_axis), _core.dim(key, seq_axis)
        len_q = len_kv = None
        if given(cu_q):
            len_q = _core.seqlens_from_cu(cu_q)
            len_kv = _core.seqlens_from_cu(cu_kv)
        masked, causal = _core.type_rule(s_q, s_kv, self.window_size, mask_type, len_q, len_kv)
        if given(arbitrary_mask):
            masked = _core.or_masks(
                _core.window_mask(s_q, s_kv, self.window_size, mask_type in BOTTOM_RIGHT_MASK_TYPES),
                arbitrary_mask,
            )
            causal = None
        q = _core.to_bhsd(query, fmt)
        k = _core.to_bhsd(key, fmt)
        v = _core.to_bhsd(value, fmt)
        out, _, _ = _core.unfused_attention_bhsd(
            q,
            k,
            v,
            masked=masked,
            bias=bias,
            scale=self.softmax_scale,
            dropout=self.attention_dropout,
            training=self.training,
            causal=causal,
        )
        return _core.from_bhsd(out, fmt)

    def _flashmask_forward(self, query, key, value, attention_mask, cu_q, cu_kv, bias, startend):
        fmt, mask_type = self.qkv_format, self.attn_mask_type
        if self.cp_group is not None:
            raise ValueError(
                "startend_row_indices with cp_group: context parallelism takes the mask types of "
                "SPEC §11 (no_mask, causal, padding, padding_causal, windows), not column bounds"
            )
        if mask_type not in ("no_mask", "causal"):
            raise ValueError(
                f"startend_row_indices with attn_mask_type={mask_type!r}: takes 'no_mask' or "
                "'causal' (the column bounds are the mask)"
            )
        if fmt == "thd":
            raise ValueError("startend_row_indices with qkv_format='thd': use bshd or sbhd")
        for v, n in ((attention_mask, self._mask_name), (cu_q, "cu_seqlens_q"),
                     (cu_kv, "cu_seqlens_kv"), (bias, "core_attention_bias")):
            if given(v):
                raise ValueError(f"startend_row_indices and {n} were both given: the column bounds "
                                 "are the whole mask")
        if tuple(self.window_size) not in ((-1, -1), (-1, 0)):
            raise ValueError(
                f"startend_row_indices with window_size={self.window_size}: put the window into "
                "the column bounds (paddle_te.masks.sliding_window_mask)"
            )
        if mask_type == "no_mask" and tuple(self.window_size) == (-1, 0):
            # (-1, 0) makes 'no_mask' top-left causal (SPEC §2), but the bounds' table depends on
            # `causal`: C = 2 means (LTS, UTE) without it and (LTS, LTE) with it.
            raise ValueError(
                "startend_row_indices on a 'no_mask' layer with window_size=(-1, 0) (causal): "
                "use attn_mask_type='causal', whose bounds table the indices then follow"
            )
        q, k, v = (x if fmt == "bshd" else x.transpose([1, 0, 2, 3]) for x in (query, key, value))
        out = ops.flashmask_attention(
            q, k, v, startend, dropout=self.attention_dropout, causal=mask_type == "causal",
            training=self.training, softmax_scale=self.softmax_scale,
        )
        return out if fmt == "bshd" else out.transpose([1, 0, 2, 3])

    def _forward_cp(self, query, key, value, attention_mask, cu_q, cu_kv, bias):
        """Context-parallel forward: this rank's shards in, this rank's output shard out."""
        if given(bias):
            raise ValueError("core_attention_bias is not supported with context parallelism (cp_group)")
        if given(attention_mask):
            if cu_q is not None or cu_kv is not None:
                raise ValueError(
                    f"{self._mask_name} and cu_seqlens_q/cu_seqlens_kv were both given: pass one"
                )
            if self.attn_mask_type not in PADDING_MASK_TYPES:
                raise ValueError(
                    f"{self._mask_name} was given but attn_mask_type={self.attn_mask_type!r} takes "
                    "no mask (context parallelism takes padding masks of the whole sequences)"
                )
            # A padding mask of the whole sequences (not of the shard): [b, 1, 1, S], a
            # (mask_q, mask_kv) tuple, or [b, 1, S, S].
            if isinstance(attention_mask, (tuple, list)):
                cu_q, cu_kv = ops.mask_to_cu_seqlens(attention_mask[0], attention_mask[1])
            else:
                cu_q, cu_kv = ops.mask_to_cu_seqlens(attention_mask)
        query, key, value, _ = _core.amp_cast(query, key, value, None)
        return context_parallel_attn(
            query,
            key,
            value,
            cp_group=self.cp_group,
            cp_global_ranks=self.cp_global_ranks,
            cp_comm_type=self.cp_comm_type,
            cu_seqlens_q=cu_q,
            cu_seqlens_kv=cu_kv,
            qkv_format=self.qkv_format,
            attn_mask_type=self.attn_mask_type,
            window_size=self.window_size,
            softmax_scale=self.softmax_scale,
            dropout=self.attention_dropout,
            training=self.training,
            deterministic=self.deterministic,
            backend=self.backend,
        )

    # ---- validation helpers -------------------------------------------------------------
    @paddle.jit.not_to_static
    def _bhss(self, query, key):
        """[b, h, s_q, s_kv] of this call (None where not known yet)."""
        seq_axis = 1 if self.qkv_format == "bshd" else 0
        b = _core.static_dim(query, 0 if self.qkv_format == "bshd" else 1)
        return [b, self.num_attention_heads, _core.static_dim(query, seq_axis),
                _core.static_dim(key, seq_axis)]

    @paddle.jit.not_to_static
    def _check_qkv(self, query, key, value):
        fmt = self.qkv_format
        nd = 3 if fmt == "thd" else 4
        layout = {"bshd": "[b, s, h, d]", "sbhd": "[s, b, h, d]", "thd": "[t, h, d]"}[fmt]
        for name, t in (("query", query), ("key", key), ("value", value)):
            _core.check_tensor(t, name)
            if t.ndim != nd:
                raise ValueError(
                    f"{name} has shape {list(t.shape)}: qkv_format={fmt!r} takes rank {nd} {layout}"
                )
            if not _core.is_float(t):
                raise TypeError(
                    f"{name} has dtype {t.dtype}: allowed float16, bfloat16, float32, float64"
                )
            # (Under auto_cast, float32 inputs join the autocast dtype: amp_cast below.)
            if t.dtype != query.dtype and not paddle.amp.is_autocast_enabled():
                raise TypeError(f"{name} has dtype {t.dtype}: must equal query's {query.dtype}")
        h_axis = nd - 2
        hq = _core.static_dim(query, h_axis)
        if hq is not None and hq != self.num_attention_heads:
            raise ValueError(
                f"query has shape {list(query.shape)}: {hq} heads, but "
                f"num_attention_heads={self.num_attention_heads}"
            )
        for name, t in (("key", key), ("value", value)):
            hh = _core.static_dim(t, h_axis)
            if hh is not None and hh != self.num_gqa_groups:
                raise ValueError(
                    f"{name} has shape {list(t.shape)}: {hh} heads, but "
                    f"num_gqa_groups={self.num_gqa_groups}"
                )
        dq, dk = _core.static_dim(query, nd - 1), _core.static_dim(key, nd - 1)
        if dq is not None and dq != self.kv_channels:
            raise ValueError(
                f"query has shape {list(query.shape)}: head dim {dq}, but "
                f"kv_channels={self.kv_channels}"
            )
        if dk is not None and dq is not None and dk != dq:
            raise ValueError(
                f"key has shape {list(key.shape)}: head dim {dk} must equal query's {dq}"
            )
        seq_axis = 0 if fmt in ("sbhd", "thd") else 1
        sk, sv = _core.static_dim(key, seq_axis), _core.static_dim(value, seq_axis)
        if sk is not None and sv is not None and sk != sv:
            raise ValueError(
                f"value has shape {list(value.shape)}: {sv} tokens, but key has {sk}"
            )
        if fmt != "thd":
            b_axis = 1 - seq_axis
            bq = _core.static_dim(query, b_axis)
            for name, t in (("key", key), ("value", value)):
                bb = _core.static_dim(t, b_axis)
                if bq is not None and bb is not None and bb != bq:
                    raise ValueError(
                        f"{name} has shape {list(t.shape)}: batch {bb} must equal query's {bq}"
                    )

    @paddle.jit.not_to_static
    def _check_unfused_seqlens(self, query, key, cu_q, cu_kv, max_q, max_kv, seq_axis):
        """The unfused path (bias / arbitrary mask) reads cu_seqlens as they are: check them and
        max_seqlen as fused_attn does (values where that needs no device->host copy)."""
        b = _core.static_dim(query, 1 - seq_axis)
        for side, cu, t, bound in (("q", cu_q, query, max_q), ("kv", cu_kv, key, max_kv)):
            bound = ops._check_optional_int(bound, f"max_seqlen_{side}")
            s = _core.static_dim(t, seq_axis)
            if bound is not None and s is not None and bound > s:
                raise ValueError(f"max_seqlen_{side}={bound}: exceeds the padded sequence length {s}")
            if given(cu_q) or given(cu_kv):
                if not given(cu):
                    raise ValueError(f"cu_seqlens_{side}=None: required with cu_seqlens_"
                                     f"{'kv' if side == 'q' else 'q'} in a cross-attention call")
                ops._check_cu_seqlens(cu, f"cu_seqlens_{side}", self.qkv_format, b, s, s,
                                      bound if bound is not None else s, query)

    def _padding_mask_names(self, mask):
        """What the caller calls the (mask_q, mask_kv) pair of `mask`, for conversion errors."""
        name = self._mask_name
        if isinstance(mask, (tuple, list)):
            return (f"{name}[0] (mask_q)", f"{name}[1] (mask_kv)")
        return (name, name)

    @paddle.jit.not_to_static
    def _check_padding_mask(self, mask, query, key):
        """A padding mask: a bool [b, 1, 1, s] / [b, 1, s_q, s_kv] tensor or a (mask_q, mask_kv)
        tuple of [b, 1, 1, s_q] and [b, 1, 1, s_kv]. Returns (mask_q_or_full, mask_kv_or_None)."""
        name = self._mask_name
        b, _, s_q, s_kv = self._bhss(query, key)
        if isinstance(mask, (tuple, list)):
            if len(mask) != 2:
                raise ValueError(
                    f"{name} is a sequence of {len(mask)}: a padding mask tuple is "
                    f"(mask_q, mask_kv)"
                )
            _check_bool_4d(mask[0], f"{name}[0] (mask_q)")
            _check_bool_4d(mask[1], f"{name}[1] (mask_kv)")
            _check_mask_dims(mask[0], f"{name}[0] (mask_q)", [b, 1, 1, s_q], "[b, 1, 1, s_q]")
            _check_mask_dims(mask[1], f"{name}[1] (mask_kv)", [b, 1, 1, s_kv], "[b, 1, 1, s_kv]")
            return mask[0], mask[1]
        _check_bool_4d(mask, name)
        if _core.static_dim(mask, 2) == 1:
            if s_q is not None and s_kv is not None and s_q != s_kv:
                raise ValueError(
                    f"{name} has shape {list(mask.shape)}: one [b, 1, 1, s] mask serves queries "
                    f"and keys alike, but s_q={s_q} != s_kv={s_kv}; pass (mask_q, mask_kv) or a "
                    f"full [b, 1, s_q, s_kv] mask"
                )
            _check_mask_dims(mask, name, [b, 1, 1, s_q], "[b, 1, 1, s]")
        else:
            _check_mask_dims(mask, name, [b, 1, s_q, s_kv], "[b, 1, s_q, s_kv]")
        return mask, None

    @paddle.jit.not_to_static
    def _check_arbitrary_mask(self, mask, query, key):
        name = self._mask_name
        if isinstance(mask, (tuple, list)):
            raise TypeError(
                f"{name} is a tuple: attn_mask_type='arbitrary' takes one bool tensor "
                "broadcastable to [b, h, s_q, s_kv]"
            )
        _core.check_tensor(mask, name, "a bool paddle.Tensor")
        if mask.dtype != paddle.bool:
            raise TypeError(
                f"{name} has dtype {mask.dtype}: attn_mask_type='arbitrary' takes a bool "
                f"mask (True = masked out); pass additive values as core_attention_bias"
            )
        _core.check_broadcastable(mask, name, self._bhss(query, key), "[b, h, s_q, s_kv]")
        return mask


@paddle.jit.not_to_static
def _check_mask_dims(mask, name, want, desc):
    """Every known dim of a padding mask equals the call's (None = not known)."""
    shape = list(mask.shape)
    for size, w in zip(shape, want):
        if size is not None and size >= 0 and w is not None and size != w:
            wanted = "[" + ", ".join("?" if x is None else str(x) for x in want) + "]"
            raise ValueError(f"{name} has shape {shape}: expected {desc} = {wanted} for this call")


def _mask_to_cu_seqlens(mask_q, mask_kv, names):
    """The padding mask -> cu_seqlens conversion in a function of its own. In dygraph it may
    check the mask on the host (paddle_te.masks.set_mask_check), which under paddle.jit.to_static's
    default (SOT) mode breaks the graph; a break in the middle of forward() made the resumed
    forward fail inside SOT (UnboundLocalError '___graph_fn_saved_orig_1', Paddle 3.3.1), a break
    inside a helper does not."""
    return _core.padding_mask_to_cu_seqlens(mask_q, mask_kv, names)


def _check_bool_4d(m, name):
    if not _core.is_tensor(m):
        raise TypeError(f"{name} is a {type(m).__name__}: must be a bool paddle.Tensor")
    if m.dtype != paddle.bool:
        raise TypeError(
            f"{name} has dtype {m.dtype}: padding masks are bool (True = padding)"
        )
    if m.ndim != 4:
        raise ValueError(
            f"{name} has shape {list(m.shape)}: padding masks are [b, 1, 1, s] or "
            f"[b, 1, s_q, s_kv]"
        )


__all__ = ["DotProductAttention"]
