"""Helpers shared by the layers: dtype tests, the AMP cast, and the unfused path's names.

The fused path (`paddle_te.ops.fused_attn`) handles every mask that is a window plus sequence
lengths. Anything else -- an arbitrary boolean mask, an additive bias, or a request for the
attention weights -- runs through the unfused path, whose one implementation is
`paddle_te._unfused` (also `fused_attn(backend="unfused")` and `auto`'s fallback). Both paths
follow the visibility rule of SPEC §2, so a call gives the same result on either (up to dropout's
random stream).

Masks in this module use the canonical convention: a boolean element that is True is masked out.
"""

import math
import numbers

import paddle
from paddle.jit.marker import unified

from .. import ops

# The unfused path and its shape helpers, used by the layers as `_core.<name>`.
from .._unfused import (  # noqa: F401
    as4d,
    dim,
    expand_bool,
    from_bhsd,
    given,
    or_masks,
    seqlens_from_cu,
    static_dim,
    to_bhsd,
    type_rule,
    unfused_attention_bhsd,
    window_mask,
)
from .._unfused import on_gpu as _on_gpu


@paddle.jit.not_to_static
def split_heads(x, heads, head_dim):
    """[b, s, heads * head_dim] -> [b, s, heads, head_dim]. `reshape([0, 0, ...])` keeps b and s
    (and their unknown sizes in static mode), but on a tensor without elements Paddle reads the
    0s literally, so an empty batch or sequence gets its sizes spelled out."""
    if any(n == 0 for n in x.shape[:2]):
        return x.reshape([x.shape[0], x.shape[1], heads, head_dim])
    return x.reshape([0, 0, heads, head_dim])


@paddle.jit.not_to_static
def merge_heads(x):
    """[b, s, heads, head_dim] -> [b, s, heads * head_dim] (empty tensors as split_heads)."""
    width = x.shape[2] * x.shape[3]
    if any(n == 0 for n in x.shape[:2]):
        return x.reshape([x.shape[0], x.shape[1], width])
    return x.reshape([0, 0, width])
from ..masks import layer_checks_mask

_INT_DTYPES = (paddle.int8, paddle.int16, paddle.int32, paddle.int64, paddle.uint8)
_FLOAT_DTYPES = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)


def is_float(x):
    return x.dtype in _FLOAT_DTYPES


def is_int(x):
    return x.dtype in _INT_DTYPES


def amp_cast(*tensors):
    """Cast float32 tensors to the autocast dtype under `paddle.amp.auto_cast` on a GPU.

    Paddle does not cast the inputs of custom operators (PADDLE_NOTES), so the layers do it. On
    the CPU `auto_cast` is a no-op in Paddle, and it stays one here.
    """
    if not paddle.amp.is_autocast_enabled():
        return tensors
    dtype = paddle.amp.get_autocast_dtype()
    if dtype not in (paddle.float16, paddle.bfloat16, "float16", "bfloat16"):
        return tensors
    out = []
    for t in tensors:
        if given(t) and t.dtype == paddle.float32 and _on_gpu(t):
            t = t.astype(dtype)
        out.append(t)
    return tuple(out)


# ---- argument validation of the layers (SPEC §7: name the argument, its value, what is allowed) --
def check_input_dtype(x, name, layer_dtype):
    """An input of a layer with parameters (Linear, LayerNorm): a float tensor in the parameters'
    dtype -- Paddle's kernels take no other and fail with an internal message -- or, under
    `paddle.amp.auto_cast`, any float dtype (autocast casts it)."""
    if not is_float(x):
        raise TypeError(f"{name} has dtype {x.dtype}: allowed float16, bfloat16, float32, float64")
    if not paddle.amp.is_autocast_enabled() and x.dtype != layer_dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype}: must be the layer's parameter dtype {layer_dtype} (cast "
            f"the input or the layer, or run under paddle.amp.auto_cast)"
        )


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r}: must be a positive int")
    if value <= 0:
        raise ValueError(f"{name}={value!r}: must be a positive int")
    return int(value)


def check_optional_positive_int(value, name):
    return None if value is None else check_positive_int(value, name)


def check_probability(value, name):
    """A dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r}: must be a float in [0, 1)")
    if not (0.0 <= ops._float_or_inf(value) < 1.0):
        raise ValueError(f"{name}={value!r}: must be in [0, 1)")
    return float(value)


def check_positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r}: must be a finite float > 0")
    if not (math.isfinite(ops._float_or_inf(value)) and float(value) > 0):
        raise ValueError(f"{name}={value!r}: must be a finite float > 0")
    return float(value)


def check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r}: must be a bool")
    return value


def check_choice(value, name, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(map(repr, allowed))}")
    return value


def check_backend(value):
    from ..ops import BACKENDS

    return check_choice(value, "backend", BACKENDS)


def is_tensor(x):
    """A dygraph tensor or a static-graph value (not a numpy array)."""
    return ops._is_tensor(x)


def check_tensor(x, name, what="a paddle.Tensor"):
    if not is_tensor(x):
        raise TypeError(f"{name} is a {type(x).__name__}: must be {what}")
    return x


@paddle.jit.not_to_static
def check_broadcastable(x, name, target, target_desc):
    """`x` (rank <= len(target)) broadcasts to `target` (ints; None = not known yet): each of its
    dims, aligned to the right, is 1 or the target's. Unknown dims (static mode) pass."""
    shape = list(x.shape)
    if len(shape) > len(target):
        raise ValueError(
            f"{name} has shape {shape}: must be broadcastable to {target_desc} = {_show(target)}"
        )
    for size, want in zip(shape[::-1], target[::-1]):
        if size is None or size < 0 or want is None or size in (1, want):
            continue
        raise ValueError(
            f"{name} has shape {shape}: must be broadcastable to {target_desc} = {_show(target)} "
            f"(each dim 1 or equal, aligned to the right)"
        )


def _show(shape):
    return "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"


@unified
def padding_mask_to_cu_seqlens(mask, mask_kv=None, names=("mask", "mask_kv")):
    """ops.mask_to_cu_seqlens for the layers: the right-padding check follows
    paddle_te.masks.set_mask_check (by default only where it is free: a mask on the CPU, so a GPU
    step has no host sync). Marked unified: to_static calls it as it is (reading the place would
    be a graph break under SOT). `names`: what the layer's caller called `mask` and `mask_kv`
    (e.g. "attention_mask"), for the message of a mask that is not right padding."""
    check = paddle.in_dynamic_mode() and layer_checks_mask(_on_gpu(mask))
    return ops._mask_to_cu_seqlens(mask, mask_kv, check, names)
