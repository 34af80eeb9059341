"""decode_attn: attention over a KV cache for decoding (SPEC §10); re-exported by paddle_te.ops.

Validation happens here (``ValueError`` / ``TypeError`` naming the argument) and in the core.
Values of ``cache_seqlens`` and ``block_table`` are never read on the host here: on the CPU the
kernel checks them before it writes anything (cache overflow, page index out of range come back
as ``ValueError``); on a GPU nothing is read (no device->host copy, so a step can be captured in
a CUDA graph) and the kernels clamp instead (csrc/include/paddle_te/decode.h).
"""

import math
import numbers

import paddle
from paddle.jit.marker import unified

from . import _ops_lib
from .masks import check_set_window_size
from ._unfused import dim as _dim
from .ops import (_check_same_place, _check_tensor, _dtype_name, _float_or_inf, _has_zero_dim,
                  _is_gpu, _known, _scale_attr)

__all__ = ["decode_attn", "DECODE_BACKENDS", "MAX_PAGE_SIZE", "MAX_SPLITS"]

#: Values of ``backend`` for decode_attn ("flash" = paddle_te's CUDA decode kernels).
DECODE_BACKENDS = ("auto", "flash", "cpu")
MAX_PAGE_SIZE = 256
MAX_SPLITS = 256
_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_GPU_DTYPES = ("float16", "bfloat16")


def _check_int(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r}: must be an int")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value!r}: must be in [{lo}, {hi}]")
    return value


def _dims_match(shape, want, name, layout):
    for got, exp in zip(shape, want):
        if _known(got, exp) and got != exp:
            raise ValueError(f"{name} has shape {shape}: expected {layout} = {list(want)}")


def _decode_without_keys(q, k_cache, v_cache, cache_seqlens, d_v, k_new, paged, layout,
                         return_softmax_lse):
    """decode_attn where q or the cache has no elements (a custom op receives an empty tensor as
    absent, ops.py's module doc): no batch or no heads give empty results; a cache without
    positions (s_max = 0, page_size = 0 or no pages) holds no key, so every row gives 0 and lse
    -inf, and can take no append. On the CPU in dygraph the lengths are checked as the CPU kernel
    checks them (an empty cache holds 0 positions)."""
    b, s_q, h = (_dim(q, i) for i in range(3))
    if k_new is not None and not _has_zero_dim(list(q.shape)):
        raise ValueError(
            f"k_cache has shape {list(k_cache.shape)}: a {layout} cache without positions cannot "
            f"take the append of s_q={s_q} new keys (cache overflow)"
        )
    if paddle.in_dynamic_mode() and not _is_gpu(q) and _known(b) and b > 0:
        longest = int(cache_seqlens.max())
        if longest > 0:
            raise ValueError(
                f"cache_seqlens holds {longest}: cache overflow, the cache ({layout}, shape "
                f"{list(k_cache.shape)}) holds 0 positions per sequence"
            )
    out = paddle.zeros([b, s_q, h, d_v], dtype=q.dtype)
    lse = paddle.full([b, h, s_q], float("-inf"), dtype="float32")
    if paddle.in_dynamic_mode() and str(out.place) != str(q.place):
        out, lse = out._copy_to(q.place, False), lse._copy_to(q.place, False)
    return (out, lse) if return_softmax_lse else out


@unified
def decode_attn(
    q,
    k_cache,
    v_cache,
    cache_seqlens,
    *,
    k_new=None,
    v_new=None,
    block_table=None,
    softmax_scale=None,
    window_size=None,
    return_softmax_lse=False,
    num_splits=0,
    backend="auto",
):
    """Attention of ``q`` over a KV cache, appending ``k_new`` / ``v_new`` in place (SPEC §10).

    q ``[b, s_q, h, d]``; contiguous cache ``k_cache``/``v_cache`` ``[b, s_max, h_kv, d]`` or a
    paged one ``[num_pages, page_size, h_kv, d]`` with ``block_table`` int32
    ``[b, pages_per_seq]``; ``cache_seqlens`` int32 ``[b]`` (tokens already cached; not changed).
    With ``k_new``/``v_new`` ``[b, s_q, h_kv, d]`` they are written into the cache at
    ``cache_seqlens[b] ...`` and attended to. Query ``i`` sees key ``j <= n_b - s_q + i``
    (``n_b`` = keys after the append), and ``j >= n_b - s_q + i - left`` with
    ``window_size=(left, 0)``. Returns ``out`` ``[b, s_q, h, d_v]`` or ``(out, lse)``, lse float32
    ``[b, h, s_q]``. Inference only (no gradient).
    """
    qs = _check_tensor(q, "q", ranks=(4,), dtypes=_FLOAT_DTYPES)
    dtype = _dtype_name(q.dtype)
    on_gpu = _is_gpu(q)
    if on_gpu and dtype not in _GPU_DTYPES:
        raise TypeError(f"q has dtype {dtype}: on a GPU decode_attn takes float16 or bfloat16")
    b, s_q, h, d = qs
    if _known(s_q) and s_q < 1:
        raise ValueError(f"q has shape {qs}: s_q = {s_q}, decode_attn needs s_q >= 1 query rows")
    paged = block_table is not None
    layout = "[num_pages, page_size, h_kv, d]" if paged else "[b, s_max, h_kv, d]"
    ks = _check_tensor(k_cache, "k_cache", ranks=(4,))
    vs = _check_tensor(v_cache, "v_cache", ranks=(4,))
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if _dtype_name(t.dtype) != dtype:
            raise TypeError(f"{name} has dtype {_dtype_name(t.dtype)}: must be q's dtype {dtype}")
        _check_same_place(t, name, q, "q")
    h_kv = ks[2]
    _dims_match(vs[:3], ks[:3], "v_cache", f"{layout} (k_cache's first three dims)")
    for name, shape in (("q", qs), ("v_cache", vs)):
        if _known(shape[3]) and shape[3] == 0:
            raise ValueError(f"{name} has shape {shape}: the head dim must be > 0")
    if _known(ks[3], d) and ks[3] != d:
        raise ValueError(f"k_cache has head dim {ks[3]}: must equal q's head dim {d}")
    if _known(h, h_kv) and (h_kv < 1 or h % h_kv):
        raise ValueError(f"k_cache has {h_kv} heads (dim 2): must divide q's {h} heads (GQA/MQA)")
    if not paged and _known(ks[0], b) and ks[0] != b:
        raise ValueError(
            f"k_cache has shape {ks}: dim 0 must be q's batch {b} for a contiguous cache "
            f"[b, s_max, h_kv, d] (pass block_table for a paged cache)"
        )
    if paged:
        bt = _check_tensor(block_table, "block_table", ranks=(2,))
        if _dtype_name(block_table.dtype) != "int32":
            raise TypeError(f"block_table has dtype {_dtype_name(block_table.dtype)}: must be int32")
        if _known(bt[0], b) and bt[0] != b:
            raise ValueError(f"block_table has shape {bt}: dim 0 must be q's batch {b}")
        if _known(ks[1]) and not 1 <= ks[1] <= MAX_PAGE_SIZE:
            raise ValueError(f"k_cache has page_size {ks[1]} (dim 1): must be in [1, {MAX_PAGE_SIZE}]")
        _check_same_place(block_table, "block_table", q, "q")
    cs = _check_tensor(cache_seqlens, "cache_seqlens", ranks=(1,))
    if _dtype_name(cache_seqlens.dtype) != "int32":
        raise TypeError(f"cache_seqlens has dtype {_dtype_name(cache_seqlens.dtype)}: must be int32")
    _dims_match(cs, [b], "cache_seqlens", "[b]")
    _check_same_place(cache_seqlens, "cache_seqlens", q, "q")
    if (k_new is None) != (v_new is None):
        given, missing = ("k_new", "v_new") if v_new is None else ("v_new", "k_new")
        raise ValueError(f"{given} given without {missing}: pass both or neither")
    if k_new is not None:
        for name, t, dv in (("k_new", k_new, d), ("v_new", v_new, vs[3])):
            shape = _check_tensor(t, name, ranks=(4,))
            if _dtype_name(t.dtype) != dtype:
                raise TypeError(f"{name} has dtype {_dtype_name(t.dtype)}: must be q's dtype {dtype}")
            _dims_match(shape, [b, s_q, h_kv, dv], name, "[b, s_q, h_kv, d]")
            _check_same_place(t, name, q, "q")
        capacity = ks[1] * bt[1] if paged and _known(ks[1], bt[1]) else (ks[1] if not paged else -1)
        if _known(capacity, s_q) and capacity < s_q:
            raise ValueError(f"k_cache holds {capacity} positions per sequence: cannot append s_q={s_q} new keys")
    if softmax_scale is None:
        if not _known(d) or d <= 0:
            raise ValueError(f"q has shape {qs}: the head dim must be known to derive softmax_scale")
        softmax_scale = 1.0 / math.sqrt(d)
    elif isinstance(softmax_scale, bool) or not isinstance(softmax_scale, numbers.Real):
        raise TypeError(f"softmax_scale={softmax_scale!r}: must be a float")
    elif not math.isfinite(_float_or_inf(softmax_scale)) or float(softmax_scale) <= 0:
        raise ValueError(f"softmax_scale={softmax_scale!r}: must be finite and > 0")
    # Decoding is causal (bottom-right): window_size=(left, 0); a right side warns and becomes 0.
    left, _ = check_set_window_size("causal_bottom_right", window_size)
    num_splits = _check_int(num_splits, "num_splits", 0, MAX_SPLITS)
    if not isinstance(return_softmax_lse, bool):
        raise TypeError(f"return_softmax_lse={return_softmax_lse!r}: must be a bool")
    if backend not in DECODE_BACKENDS:
        raise ValueError(f"backend={backend!r}: decode_attn takes one of {', '.join(map(repr, DECODE_BACKENDS))}")
    if backend == "flash" and not on_gpu:
        raise ValueError("backend='flash' cannot run this call: it runs on CUDA devices and the tensors are on the CPU")
    if backend == "cpu" and on_gpu:
        raise ValueError("backend='cpu' cannot run this call: the tensors are on a CUDA device")

    if k_new is not None and paddle.in_dynamic_mode():
        for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
            if not t.is_contiguous():
                # A strided view would reach the op as a contiguous copy: the append would land
                # in the copy and the caller's cache would never see it.
                raise ValueError(
                    f"{name} is a non-contiguous view (strides {list(t.strides)}): the in-place "
                    f"append of k_new/v_new needs a contiguous {layout} cache"
                )
    if _has_zero_dim(qs) or _has_zero_dim(ks) or paged and _has_zero_dim(bt):
        # (block_table [b, 0]: no pages, no positions; the op would take it as absent.)
        return _decode_without_keys(q, k_cache, v_cache, cache_seqlens, vs[3], k_new, paged, layout,
                                    return_softmax_lse)
    # Inference only: no backward graph through q / k_new / v_new (in a static program built with
    # trainable parameters upstream, a backward would otherwise ask for the op's missing grad).
    # The caches are written in place and must stay the caller's tensors (not detached copies).
    q = q.detach()
    k_new = k_new.detach() if k_new is not None else None
    v_new = v_new.detach() if v_new is not None else None
    out, lse, _, _ = _ops_lib.run_op(
        "pte_decode_attn",
        [
            ("q", q),
            ("k_cache", k_cache),
            ("v_cache", v_cache),
            ("cache_seqlens", cache_seqlens),
            ("k_new", k_new),
            ("v_new", v_new),
            ("block_table", block_table),
        ],
        [
            ("softmax_scale", _scale_attr(softmax_scale)),
            ("window_left", int(left)),
            ("num_splits", num_splits),
            ("backend", backend),
        ],
        ["out", "lse", "k_cache_out", "v_cache_out"],
    )
    out.stop_gradient = True
    lse.stop_gradient = True
    return (out, lse) if return_softmax_lse else out
