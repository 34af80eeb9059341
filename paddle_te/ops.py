"""paddle_te.ops: the functional API (SPEC §3).

Each function validates its arguments in Python first (``ValueError`` / ``TypeError`` naming the
argument, its value and what is allowed), applies the defaults and policies (softmax scale,
window policy, dropout on/off, ``paddle.no_grad``, AMP), then runs a ``pte_*`` custom op. The ops
have grad ops, so everything here works in dygraph, in static mode (PIR), under
``paddle.jit.to_static`` and in saved models. docs/api.md describes every function.

The public functions are marked ``paddle.jit.marker.unified``: ``paddle.jit.to_static`` (AST and
SOT) calls them as they are instead of transforming them, and they build static-graph ops when
called in static mode. In static mode tensor values cannot be read while the program is built: checks that need
values (cu_seqlens contents, ``mask_to_cu_seqlens``' right-padding verdict) run in dygraph only;
shape checks skip dimensions that are unknown (-1).

Zero-size tensors: Paddle hands a custom op a tensor with no elements as if it were absent, so the
ops never see one. Each function answers such a call itself, from Paddle ops, where SPEC §2 / §3
defines the result (empty outputs; attention with no keys gives 0 and lse -inf), with the graph
connected to its inputs so that ``paddle.grad`` gives their (zero or zero-size) gradients. This
needs the zero dimension known when the call is built: always in dygraph, in static mode when the
program declares it.
"""

import math
import numbers
import warnings

import numpy as np
import paddle
from paddle.jit.marker import unified

from . import _ops_lib, _unfused, _vocab
from .masks import (
    check_mask_type,
    check_set_window_size,
    is_padding,
    with_padding,
)

__all__ = [
    "fused_attn",
    "flashmask_attention",
    "decode_attn",
    "mask_to_cu_seqlens",
    "scaled_softmax",
    "scaled_masked_softmax",
    "scaled_upper_triang_masked_softmax",
    "scaled_aligned_causal_masked_softmax",
    "QKV_FORMATS",
    "BACKENDS",
    "CUDA_BACKENDS",
]

#: Layouts of q, k, v (the one table: paddle_te/_vocab.py).
QKV_FORMATS = _vocab.QKV_FORMATS
#: Values of ``backend``: the C core's (from its own enum, ``auto`` first, ``cpu`` last) and the
#: Python path ``unfused``.
BACKENDS = tuple(b for b in _ops_lib.CORE_BACKENDS if b != "cpu") + _vocab.PYTHON_BACKENDS + ("cpu",)
#: The core's CUDA backends.
CUDA_BACKENDS = tuple(b for b in _ops_lib.CORE_BACKENDS if b not in ("auto", "cpu"))

_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_GPU_FUSED_DTYPES = ("float16", "bfloat16")
# Upper bound (exclusive) of the seed/offset values drawn from Paddle's generator: randint
# draws int32-range values.
_SEED_HIGH = 2**31 - 1


# ------------------------------------------------------------------------------------------------
# small validation helpers
# ------------------------------------------------------------------------------------------------
def _is_tensor(x):
    return isinstance(x, (paddle.Tensor, paddle.pir.Value, paddle.base.framework.Variable))


def _dtype_name(dtype):
    s = str(dtype)
    s = s.replace("paddle.", "").replace("VarType.", "").lower()
    return {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp64": "float64"}.get(s, s)


def _check_tensor(x, name, ranks=None, dtypes=None):
    if not _is_tensor(x):
        raise TypeError(f"{name}: expected a paddle.Tensor, got {type(x).__name__}")
    shape = list(x.shape)
    if ranks is not None and len(shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} has shape {shape} (rank {len(shape)}): expected rank {want}")
    if dtypes is not None and _dtype_name(x.dtype) not in dtypes:
        raise TypeError(f"{name} has dtype {_dtype_name(x.dtype)}: allowed {', '.join(dtypes)}")
    return shape


def _known(*dims):
    return all(d is not None and d >= 0 for d in dims)


def _is_gpu(x):
    if paddle.in_dynamic_mode():
        return x.place.is_gpu_place()
    # Static mode: the executor's place decides; custom ops follow the default device.
    return paddle.device.get_device().startswith("gpu")


def _check_same_place(x, name, ref, ref_name):
    if paddle.in_dynamic_mode() and str(x.place) != str(ref.place):
        raise ValueError(f"{name} is on {x.place}: must be on the same device as {ref_name} ({ref.place})")


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}={value!r}: must be a bool")
    return bool(value)


def _float_or_inf(value):
    """float(value) for a Real; an int past the float range (10**400) is +-inf instead of an
    OverflowError, so that the range checks below name the argument."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _check_scale(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r}: must be a float")
    value = _float_or_inf(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be finite and > 0")
    return value


def _check_dropout(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"dropout={value!r}: must be a float in [0, 1)")
    value = _float_or_inf(value)
    if not (0.0 <= value < 1.0):
        raise ValueError(f"dropout={value!r}: must be in [0, 1)")
    return value


def _check_optional_int(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r}: must be None or a Python int")
    value = int(value)
    if value < 0:
        raise ValueError(f"{name}={value!r}: must be >= 0")
    return value


def _scale_attr(scale):
    """Scales go to the ops as decimal strings: PIR custom ops have no double attribute, and a
    float attribute would round the scale of float64 problems to float32. repr round-trips."""
    return repr(float(scale))


def _grad_guard(*tensors):
    """Custom ops ignore paddle.no_grad(): detach the inputs so no backward graph is built."""
    if paddle.in_dynamic_mode() and not paddle.is_grad_enabled():
        return [t.detach() if t is not None else None for t in tensors]
    return list(tensors)


def _amp_cast(tensors, on_gpu):
    """Paddle's AMP does not cast custom-op inputs: on a GPU under ``paddle.amp.auto_cast``,
    float32 inputs run in the autocast dtype (CPU autocast does nothing, as in Paddle)."""
    if not on_gpu or not paddle.amp.is_autocast_enabled():
        return tensors
    dtype = paddle.amp.get_autocast_dtype()
    return [t.astype(dtype) if _dtype_name(t.dtype) == "float32" else t for t in tensors]


def _has_zero_dim(shape):
    """Whether a (possibly partly unknown) shape surely has no elements."""
    return any(_known(d) and d == 0 for d in shape)


def _zero_from(t):
    """float32 0-D zero computed from ``t`` through an empty slice. Added to a result built without
    the op, it connects the result to ``t`` (``paddle.grad`` refuses an input that is not in the
    graph) with a gradient that is exactly 0 (zero-size for an empty ``t``), whatever the values
    of ``t`` and the upstream gradient: no ``0 * inf``. Summed in float32: Paddle's CPU has no
    float16 add."""
    return t[:0].astype("float32").sum()


def _zeros_on(shape, dtype, like):
    """paddle.zeros on ``like``'s place (dygraph; static mode: the program's place)."""
    z = paddle.zeros(shape, dtype=dtype)
    if paddle.in_dynamic_mode() and str(z.place) != str(like.place):
        z = z._copy_to(like.place, False)
    return z


# ------------------------------------------------------------------------------------------------
# fused attention
# ------------------------------------------------------------------------------------------------
def _check_qkv_dims(shapes, dims, batched=True):
    """What q, k and v must agree on: k and v one length and one head count, k q's head dim,
    every batch q's (`batched`: not thd), head dims > 0. `shapes` {name: shape} and `dims` {name:
    (b, s, h, d)} in the order q, k, v, under the caller's names (fused_attn's q / k / v,
    flashmask_attention's query / key / value)."""
    (nq, (b, _, _, d)), (nk, (b_k, s_kv, h_kv, d_k)), (nv, (b_v, s_v, h_v, d_v)) = dims.items()
    if batched:
        for name, bb in ((nk, b_k), (nv, b_v)):
            if _known(b, bb) and bb != b:
                raise ValueError(
                    f"{name} has shape {shapes[name]}: batch {bb} must equal {nq}'s batch {b}")
    if _known(s_kv, s_v) and s_v != s_kv:
        raise ValueError(
            f"{nv} has shape {shapes[nv]}: its sequence length {s_v} must equal {nk}'s {s_kv}")
    if _known(h_kv, h_v) and h_v != h_kv:
        raise ValueError(
            f"{nv} has shape {shapes[nv]}: {h_v} heads must equal {nk}'s {h_kv} heads")
    if _known(d, d_k) and d_k != d:
        raise ValueError(
            f"{nk} has shape {shapes[nk]}: head dim {d_k} must equal {nq}'s head dim {d}")
    for name, dim in ((nq, d), (nv, d_v)):
        if _known(dim) and dim == 0:
            raise ValueError(f"{name} has shape {shapes[name]}: the head dim must be > 0")


def _layout_dims(shape, qkv_format):
    """(b, s, h, d) of a q/k/v shape in qkv_format; b is None for thd."""
    if qkv_format == "bshd":
        return shape[0], shape[1], shape[2], shape[3]
    if qkv_format == "sbhd":
        return shape[1], shape[0], shape[2], shape[3]
    return None, shape[0], shape[1], shape[2]


def _check_cu_seqlens(cu, name, qkv_format, batch, padded_len, total, max_seqlen, ref):
    """Validate one cu_seqlens tensor; returns its values (numpy) when they could be read."""
    shape = _check_tensor(cu, name, ranks=(1,))
    if _dtype_name(cu.dtype) != "int32":
        raise TypeError(f"{name} has dtype {_dtype_name(cu.dtype)}: must be int32 (cumulative sequence lengths [b+1])")
    if qkv_format != "thd" and _known(batch, shape[0]) and shape[0] != batch + 1:
        raise ValueError(f"{name} has shape {shape}: expected [{batch + 1}] (batch size + 1) for qkv_format={qkv_format!r}")
    if _known(shape[0]) and shape[0] < 1:
        raise ValueError(f"{name} has shape {shape}: must hold at least 1 offset (batch size + 1)")
    _check_same_place(cu, name, ref, "q")
    if not paddle.in_dynamic_mode():
        return None
    # Reading the values costs a device->host copy on the GPU: done on the CPU (free) or when
    # max_seqlen must be derived anyway. With max_seqlen given, the CUDA kernels clamp lengths.
    if cu.place.is_gpu_place() and max_seqlen is not None:
        return None
    vals = cu.numpy().astype(np.int64)
    if vals[0] != 0:
        raise ValueError(f"{name}[0] = {vals[0]}: must be 0")
    lens = np.diff(vals)
    if (lens < 0).any():
        i = int(np.argmax(lens < 0))
        raise ValueError(f"{name} must be non-decreasing: {name}[{i + 1}] = {vals[i + 1]} < {name}[{i}] = {vals[i]}")
    if qkv_format == "thd":
        if _known(total) and vals[-1] > total:
            raise ValueError(f"{name}[-1] = {vals[-1]}: exceeds the number of tokens {total}")
    elif _known(padded_len) and lens.size and lens.max() > padded_len:
        i = int(np.argmax(lens > padded_len))
        raise ValueError(f"{name}: sequence {i} has length {lens[i]} > the padded sequence length {padded_len}")
    if max_seqlen is not None and lens.size and lens.max() > max_seqlen:
        max_name = name.replace("cu_seqlens", "max_seqlen")
        raise ValueError(
            f"{name}: sequence {int(np.argmax(lens))} has length {lens.max()} > {max_name}={max_seqlen}"
        )
    return vals


def _check_backend_runs(backend, on_gpu, qkv_format):
    """Python-side reasons why an explicitly requested backend cannot run the call."""
    if backend in CUDA_BACKENDS:
        if not on_gpu:
            raise ValueError(f"backend={backend!r} cannot run this call: it runs on CUDA devices and the tensors are on the CPU")
        ok, why = _ops_lib.backend_available(backend)
        if not ok:
            raise ValueError(f"backend={backend!r} cannot run this call: {why}")
    elif backend == "cpu" and on_gpu:
        raise ValueError("backend='cpu' cannot run this call: it runs on CPU tensors and the tensors are on a CUDA device")
    elif backend == "unfused" and qkv_format == "thd":
        raise ValueError("backend='unfused' cannot run this call: it takes qkv_format 'bshd' or 'sbhd', not 'thd'")


def _device_id(x):
    if paddle.in_dynamic_mode():
        return x.place.gpu_device_id()
    dev = paddle.device.get_device()
    return int(dev.split(":")[1]) if ":" in dev else 0


def _needs_backward(tensors):
    """Whether a backward pass will run (static mode: assume so)."""
    if not paddle.in_dynamic_mode():
        return True
    return paddle.is_grad_enabled() and not all(t.stop_gradient for t in tensors)


def _fused_reason(backend, q, k, v, dtype, **problem):
    """The C core's capability check (pte_attn_check) for a GPU call: "" when ``backend``
    ("auto": any CUDA backend) can run it, forward and (when gradients will be needed) backward,
    else the reason. Also "" when shapes are not known yet (static mode: the op decides at run
    time, as before)."""
    shapes = [list(t.shape) for t in (q, k, v)]
    cu_len = problem.get("cu_len")
    if not all(_known(*shp) for shp in shapes) or (cu_len is not None and not _known(cu_len)):
        return ""
    if dtype not in _GPU_FUSED_DTYPES:
        return f"q has dtype {dtype}: the CUDA fused backends take float16 or bfloat16"
    kw = dict(q_shape=shapes[0], kv_shape=shapes[1], v_shape=shapes[2], dtype=dtype,
              on_gpu=True, device_id=_device_id(q), **problem)
    why = _ops_lib.attn_check(backend, **kw)
    if not why and _needs_backward((q, k, v)):
        why = _ops_lib.attn_check(backend, backward=True, **kw)
        if why:
            why = f"backward: {why}"
    return why


def _seed_offset(dropout, place_like):
    """int64 [2] {seed, offset}: from Paddle's generator when dropout is on, zeros otherwise."""
    if dropout > 0.0:
        so = paddle.randint(0, _SEED_HIGH, shape=[2], dtype="int64")
    else:
        so = paddle.zeros([2], dtype="int64")
    if paddle.in_dynamic_mode() and str(so.place) != str(place_like.place):
        so = so._copy_to(place_like.place, False)
    return so


def _attention_without_keys(q, k, v, qkv_format):
    """``(out, lse)`` of a call in which no query row sees a key, built without the op (which
    cannot take the zero-size tensors such calls have, see the module doc): out 0 in q's layout
    with v's head dim, lse -inf (SPEC §2: a row that sees no key), and gradients 0 for q, k, v
    (zero-size where they are empty). q, k, v: [b, s, h, d] / [s, b, h, d] / [t, h, d]; a dim
    unknown in static mode is read from the tensor at run time."""
    zero = _zero_from(q) + _zero_from(k) + _zero_from(v)
    rank = len(q.shape)
    dims = [_unfused.dim(q, i) for i in range(rank - 1)]  # [b, s_q, h] / [s_q, b, h] / [t_q, h]
    out = paddle.expand(zero, dims + [_unfused.dim(v, rank - 1)]).astype(q.dtype)
    rows = {"bshd": [0, 2, 1], "sbhd": [1, 2, 0], "thd": [1, 0]}[qkv_format]
    lse = paddle.expand(zero + float("-inf"), [dims[i] for i in rows])  # [b, h, s_q] / [h, t_q]
    return out, lse


@unified
def fused_attn(
    q,
    k,
    v,
    *,
    cu_seqlens_q=None,
    cu_seqlens_kv=None,
    max_seqlen_q=None,
    max_seqlen_kv=None,
    qkv_format="bshd",
    attn_mask_type="no_mask",
    window_size=None,
    softmax_scale=None,
    dropout=0.0,
    training=True,
    deterministic=False,
    return_softmax_lse=False,
    backend="auto",
):
    """Fused scaled-dot-product attention (SPEC §3). Returns ``out`` (q's layout, v's head dim),
    or ``(out, lse)`` with ``return_softmax_lse=True`` (lse float32 ``[b, h, s_q]``, ``[h, t_q]``
    for thd). See docs/api.md."""
    # ---- argument values -----------------------------------------------------------------------
    if not isinstance(qkv_format, str) or qkv_format not in QKV_FORMATS:
        raise ValueError(f"qkv_format={qkv_format!r}: must be one of {', '.join(map(repr, QKV_FORMATS))}")
    check_mask_type(attn_mask_type)
    if attn_mask_type == "arbitrary":
        raise ValueError(
            "attn_mask_type='arbitrary': fused_attn takes no mask tensor; use "
            "paddle_te.nn.DotProductAttention(attn_mask_type='arbitrary') with attention_mask, "
            "or scaled_masked_softmax"
        )
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: must be one of {', '.join(map(repr, BACKENDS))}")
    training = _check_bool(training, "training")
    deterministic = _check_bool(deterministic, "deterministic")
    return_softmax_lse = _check_bool(return_softmax_lse, "return_softmax_lse")
    dropout = _check_dropout(dropout)
    # The window as the kernels take it: a side past the int32 range is the unbounded side it is
    # equivalent to, for every path (capability check, unfused path, op attributes).
    left, right = _ops_lib.op_window(check_set_window_size(attn_mask_type, window_size))
    max_seqlen_q = _check_optional_int(max_seqlen_q, "max_seqlen_q")
    max_seqlen_kv = _check_optional_int(max_seqlen_kv, "max_seqlen_kv")

    # ---- tensors -----------------------------------------------------------------------------
    rank = 3 if qkv_format == "thd" else 4
    layout = {"bshd": "[b, s, h, d]", "sbhd": "[s, b, h, d]", "thd": "[t, h, d]"}[qkv_format]
    shapes = {}
    for name, t in (("q", q), ("k", k), ("v", v)):
        shp = _check_tensor(t, name)
        if len(shp) != rank:
            raise ValueError(
                f"{name} has shape {shp} (rank {len(shp)}): qkv_format={qkv_format!r} expects "
                f"rank {rank} {layout}"
            )
        if _dtype_name(t.dtype) not in _FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {_dtype_name(t.dtype)}: allowed {', '.join(_FLOAT_DTYPES)}")
        shapes[name] = shp
    dtype = _dtype_name(q.dtype)
    for name, t in (("k", k), ("v", v)):
        if _dtype_name(t.dtype) != dtype:
            raise TypeError(f"{name} has dtype {_dtype_name(t.dtype)}: must match q's dtype {dtype}")
        _check_same_place(t, name, q, "q")
    b, s_q, h, d = _layout_dims(shapes["q"], qkv_format)
    b_k, s_kv, h_kv, d_k = _layout_dims(shapes["k"], qkv_format)
    b_v, s_v, h_v, d_v = _layout_dims(shapes["v"], qkv_format)
    _check_qkv_dims(shapes, {"q": (b, s_q, h, d), "k": (b_k, s_kv, h_kv, d_k),
                             "v": (b_v, s_v, h_v, d_v)}, batched=qkv_format != "thd")
    if _known(h, h_kv) and (h_kv == 0 and h != 0 or h_kv != 0 and h % h_kv != 0):
        raise ValueError(
            f"k has shape {shapes['k']}: its {h_kv} heads must divide q's {h} heads (GQA/MQA: query "
            f"head i uses kv head i // (h / h_kv))"
        )
    if softmax_scale is None:
        if not _known(d):
            raise ValueError("softmax_scale=None needs a known head dim of q; pass softmax_scale")
        softmax_scale = 1.0 / math.sqrt(d)
    else:
        softmax_scale = _check_scale(softmax_scale, "softmax_scale")

    # ---- device and backend ------------------------------------------------------------------
    on_gpu = _is_gpu(q)
    _check_backend_runs(backend, on_gpu, qkv_format)

    # ---- sequence lengths --------------------------------------------------------------------
    if qkv_format == "thd":
        if cu_seqlens_q is None and cu_seqlens_kv is None:
            raise ValueError("cu_seqlens_q=None: qkv_format='thd' requires cu_seqlens_q and cu_seqlens_kv")
    else:
        has_cu = cu_seqlens_q is not None or cu_seqlens_kv is not None
        if is_padding(attn_mask_type) and not has_cu:
            raise ValueError(
                f"attn_mask_type={attn_mask_type!r} with qkv_format={qkv_format!r} needs "
                "cu_seqlens_q and cu_seqlens_kv (the actual sequence lengths)"
            )
        if has_cu and not is_padding(attn_mask_type):
            which = "cu_seqlens_q" if cu_seqlens_q is not None else "cu_seqlens_kv"
            raise ValueError(
                f"{which} was given with attn_mask_type={attn_mask_type!r}, which has no padding: "
                f"use {with_padding(attn_mask_type)!r} to apply sequence lengths"
            )
    # Self-attention convenience: one cu_seqlens serves both sides when the (padded or packed)
    # lengths of q and kv agree.
    if (cu_seqlens_q is None) != (cu_seqlens_kv is None):
        given, missing = ("cu_seqlens_q", "cu_seqlens_kv") if cu_seqlens_kv is None else ("cu_seqlens_kv", "cu_seqlens_q")
        if not (_known(s_q, s_kv) and s_q == s_kv):
            raise ValueError(
                f"{missing}=None: required with {given} when q and kv lengths differ ({s_q} vs {s_kv})"
            )
        cu_seqlens_q = cu_seqlens_kv = cu_seqlens_q if cu_seqlens_q is not None else cu_seqlens_kv
    if qkv_format == "thd":
        # No sequence holds more tokens than the tensor: a larger bound is the token count. The
        # kernels size their grid by max_seqlen (row blocks per sequence), so max_seqlen_q=2**40
        # hung the CPU kernel on empty blocks and would overflow a CUDA grid.
        if max_seqlen_q is not None and _known(s_q):
            max_seqlen_q = min(max_seqlen_q, s_q)
        if max_seqlen_kv is not None and _known(s_kv):
            max_seqlen_kv = min(max_seqlen_kv, s_kv)
    if cu_seqlens_q is not None:
        cu_q_vals = _check_cu_seqlens(cu_seqlens_q, "cu_seqlens_q", qkv_format, b, s_q, s_q, max_seqlen_q, q)
        cu_kv_vals = _check_cu_seqlens(cu_seqlens_kv, "cu_seqlens_kv", qkv_format, b, s_kv, s_kv, max_seqlen_kv, q)
        if qkv_format == "thd":
            nq, nkv = list(cu_seqlens_q.shape)[0], list(cu_seqlens_kv.shape)[0]
            if _known(nq, nkv) and nq != nkv:
                raise ValueError(
                    f"cu_seqlens_kv has shape [{nkv}]: must match cu_seqlens_q's [{nq}] (one entry per sequence + 1)"
                )
            if max_seqlen_q is None and cu_q_vals is not None:
                max_seqlen_q = int(np.diff(cu_q_vals).max(initial=0))
            if max_seqlen_kv is None and cu_kv_vals is not None:
                max_seqlen_kv = int(np.diff(cu_kv_vals).max(initial=0))
    # max_seqlen: an upper bound. Padded layouts: the padded length (no host sync). thd: derived
    # above in dygraph, else 0 = let the core use the token count.
    if qkv_format != "thd":
        if max_seqlen_q is None:
            max_seqlen_q = s_q if _known(s_q) else 0
        if max_seqlen_kv is None:
            max_seqlen_kv = s_kv if _known(s_kv) else 0
        if _known(s_q) and max_seqlen_q > s_q:
            raise ValueError(f"max_seqlen_q={max_seqlen_q}: exceeds q's padded sequence length {s_q}")
        if _known(s_kv) and max_seqlen_kv > s_kv:
            raise ValueError(f"max_seqlen_kv={max_seqlen_kv}: exceeds k's padded sequence length {s_kv}")
    max_seqlen_q = max_seqlen_q or 0
    max_seqlen_kv = max_seqlen_kv or 0
    mask_type = with_padding(attn_mask_type) if qkv_format == "thd" else attn_mask_type

    # ---- choose the path ---------------------------------------------------------------------
    p = dropout if training else 0.0
    if backend == "cudnn" and p > 0.0:
        warnings.warn(
            f"backend='cudnn' with dropout={p}: cuDNN's dropout masks are correlated (the keep "
            "rates of single key columns spread about twice as much as independent draws; "
            "cuDNN's generator, not paddle_te's seeding: docs/backends.md). backend='auto' or "
            "'flash' use paddle_te's documented Philox mask",
            UserWarning,
            stacklevel=2,
        )
    q, k, v = _grad_guard(q, k, v)
    q, k, v = _amp_cast([q, k, v], on_gpu)
    dtype = _dtype_name(q.dtype)
    n_seq = list(cu_seqlens_q.shape)[0] if cu_seqlens_q is not None else None
    if _has_zero_dim(q.shape) or _has_zero_dim(k.shape) or (_known(n_seq) and n_seq == 1):
        # Nothing to compute: no query rows, no keys, or no sequences (cu_seqlens [0]).
        if on_gpu and backend in CUDA_BACKENDS and dtype not in _GPU_FUSED_DTYPES:
            raise ValueError(
                f"backend={backend!r} cannot run this call: q has dtype {dtype}: the CUDA fused "
                "backends take float16 or bfloat16 (use paddle.amp.auto_cast, or backend='unfused')"
            )
        out, lse = _attention_without_keys(q, k, v, qkv_format)
        return (out, lse) if return_softmax_lse else out
    use_unfused = backend == "unfused"
    if on_gpu and backend != "unfused":
        # One capability source: the core's check, with its reason (STYLE habit 7).
        has_cu = cu_seqlens_q is not None
        why = _fused_reason(
            backend, q, k, v, dtype, qkv_format=qkv_format, mask_type=mask_type,
            window=(left, right), softmax_scale=softmax_scale, dropout=p,
            max_seqlen_q=max_seqlen_q, max_seqlen_kv=max_seqlen_kv,
            cu_len=list(cu_seqlens_q.shape)[0] if has_cu else None,
        )
        if why and backend != "auto":
            hint = " (use paddle.amp.auto_cast, or backend='unfused')" if dtype not in _GPU_FUSED_DTYPES else ""
            raise ValueError(f"backend={backend!r} cannot run this call: {why}{hint}")
        if why:
            # auto never fails where the unfused path can run (SPEC §3): float32 on the GPU, a
            # head dim no compiled kernel has, a window cuDNN lacks with flash absent, ...
            if qkv_format == "thd":
                raise ValueError(
                    f"backend='auto' cannot run this call: no fused backend can ({why}), and the "
                    "unfused path takes qkv_format 'bshd' or 'sbhd', not 'thd'"
                )
            use_unfused = True
    if use_unfused:
        out, lse = _unfused.fused_attn_unfused(
            q, k, v, cu_q=cu_seqlens_q, cu_kv=cu_seqlens_kv, qkv_format=qkv_format,
            mask_type=attn_mask_type, window=(left, right), scale=softmax_scale, dropout=p,
            want_lse=return_softmax_lse,
        )
        return (out, lse) if return_softmax_lse else out

    op_backend = "auto" if backend == "auto" else backend
    seed_offset = _seed_offset(p, q)
    out, lse = _ops_lib.run_op(
        "pte_fused_attn",
        [("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_kv", cu_seqlens_kv),
         ("seed_offset", seed_offset), ("startend_row_indices", None)],
        [("qkv_format", qkv_format), ("mask_type", mask_type), ("backend", op_backend),
         ("max_seqlen_q", int(max_seqlen_q)), ("max_seqlen_kv", int(max_seqlen_kv)),
         ("window_left", int(left)), ("window_right", int(right)),
         ("softmax_scale", _scale_attr(softmax_scale)), ("dropout", float(p)),
         ("deterministic", bool(deterministic))],
        ["out", "lse"],
    )
    return (out, lse) if return_softmax_lse else out


# ------------------------------------------------------------------------------------------------
# mask -> cu_seqlens
# ------------------------------------------------------------------------------------------------
@unified
def mask_to_cu_seqlens(mask, mask_kv=None, *, check=True):
    """Right-padding masks (bool, True = padding) -> ``(cu_seqlens_q, cu_seqlens_kv)``, int32
    ``[b+1]`` each (SPEC §3). A mask that is not right padding raises ``ValueError`` in dygraph
    (naming ``attn_mask_type="arbitrary"``); in static mode it cannot be checked.

    ``check=False`` skips that check: the op writes its verdict on the device and nobody reads it,
    so a GPU call makes no device->host copy (the layers' choice, ``paddle_te.masks.set_mask_check``).
    With ``check=True`` on the GPU, reading the verdict is one device->host copy."""
    return _mask_to_cu_seqlens(mask, mask_kv, check, ("mask", "mask_kv"))


@unified
def _mask_to_cu_seqlens(mask, mask_kv, check, names):
    """mask_to_cu_seqlens; `names`: what the caller calls `mask` and `mask_kv` (a layer's
    "attention_mask"), for the message of a mask that is not right padding."""
    check = _check_bool(check, "check")
    shape = _check_tensor(mask, "mask", ranks=(4,), dtypes=("bool",))
    b = shape[0]
    if _known(shape[1]) and shape[1] != 1:
        raise ValueError(
            f"mask has shape {shape}: expected [b, 1, 1, s], [b, 1, 1, s_q] (with mask_kv) or [b, 1, s_q, s_kv]"
        )
    if mask_kv is not None:
        kv_shape = _check_tensor(mask_kv, "mask_kv", ranks=(4,), dtypes=("bool",))
        if _known(shape[2]) and shape[2] != 1:
            raise ValueError(f"mask has shape {shape}: with mask_kv, mask must be [b, 1, 1, s_q]")
        if (_known(kv_shape[1]) and kv_shape[1] != 1) or (_known(kv_shape[2]) and kv_shape[2] != 1):
            raise ValueError(f"mask_kv has shape {kv_shape}: expected [b, 1, 1, s_kv]")
        if _known(b, kv_shape[0]) and kv_shape[0] != b:
            raise ValueError(f"mask_kv has shape {kv_shape}: batch {kv_shape[0]} must equal mask's batch {b}")
        _check_same_place(mask_kv, "mask_kv", mask, "mask")
    empty_kv = mask_kv is not None and _has_zero_dim(mask_kv.shape)
    if _has_zero_dim(shape) or empty_kv:
        return _cu_seqlens_of_empty_masks(mask, mask_kv, check, names)
    cu_q, cu_kv, valid = _ops_lib.run_op(
        "pte_mask_to_cu_seqlens",
        [("mask", mask), ("mask_kv", mask_kv)],
        [],
        ["cu_seqlens_q", "cu_seqlens_kv", "valid"],
    )
    if check and paddle.in_dynamic_mode() and int(valid.numpy().reshape(-1)[0]) == 0:
        name = names[0]
        if mask_kv is not None:  # which of the two (the error path only: one more call)
            alone = _ops_lib.run_op("pte_mask_to_cu_seqlens", [("mask", mask), ("mask_kv", None)],
                                    [], ["cu_seqlens_q", "cu_seqlens_kv", "valid"])[2]
            name = names[1] if int(alone.numpy().reshape(-1)[0]) else names[0]
        raise ValueError(
            f"{name}: not a right-padding mask (left padding, holes, or a full mask that is not the "
            "outer OR of a q and a kv padding mask); use attn_mask_type=\"arbitrary\" with the mask "
            "instead of cu_seqlens"
        )
    return cu_q, cu_kv


def _cu_seqlens_of_empty_masks(mask, mask_kv, check, names):
    """mask_to_cu_seqlens where a mask has no elements (the op cannot take it, see the module
    doc). An empty mask gives every sequence of its side length 0 (with b = 0: cu_seqlens [0]);
    with mask_kv, the other side, if not empty, comes from the op on that mask alone (the
    one-mask form gives the same lengths to both sides)."""
    n = _unfused.dim(mask, 0) + 1  # b + 1 (a 0-D tensor in static mode when b is unknown)
    cu_q, cu_kv = _zeros_on([n], "int32", mask), _zeros_on([n], "int32", mask)
    if mask_kv is not None and not _has_zero_dim(mask_kv.shape):  # mask [b, 1, 1, 0]: no queries
        cu_kv = _mask_to_cu_seqlens(mask_kv, None, check, (names[1], names[1]))[1]
    elif mask_kv is not None and not _has_zero_dim(mask.shape):  # mask_kv [b, 1, 1, 0]: no keys
        cu_q = _mask_to_cu_seqlens(mask, None, check, names)[0]
    return cu_q, cu_kv


# ------------------------------------------------------------------------------------------------
# masked softmax
# ------------------------------------------------------------------------------------------------
def _softmax_x(x, scale):
    shape = _check_tensor(x, "x", ranks=(4,), dtypes=_FLOAT_DTYPES)
    scale = _check_scale(scale, "scale")
    return shape, scale


def _run_softmax(op, x, scale, mask=None):
    (x,) = _grad_guard(x)
    if _has_zero_dim(x.shape):
        # An empty x has an empty softmax (the op cannot take it, see the module doc): a copy,
        # so that y is in x's graph and x's gradient is the zero-size one.
        return x.clone()
    inputs = [("x", x)] + ([("mask", mask)] if mask is not None else [])
    (y,) = _ops_lib.run_op(op, inputs, [("scale", _scale_attr(scale))], ["y"])
    return y


@unified
def scaled_softmax(x, scale=1.0):
    """``softmax(scale * x)`` over the last axis; x ``[b, h, s_q, s_kv]``."""
    _, scale = _softmax_x(x, scale)
    return _run_softmax("pte_scaled_softmax", x, scale)


@unified
def scaled_masked_softmax(x, mask, scale=1.0):
    """Softmax of ``scale * x`` over the last axis with ``mask`` (bool ``[b or 1, 1, s_q, s_kv]``,
    True = masked out) elements excluded; fully masked rows give 0."""
    shape, scale = _softmax_x(x, scale)
    mshape = _check_tensor(mask, "mask", ranks=(4,))
    if _dtype_name(mask.dtype) != "bool":
        raise TypeError(f"mask has dtype {_dtype_name(mask.dtype)}: must be bool (True = masked out)")
    want = ["b or 1", 1, shape[2], shape[3]]
    bad = (
        (_known(mshape[0], shape[0]) and mshape[0] not in (1, shape[0]))
        or (_known(mshape[1]) and mshape[1] != 1)
        or (_known(mshape[2], shape[2]) and mshape[2] != shape[2])
        or (_known(mshape[3], shape[3]) and mshape[3] != shape[3])
    )
    if bad:
        raise ValueError(f"mask has shape {mshape}: expected {want} for x of shape {shape}")
    _check_same_place(mask, "mask", x, "x")
    return _run_softmax("pte_scaled_masked_softmax", x, scale, mask)


@unified
def scaled_upper_triang_masked_softmax(x, scale=1.0):
    """Causal (top-left: key j visible from query i iff j <= i) softmax of ``scale * x``."""
    _, scale = _softmax_x(x, scale)
    return _run_softmax("pte_scaled_upper_triang_masked_softmax", x, scale)


@unified
def scaled_aligned_causal_masked_softmax(x, scale=1.0):
    """Causal softmax aligned bottom-right (key j visible from query i iff
    j <= i + s_kv - s_q) of ``scale * x``."""
    _, scale = _softmax_x(x, scale)
    return _run_softmax("pte_scaled_aligned_causal_masked_softmax", x, scale)


# decode_attn (SPEC §10) lives in its own module; imported last because it uses the helpers above.
from ._decode import decode_attn  # noqa: E402
# flashmask_attention (SPEC §9): its own module, on the helpers above.
from ._flashmask_op import flashmask_attention  # noqa: E402
