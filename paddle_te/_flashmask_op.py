"""``flashmask_attention`` (SPEC §9): call-compatible with
``paddle.nn.functional.flashmask_attention``; runs the fused kernels (CPU, and the flash backend
on the GPU) with the column bounds, so cost follows the visible area."""

import numbers

import paddle
from paddle.jit.marker import unified

from . import _flashmask, _ops_lib, _unfused
from . import ops as _ops


def _seed_offset_for(p, q, fixed_seed_offset, rng_name):
    """int64 [2] {seed, offset}: the caller's (replay), from a named generator of the fleet
    tracker, or from Paddle's default generator (SPEC §3 dropout)."""
    if fixed_seed_offset is not None:
        shape = _ops._check_tensor(fixed_seed_offset, "fixed_seed_offset", ranks=(1,), dtypes=("int64",))
        if _ops._known(shape[0]) and shape[0] != 2:
            raise ValueError(f"fixed_seed_offset has shape {shape}: expected [2] (seed, offset)")
        so = fixed_seed_offset
        if paddle.in_dynamic_mode() and str(so.place) != str(q.place):
            so = so._copy_to(q.place, False)
        return so
    if rng_name:
        if not isinstance(rng_name, str):
            raise TypeError(f"rng_name={rng_name!r}: must be a str")
        try:
            from paddle.distributed.fleet.meta_parallel import get_rng_state_tracker
            tracker = get_rng_state_tracker()
            states = getattr(tracker, "states_", {})  # registered names (no state export)
        except Exception:  # noqa: BLE001 - no fleet: the default generator
            states = {}
        if rng_name in states:
            with tracker.rng_state(rng_name):
                return _ops._seed_offset(p, q)
    return _ops._seed_offset(p, q)


def _check_startend(se, b, s_q, s_kv, h, h_kv, causal):
    shape = _ops._check_tensor(se, "startend_row_indices", ranks=(4,), dtypes=("int32",))
    known = _ops._known
    if known(shape[0], b) and shape[0] != b or known(shape[2], s_kv) and shape[2] != s_kv:
        raise ValueError(
            f"startend_row_indices has shape {shape}: expected [{b}, mask_heads, {s_kv}, C] "
            "(batch, mask heads, key length, C)"
        )
    if known(shape[1]) and shape[1] not in (1, h_kv, h):
        raise ValueError(
            f"startend_row_indices has shape {shape}: mask_heads = {shape[1]} must be 1, the kv "
            f"heads ({h_kv}) or the query heads ({h})"
        )
    if known(shape[3]):
        _flashmask.check_c(int(shape[3]), causal, shape=shape)
    return shape


def _check_block_mask(bm, b, mask_heads, s_q, s_kv):
    """Paddle's block mask: int32 [b, mask_heads, ceil(s_q / 128), ceil(s_kv / 128)]."""
    shape = _ops._check_tensor(bm, "block_mask", ranks=(4,), dtypes=("int32",))
    want = [b, mask_heads, None if not _ops._known(s_q) else (int(s_q) + 127) // 128,
            None if not _ops._known(s_kv) else (int(s_kv) + 127) // 128]
    if any(_ops._known(x, w) and x != w for x, w in zip(shape, want)):
        raise ValueError(
            f"block_mask has shape {shape}: expected {want} (batch, the mask heads of "
            "startend_row_indices, query and key blocks of 128)"
        )


def _to_query_heads(mask, h):
    """bool [b, m, s_q, s_kv] with m the kv heads -> [b, h, ...] (query head i: mask head
    i // (h / m)); m = 1 or h as it is. Through expand: no bool repeat_interleave kernel."""
    b, m, s_q, s_kv = (int(x) for x in mask.shape)
    if m in (1, h):
        return mask
    return paddle.expand(mask.unsqueeze(2), [b, m, h // m, s_q, s_kv]).reshape([b, h, s_q, s_kv])


def _block_masked(bm, s_q, s_kv):
    """bool [b, m, s_q, s_kv], True where block_mask is 0 (the 128 x 128 block is masked)."""
    keep = (bm != 0).astype("int32")
    keep = paddle.repeat_interleave(paddle.repeat_interleave(keep, 128, axis=2), 128, axis=3)
    return keep[:, :, :s_q, :s_kv] == 0


@unified
def flashmask_attention(query, key, value, startend_row_indices=None, *, dropout=0.0, causal=False,
                        window_size=None, return_softmax_lse=False, return_seed_offset=False,
                        fixed_seed_offset=None, rng_name="", training=True, name=None,
                        softmax_scale=None, block_mask=None):
    """Attention with a column-sparse mask (FlashMask, SPEC §9), call-compatible with
    ``paddle.nn.functional.flashmask_attention``.

    query ``[b, s_q, h, d]``, key/value ``[b, s_kv, h_kv, d]``; ``startend_row_indices`` int32
    ``[b, m, s_kv, C]`` (m in {1, h_kv, h}) masks out, in key column j, the query rows of the
    intervals of the table in ``paddle_te.masks`` (C in {1, 2} with ``causal=True``, {2, 4}
    without). ``window_size`` (int or ``(left, right)``) builds a sliding-window mask instead.
    ``block_mask`` (int32 ``[b, mask_heads, ceil(s_q / 128), ceil(s_kv / 128)]``, 1 = keep the
    128 x 128 block, 0 = mask it, as Paddle's) masks whole blocks on top of the column bounds; it
    runs the dense unfused path (the fused kernels take the column bounds alone).
    Returns ``out``, or ``[out, lse?, seed_offset?]`` with what was asked for: lse float32
    ``[b, h, s_q]`` (-inf for rows that see no key), seed_offset int64 ``[2]``.
    """
    del name
    q, k, v = query, key, value
    qs = _ops._check_tensor(q, "query", ranks=(4,), dtypes=_ops._FLOAT_DTYPES)
    ks = _ops._check_tensor(k, "key", ranks=(4,), dtypes=_ops._FLOAT_DTYPES)
    vs = _ops._check_tensor(v, "value", ranks=(4,), dtypes=_ops._FLOAT_DTYPES)
    for t, n in ((k, "key"), (v, "value")):
        if _ops._dtype_name(t.dtype) != _ops._dtype_name(q.dtype):
            raise TypeError(f"{n} has dtype {_ops._dtype_name(t.dtype)}: must equal query's {_ops._dtype_name(q.dtype)}")
        _ops._check_same_place(t, n, q, "query")
    b, s_q, h, d = qs
    s_kv, h_kv = ks[1], ks[2]
    _ops._check_qkv_dims({"query": qs, "key": ks, "value": vs},
                         {"query": tuple(qs), "key": tuple(ks), "value": tuple(vs)})
    if _ops._known(h, h_kv) and (h_kv == 0 or h % h_kv):
        raise ValueError(f"key has {h_kv} heads: must divide query's {h} heads (GQA/MQA groups)")
    causal = _ops._check_bool(causal, "causal")
    training = _ops._check_bool(training, "training")
    return_softmax_lse = _ops._check_bool(return_softmax_lse, "return_softmax_lse")
    return_seed_offset = _ops._check_bool(return_seed_offset, "return_seed_offset")
    dropout = _ops._check_dropout(dropout)
    if softmax_scale is None:
        softmax_scale = 1.0 / float(d) ** 0.5 if _ops._known(d) else None
    else:
        softmax_scale = _ops._check_scale(softmax_scale, "softmax_scale")
    if softmax_scale is None:
        raise ValueError("softmax_scale=None needs a known head dim (pass softmax_scale)")

    if window_size is not None:
        if startend_row_indices is not None:
            raise ValueError(
                "window_size and startend_row_indices: pass one of them (window_size builds the "
                "startend_row_indices of a sliding window itself)"
            )
        left, right = _flashmask._window_pair(window_size)
        startend_row_indices = _window_indices(q, k, left, 0 if causal else right, causal)
    if startend_row_indices is not None:
        se_shape = _check_startend(startend_row_indices, b, s_q, s_kv, h, h_kv, causal)
        _ops._check_same_place(startend_row_indices, "startend_row_indices", q, "query")
    if block_mask is not None:
        if startend_row_indices is None:
            raise ValueError(
                "block_mask needs startend_row_indices (or window_size), as in Paddle's "
                "flashmask_attention: pass bounds that mask nothing (paddle_te.masks) to use the "
                "block mask alone"
            )
        _check_block_mask(block_mask, b, se_shape[1], s_q, s_kv)
        _ops._check_same_place(block_mask, "block_mask", q, "query")

    p = dropout if training else 0.0
    on_gpu = _ops._is_gpu(q)
    q, k, v = _ops._grad_guard(q, k, v)
    q, k, v = _ops._amp_cast([q, k, v], on_gpu)
    dtype = _ops._dtype_name(q.dtype)
    mask_type = "causal" if causal else "no_mask"
    seed_offset = _seed_offset_for(p, q, fixed_seed_offset, rng_name)

    # No query rows, no keys or no batch: the op cannot take the empty tensors (ops.py's module
    # doc); rows that see no key give 0 and lse -inf, with zero gradients.
    empty = _ops._has_zero_dim(q.shape) or _ops._has_zero_dim(k.shape)
    use_unfused = False
    if on_gpu and not empty:
        se_shape = list(startend_row_indices.shape) if startend_row_indices is not None else None
        why = _ops._fused_reason(
            "auto", q, k, v, dtype, qkv_format="bshd", mask_type=mask_type, window=(-1, -1),
            softmax_scale=softmax_scale, dropout=p, max_seqlen_q=0, max_seqlen_kv=0,
            startend_shape=se_shape,
        )
        use_unfused = bool(why)
    if block_mask is not None and not empty:
        use_unfused, why = True, "block_mask"
    if use_unfused and p > 0.0 and (fixed_seed_offset is not None or return_seed_offset):
        raise ValueError(
            f"fixed_seed_offset / return_seed_offset with dropout={p}: this call runs the unfused "
            f"path ({why}), whose dropout mask comes from Paddle's dropout and is not described "
            "by a seed/offset pair; the fused kernels (float16/bfloat16 on the GPU, any float "
            "dtype on the CPU, no block_mask) replay it"
        )
    if empty:
        out, lse = _ops._attention_without_keys(q, k, v, "bshd")
    elif use_unfused:
        # No fused kernel can run it (float32 on the GPU, a head dim no kernel has): the dense
        # mask through the unfused path (paddle_te's masked softmax), same results.
        masked = None
        if startend_row_indices is not None:
            masked = _flashmask._masked_rows(startend_row_indices, int(s_q), causal)
            masked = _to_query_heads(masked, int(h))
            if causal:
                masked = paddle.logical_or(masked, _causal_upper(int(s_q), int(s_kv)))
        if block_mask is not None:
            masked = paddle.logical_or(
                masked, _to_query_heads(_block_masked(block_mask, int(s_q), int(s_kv)), int(h)))
        out, _, lse = _unfused.unfused_attention_bhsd(
            _unfused.to_bhsd(q, "bshd"), _unfused.to_bhsd(k, "bshd"), _unfused.to_bhsd(v, "bshd"),
            masked=masked, bias=None, scale=softmax_scale, dropout=p, training=True,
            causal="top_left" if causal and masked is None else None, want_lse=return_softmax_lse,
        )
        out = _unfused.from_bhsd(out, "bshd")
    else:
        out, lse = _ops_lib.run_op(
            "pte_fused_attn",
            [("q", q), ("k", k), ("v", v), ("cu_seqlens_q", None), ("cu_seqlens_kv", None),
             ("seed_offset", seed_offset), ("startend_row_indices", startend_row_indices)],
            [("qkv_format", "bshd"), ("mask_type", mask_type), ("backend", "auto"),
             ("max_seqlen_q", 0), ("max_seqlen_kv", 0), ("window_left", -1), ("window_right", -1),
             ("softmax_scale", _ops._scale_attr(softmax_scale)), ("dropout", float(p)),
             ("deterministic", False)],
            ["out", "lse"],
        )
    if not (return_softmax_lse or return_seed_offset):
        return out
    result = [out]
    if return_softmax_lse:
        result.append(lse)
    if return_seed_offset:
        result.append(seed_offset)
    return result


def _causal_upper(s_q, s_kv):
    return (paddle.arange(s_kv, dtype="int32").reshape([1, s_kv])
            > paddle.arange(s_q, dtype="int32").reshape([s_q, 1])).reshape([1, 1, s_q, s_kv])


def _window_indices(q, k, left, right, causal):
    """The startend_row_indices of window (left, right): key j is seen by rows
    j - left .. j + right, i.e. rows >= j + left + 1 and (non-causal) rows < j - right are masked.
    Sizes from q [b, s_q, ...] and k [b, s_kv, ...], read at run time where the program leaves
    them unknown (static mode with dynamic dims)."""
    b, s_q, s_kv = _unfused.dim(q, 0), _unfused.dim(q, 1), _unfused.dim(k, 1)
    j = paddle.arange(s_kv, dtype="int64")
    rows = paddle.zeros_like(j) + (s_q if isinstance(s_q, int) else s_q.astype("int64"))

    def clamp(x):  # to [0, s_q]
        return paddle.minimum(paddle.maximum(x, paddle.zeros_like(x)), rows)

    cols = [clamp(j + left + 1) if left >= 0 else rows]
    if not causal:
        cols.append(clamp(j - right) if right >= 0 else paddle.zeros_like(j))
    se = paddle.stack(cols, axis=1).astype("int32").unsqueeze([0, 1])  # [1, 1, s_kv, C]
    se = paddle.expand(se, [b, 1, s_kv, len(cols)])
    if paddle.in_dynamic_mode() and str(se.place) != str(q.place):
        se = se._copy_to(q.place, False)
    return se
