"""paddle_te as an attention implementation of PaddleFormers models (docs/paddleformers.md).

PaddleFormers' models (Llama, Qwen2/3, ERNIE 4.5, DeepSeek-V3, Gemma3, GLM, ...) look their
attention function up in a registry, ``paddleformers.nn.attention.AttentionInterface``, under
``config._attn_implementation``. :func:`register` adds ``"paddle_te"`` there::

    import paddle_te
    paddle_te.integrations.paddleformers.register()
    config._attn_implementation = "paddle_te"  # before the model is built (ERNIE 4.5 reads it then)
    model = Ernie4_5ForCausalLM(config)

paddleformers is imported by :func:`register` (and :func:`apply`), never by ``import paddle_te``.

:func:`attention_forward` is the registered function. It takes what the models pass -- q, k, v as
``[b, h, s, d]`` with k/v carrying the ``h_kv`` kv heads (GQA runs natively: nothing is
repeated), a dense additive ``attention_mask`` or FlashMask ``attn_mask_startend_row_indices`` or
neither, ``dropout``, ``scaling``, and the extras some models add -- and returns
``([b, s_q, h * d_v], None)``.
"""

import weakref

import paddle

from .. import ops
from .. import _unfused
from ._mask_plan import Plan, additive_parts, bias_of, plan_for_mask

__all__ = ["NAME", "register", "is_registered", "apply", "attention_forward"]

#: The ``config._attn_implementation`` value that selects paddle_te.
NAME = "paddle_te"


def _interface():
    try:
        from paddleformers.nn.attention.interface import AttentionInterface
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "paddle_te.integrations.paddleformers needs paddleformers (pip install paddleformers): "
            f"{err}"
        ) from err
    return AttentionInterface


def register():
    """Register :func:`attention_forward` as ``"paddle_te"`` in PaddleFormers'
    ``AttentionInterface`` (every model's lookup sees it). Idempotent. Returns ``"paddle_te"``."""
    interface = _interface()
    if interface._global_mapping.get(NAME) is not attention_forward:
        interface.register(NAME, attention_forward)
    return NAME


def is_registered():
    """Whether ``"paddle_te"`` is registered (False when paddleformers is not installed)."""
    try:
        interface = _interface()
    except ImportError:
        return False
    return interface._global_mapping.get(NAME) is attention_forward


def apply(model):
    """Switch an already built PaddleFormers model to paddle_te: :func:`register`, set
    ``model.config._attn_implementation``, and update the copies that some models take of it
    when they are built (ERNIE 4.5's attention layers keep ``attn_implementation``). Returns
    the model. (Setting ``config._attn_implementation`` before building needs none of this.)"""
    register()
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"model: {type(model).__name__} has no .config; expected a PaddleFormers model")
    configs = {id(config): config}
    for layer in model.sublayers(include_self=True):
        cfg = getattr(layer, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            configs[id(cfg)] = cfg
        if isinstance(getattr(layer, "attn_implementation", None), str):
            layer.attn_implementation = NAME
    for cfg in configs.values():
        cfg._attn_implementation = NAME
    return model


# ------------------------------------------------------------------------------------------------
# the attention function
# ------------------------------------------------------------------------------------------------
# What the CUDA decode kernels take (docs/api.md, decode_attn); other GPU calls run fused_attn.
_GPU_DECODE_DTYPES = ("float16", "bfloat16")
_GPU_DECODE_HDIMS = (64, 128, 256)

_UNSUPPORTED = {
    # Extras some PaddleFormers models pass to other implementations, and why they are refused.
    "cu_seq_lens_q": "varlen (thd) inputs are passed only to 'flash_attention_2'",
    "cu_seq_lens_k": "varlen (thd) inputs are passed only to 'flash_attention_2'",
}


def _bshd(x):
    """[b, h, s, d] -> [b, s, h, d]: a view; free when x is itself a transposed [b, s, h, d]
    projection (the custom ops copy only inputs that are not contiguous)."""
    return x.transpose([0, 2, 1, 3])


def _needs_grad(*tensors):
    if not paddle.in_dynamic_mode():
        return True
    return paddle.is_grad_enabled() and any(t is not None and not t.stop_gradient for t in tensors)


def _check_inputs(query, key, value):
    for name, t in (("query", query), ("key", key), ("value", value)):
        if len(t.shape) != 4:
            raise ValueError(f"{name} has shape {list(t.shape)}: expected [b, h, s, d]")
    b, h, s_q, d = query.shape
    bk, h_kv, s_k, dk = key.shape
    bv, hv, sv, _ = value.shape
    if bk != b or bv != b or hv != h_kv or sv != s_k:
        raise ValueError(
            f"key {list(key.shape)} and value {list(value.shape)} must be [b, h_kv, s_k, d] with "
            f"query's batch {b}"
        )
    if dk != d:
        raise ValueError(f"key has head dim {dk}: must equal query's {d}")
    if h_kv == 0 or h % h_kv:
        raise ValueError(f"key has {h_kv} heads: must divide query's {h} heads (GQA)")
    return b, h, h_kv, s_q, s_k


def _window_left(sliding_window):
    """PaddleFormers' sliding_window = W: a query sees itself and the W - 1 keys before it."""
    if sliding_window is None:
        return -1
    if isinstance(sliding_window, bool) or not isinstance(sliding_window, int) or sliding_window < 1:
        raise ValueError(f"sliding_window={sliding_window!r}: must be None or an int >= 1")
    return sliding_window - 1


def attention_forward(module, query, key, value, attention_mask=None, dropout=0.0, scaling=None,
                      is_causal=None, attn_mask_startend_row_indices=None, sliding_window=None,
                      sink=None, **kwargs):
    """PaddleFormers' attention function signature, on paddle_te.

    * ``query`` ``[b, h, s_q, d]``, ``key`` ``[b, h_kv, s_k, d]``, ``value`` ``[b, h_kv, s_k, d_v]``
      (``h % h_kv == 0``; d_v may differ from d). Returns ``([b, s_q, h * d_v], None)``.
    * ``scaling``: the softmax scale (default ``1/sqrt(d)``); ``dropout``: the attention-probability
      dropout, applied while ``module.training``.
    * Masks -- one of:
      - none: causal for ``s_q > 1`` (aligned bottom-right: with a KV cache the queries are the last
        ``s_q`` positions), all keys for ``s_q = 1``; ``is_causal=False`` (or
        ``module.is_causal = False``) turns causality off;
      - ``attn_mask_startend_row_indices`` ``[b, m, s_k, C]`` (or ``[b, m, s_k]``): FlashMask
        column bounds, run by ``flashmask_attention`` (causal for C = 1, not for C = 4, C = 2
        follows ``is_causal``, default causal, as PaddleFormers' ``flashmask``);
      - ``attention_mask``: dense additive float ``[b|1, 1|h, s_q, s_k]`` (0 keeps, ``<= -1e4``
        masks out) or bool (True keeps): run as sequence lengths + a window, or as FlashMask
        column bounds, when it is such a mask (checked element for element), else as a mask plus
        bias on the unfused path.
    * ``sliding_window=W`` (a query sees itself and the W - 1 keys before it) applies on top of
      the mask; ``sink`` (per-head logits, GPT-OSS) is supported without gradients (inference).
    """
    for name, why in _UNSUPPORTED.items():
        if kwargs.get(name) is not None:
            raise ValueError(f"{name}: not supported by the 'paddle_te' attention ({why})")
    b, h, h_kv, s_q, s_k = _check_inputs(query, key, value)
    d_v = value.shape[-1]
    training = bool(getattr(module, "training", True))
    p = float(dropout or 0.0) if training else 0.0
    left = _window_left(sliding_window)
    if sink is not None and _needs_grad(query, key, value, sink):
        raise ValueError(
            "sink: attention sinks are supported without gradients only (inference, "
            "paddle.no_grad()); train such models with _attn_implementation='eager'"
        )
    if attention_mask is not None and attn_mask_startend_row_indices is not None:
        raise ValueError(
            "attention_mask and attn_mask_startend_row_indices were both given: pass one (a mask "
            "is never silently ignored)"
        )
    q, k, v = _bshd(query), _bshd(key), _bshd(value)
    want_lse = sink is not None
    if attn_mask_startend_row_indices is not None:
        out, lse = _run_startend(q, k, v, attn_mask_startend_row_indices, is_causal, left, p,
                                 scaling, want_lse)
    else:
        causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", True))
        if attention_mask is None:
            if left >= 0 and not causal:
                raise ValueError(
                    f"sliding_window={sliding_window}: supported with causal attention only"
                )
            plan = Plan("fused", mask_type="causal_bottom_right" if causal else "no_mask",
                        window=(left, 0) if causal else (-1, -1))
        else:
            plan = _plan_dense(attention_mask, b, h, h_kv, s_q, s_k, left)
        out, lse = _run_plan(plan, q, k, v, p, scaling, want_lse)
    if sink is not None:
        # softmax over [scores, sink] drops the sink's share: out * sigmoid(lse - sink).
        keep = paddle.nn.functional.sigmoid(lse - sink.astype("float32").reshape([1, h, 1]))
        out = out * keep.transpose([0, 2, 1]).unsqueeze(-1).astype(out.dtype)
    return out.reshape([b, s_q, h * d_v]), None


# A model hands the same mask tensor to every layer of a forward pass: its plan is worked out
# once. One entry (bounded), keyed by the tensor object (a weak reference), its in-place version
# and the call's sizes; replacing the entry is a single assignment (safe across threads).
_last_plan = [None]


def _plan_dense(attention_mask, b, h, h_kv, s_q, s_k, left):
    if not paddle.in_dynamic_mode():
        return _make_dense_plan(attention_mask, b, h, h_kv, s_q, s_k, left)
    key = (attention_mask._inplace_version(), b, h, h_kv, s_q, s_k, left)
    entry = _last_plan[0]
    if entry is not None and entry[0]() is attention_mask and entry[1] == key:
        return entry[2]
    plan = _make_dense_plan(attention_mask, b, h, h_kv, s_q, s_k, left)
    _last_plan[0] = (weakref.ref(attention_mask), key, plan)
    return plan


def _make_dense_plan(attention_mask, b, h, h_kv, s_q, s_k, left):
    shape = list(attention_mask.shape)
    if (len(shape) != 4 or shape[0] not in (1, b) or shape[1] not in (1, h)
            or shape[2] != s_q or shape[3] < s_k):
        raise ValueError(
            f"attention_mask has shape {shape}: expected [b or 1, 1 or h, s_q, s_k] = "
            f"[{b}, 1, {s_q}, {s_k}]"
        )
    masked, values = additive_parts(attention_mask, s_k)
    if left >= 0:  # sliding_window on top of the mask (bottom-right, as PaddleFormers' masks)
        masked = paddle.logical_or(masked, _unfused.window_mask(s_q, s_k, (left, -1), True))
    if not paddle.in_dynamic_mode():
        # A static graph cannot look at the mask's values: it runs as the mask plus its bias.
        return Plan("masked", masked=masked, bias=bias_of(masked, values) if values is not None else None)
    return plan_for_mask(masked, b, column_heads=(1, h_kv, h), values=values)


def _run_startend(q, k, v, se, is_causal, left, p, scale, want_lse):
    """FlashMask column bounds, with PaddleFormers' reading of C and is_causal."""
    if se.ndim == 3:
        se = se.unsqueeze(-1)
    if se.ndim != 4:
        raise ValueError(
            f"attn_mask_startend_row_indices has shape {list(se.shape)}: expected [b, m, s_k, C]"
        )
    c = se.shape[-1]
    causal = {1: True, 4: False}.get(c, True if is_causal is None else bool(is_causal))
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(
            f"attn_mask_startend_row_indices with causal=True needs s_q == s_k (got {q.shape[1]} "
            f"and {k.shape[1]}): FlashMask rows count from the first query"
        )
    if se.dtype != paddle.int32:
        se = se.astype("int32")
    if left >= 0:
        if not (causal and c == 1):
            raise ValueError(
                "sliding_window with attn_mask_startend_row_indices: supported for causal C = 1 "
                f"bounds only (got C = {c}, causal={causal})"
            )
        j = paddle.arange(se.shape[2], dtype="int32").reshape([1, 1, -1, 1])
        se = paddle.minimum(se, j + (left + 1))  # rows past the window are masked too
    res = ops.flashmask_attention(q, k, v, se, causal=causal, dropout=p, training=True,
                                  softmax_scale=scale, return_softmax_lse=want_lse)
    return (res[0], res[1]) if want_lse else (res, None)


def _run_plan(plan, q, k, v, p, scale, want_lse):
    """Run a Plan on q [b, s_q, h, d], k/v [b, s_k, h_kv, d(_v)]. Returns (out bshd, lse or None)."""
    if plan.kind == "flashmask":
        res = ops.flashmask_attention(q, k, v, plan.startend_row_indices, causal=False, dropout=p,
                                      training=True, softmax_scale=scale,
                                      return_softmax_lse=want_lse)
        return (res[0], res[1]) if want_lse else (res, None)
    if plan.kind == "masked":
        out, _, lse = _unfused.unfused_attention_bhsd(
            _unfused.to_bhsd(q, "bshd"), _unfused.to_bhsd(k, "bshd"), _unfused.to_bhsd(v, "bshd"),
            masked=plan.masked, bias=plan.bias,
            scale=scale if scale is not None else q.shape[-1] ** -0.5,
            dropout=p, training=True, want_lse=want_lse,
        )
        return _unfused.from_bhsd(out, "bshd"), lse
    if _decodes(plan, q, k, v, p):
        cache_seqlens = paddle.full([q.shape[0]], k.shape[1], dtype="int32")
        # decode_attn's cache is an in-place input: hand it real [b, s_k, h_kv, d] tensors.
        res = ops.decode_attn(q, k.contiguous(), v.contiguous(), cache_seqlens, softmax_scale=scale,
                              window_size=(plan.window[0], 0), return_softmax_lse=want_lse)
        return (res[0], res[1]) if want_lse else (res, None)
    window = plan.window if plan.window != (-1, -1) else None
    # max_seqlen = the padded lengths: upper bounds known on the host, so a GPU call reads nothing
    # of cu_seqlens back (fused_attn reads them only to derive a missing max_seqlen there).
    res = ops.fused_attn(q, k, v, cu_seqlens_q=plan.cu_seqlens_q, cu_seqlens_kv=plan.cu_seqlens_kv,
                         max_seqlen_q=q.shape[1], max_seqlen_kv=k.shape[1],
                         attn_mask_type=plan.mask_type, window_size=window, softmax_scale=scale,
                         dropout=p, return_softmax_lse=want_lse)
    return (res[0], res[1]) if want_lse else (res, None)


def _decodes(plan, q, k, v, p):
    """Whether a call is a decoding step decode_attn takes: one query over a cache, bottom-right
    causal without padding, no dropout and no gradient (decode_attn is inference only; on a GPU
    it is the split-KV kernel)."""
    if q.shape[1] != 1 or p > 0.0 or plan.cu_seqlens_q is not None or _needs_grad(q, k, v):
        return False
    if plan.mask_type == "no_mask" and plan.window != (-1, -1):
        return False
    if plan.mask_type not in ("no_mask", "causal_bottom_right"):
        return False
    if ops._is_gpu(q) and (ops._dtype_name(q.dtype) not in _GPU_DECODE_DTYPES
                           or q.shape[-1] not in _GPU_DECODE_HDIMS):
        return False
    return q.shape[-1] == v.shape[-1]
