"""Loads the compiled op library and calls its custom ops.

The library (``paddle_te/_paddle_te_ops.so``, built by setup.py) registers the ``pte_*`` custom
operators with Paddle when it is loaded here, once per process. Loading a second library that
registers the same op names aborts the process (``meta info register failed``), so nothing else
in paddle_te loads it. Saved models that contain ``pte_*`` ops need this import before
``paddle.jit.load`` / ``paddle.inference.create_predictor``.

The same library also exports the framework-free C API (``pte_*`` C functions); a few of them
(backend names and availability, the attention capability check, version) are reached through
ctypes.
"""

import ctypes
import os
import re

import paddle
from paddle import _C_ops
from paddle.base.layer_helper import LayerHelper
from paddle.framework import in_dynamic_or_pir_mode
from paddle.jit.marker import unified

from . import _vocab

__all__ = [
    "LIB_PATH",
    "OP_NAMES",
    "CORE_BACKENDS",
    "run_op",
    "backend_available",
    "attn_check",
    "core_version",
    "PteOpError",
    "WINDOW_ATTRS",
    "op_window",
]

_HERE = os.path.dirname(os.path.abspath(__file__))
LIB_PATH = os.path.join(_HERE, "_paddle_te_ops.so")

if not os.path.exists(LIB_PATH):
    raise ImportError(
        f"paddle_te: the op library {LIB_PATH} is missing. Build it with "
        "`pip install --no-build-isolation .` or, in a source tree, "
        "`python setup.py build_ext --inplace` (docs/build.md)."
    )

#: Names of the custom ops the library registered.
OP_NAMES = tuple(paddle.utils.cpp_extension.load_op_meta_info_and_register_op(LIB_PATH))

_CLIB = ctypes.CDLL(LIB_PATH)  # already loaded above; this only resolves symbols
_CLIB.pte_backend_available.restype = ctypes.c_int
_CLIB.pte_backend_available.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
_CLIB.pte_version.restype = ctypes.c_char_p
_CLIB.pte_version.argtypes = []
_CLIB.pte_last_error.restype = ctypes.c_char_p
_CLIB.pte_last_error.argtypes = []


def _c_names(function):
    """The words of one C API vocabulary, in enum order: `function` (pte_backend_name and, where
    the library has them, pte_qkv_format_name / pte_mask_type_name) over 0, 1, ... until it
    answers NULL or "unknown". None when the library lacks the function."""
    fn = getattr(_CLIB, function, None)
    if fn is None:
        return None
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_int]
    names = []
    for value in range(64):
        name = fn(value)
        if name is None or name == b"unknown":
            break
        names.append(name.decode())
    return tuple(names)


_BACKEND_ENUM = {name: i for i, name in enumerate(_c_names("pte_backend_name"))}
#: The C core's backends ("auto" first), in the order of its enum.
CORE_BACKENDS = tuple(_BACKEND_ENUM)


def backend_available(name):
    """``(available, reason)`` for a core backend in this build on this machine."""
    reason = ctypes.c_char_p()
    ok = _CLIB.pte_backend_available(_BACKEND_ENUM[name], ctypes.byref(reason))
    text = reason.value.decode("utf-8", "replace") if reason.value else ""
    return bool(ok), text


# ---- the capability check (pte_attn_check) ------------------------------------------------------
# Reached through ctypes on the library Paddle has already loaded, rather than through a custom
# op or a second C entry point: the check runs no kernel and reads no tensor data, so an op (with
# its registration, infer-shape and static-graph plumbing) would carry nothing but overhead, and
# a scalar-argument C entry would be a second definition of the problem beside the params struct.
# The cost is this mirror of two C structs; tests/test_capability.py holds it to the header
# (field names and order) and to the core's answers.

_MAX_DIMS = 8  # PTE_MAX_DIMS (common.h)


class _Tensor(ctypes.Structure):
    """pte_tensor_t (csrc/include/paddle_te/common.h)."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * _MAX_DIMS),
        ("strides", ctypes.c_int64 * _MAX_DIMS),
        ("device", ctypes.c_int),
        ("device_id", ctypes.c_int32),
    ]


class _AttnParams(ctypes.Structure):
    """pte_attn_params_t (csrc/include/paddle_te/attention.h)."""

    _fields_ = [
        ("q", _Tensor),
        ("k", _Tensor),
        ("v", _Tensor),
        ("out", _Tensor),
        ("lse", _Tensor),
        ("d_out", _Tensor),
        ("d_q", _Tensor),
        ("d_k", _Tensor),
        ("d_v", _Tensor),
        ("cu_seqlens_q", _Tensor),
        ("cu_seqlens_kv", _Tensor),
        ("max_seqlen_q", ctypes.c_int64),
        ("max_seqlen_kv", ctypes.c_int64),
        ("qkv_format", ctypes.c_int),
        ("mask_type", ctypes.c_int),
        ("window_left", ctypes.c_int64),
        ("window_right", ctypes.c_int64),
        ("softmax_scale", ctypes.c_double),
        ("dropout", ctypes.c_float),
        ("seed", ctypes.c_uint64),
        ("offset", ctypes.c_uint64),
        ("seed_offset_device", ctypes.c_void_p),
        ("deterministic", ctypes.c_int32),
        ("backend", ctypes.c_int),
        ("stream", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_size", ctypes.c_size_t),
        ("startend_row_indices", _Tensor),
    ]


_CLIB.pte_attn_params_init.restype = None
_CLIB.pte_attn_params_init.argtypes = [ctypes.POINTER(_AttnParams)]
_CLIB.pte_attn_check.restype = ctypes.c_int
_CLIB.pte_attn_check.argtypes = [ctypes.POINTER(_AttnParams), ctypes.c_int, ctypes.c_int]

# Enum values of the C API (common.h, attention.h). Formats and mask types: the index in the
# one table of each (_vocab.py, in enum order).
_DTYPE_ENUM = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3, "int32": 4, "int64": 5, "bool": 6}
# Where the library names them itself (pte_qkv_format_name, pte_mask_type_name), its words are
# used; tests/test_capability.py holds _vocab's tables to them and to the header.
C_QKV_FORMATS = _c_names("pte_qkv_format_name")
C_MASK_TYPES = _c_names("pte_mask_type_name")
_FORMAT_ENUM = {name: i for i, name in enumerate(C_QKV_FORMATS or _vocab.QKV_FORMATS)}
_MASK_ENUM = {name: i for i, name in enumerate(C_MASK_TYPES or _vocab.CORE_MASK_TYPES)}
# The check dereferences no tensor data (CUDA cu_seqlens values are never read on the host; CPU
# calls are not checked through here), only tests it for null: a stand-in address for tensors
# that have none yet (outputs).
_NO_DATA = 16


def _tensor(shape, dtype, on_gpu, device_id, data=None):
    t = _Tensor()
    t.data = data if data else _NO_DATA
    t.dtype = _DTYPE_ENUM[dtype]
    t.ndim = len(shape)
    stride = 1
    for i in range(len(shape) - 1, -1, -1):  # contiguous: the ops make their inputs so
        t.shape[i] = int(shape[i])
        t.strides[i] = stride
        stride *= int(shape[i])
    t.device = 1 if on_gpu else 0
    t.device_id = device_id
    return t


def attn_check(backend, *, q_shape, kv_shape, v_shape, dtype, qkv_format, mask_type, window,
               softmax_scale, dropout, max_seqlen_q, max_seqlen_kv, cu_len=None, on_gpu=True,
               device_id=0, backward=False, startend_shape=None):
    """The core's capability check for one fused_attn call, without running it: ``""`` when
    ``backend`` can run it (``backward=True``: its backward too), else the core's reason.

    Shapes are the layout's (``q_shape`` ``[b, s_q, h, d]`` / ``[s_q, b, h, d]`` / ``[t_q, h, d]``,
    ``kv_shape`` k's, ``v_shape`` v's); ``cu_len`` is the length of cu_seqlens (``b + 1``) or
    None. Invalid arguments (which the Python validation has already excluded) come back as a
    reason too.
    """
    if cu_len is not None and not on_gpu:
        raise ValueError("attn_check: cu_seqlens on the CPU would be read; check CPU calls by running them")
    key = (backend, bool(backward), tuple(q_shape), tuple(kv_shape), tuple(v_shape), dtype,
           qkv_format, mask_type, tuple(window), float(softmax_scale), float(dropout),
           int(max_seqlen_q), int(max_seqlen_kv), cu_len, bool(on_gpu), int(device_id),
           (os.environ.get("PTE_FLASH_VARIANT"), os.environ.get("PTE_FLASHMASK_CUDA")),
           None if startend_shape is None else tuple(int(x) for x in startend_shape))
    why = _CHECKS.get(key)
    if why is None:
        why = _attn_check(key)
        if len(_CHECKS) >= _CHECKS_MAX:
            _CHECKS.clear()
        _CHECKS[key] = why
    return why


# The answers of pte_attn_check by call description: a training step asks the same few questions
# every time (11 us each through ctypes; a dict lookup here). The answer depends on nothing else
# (tensor data is never read, the device and build do not change within a process; the flash
# backend's environment variables are part of the key). Bounded; dict operations are atomic
# under the GIL.
_CHECKS = {}
_CHECKS_MAX = 1024


def _attn_check(key):
    (backend, backward, q_shape, kv_shape, v_shape, dtype, qkv_format, mask_type, window,
     softmax_scale, dropout, max_seqlen_q, max_seqlen_kv, cu_len, on_gpu, device_id, _,
     startend_shape) = key
    q_shape, kv_shape, v_shape = list(q_shape), list(kv_shape), list(v_shape)
    p = _AttnParams()
    _CLIB.pte_attn_params_init(ctypes.byref(p))
    args = (on_gpu, device_id)
    p.q = _tensor(q_shape, dtype, *args)
    p.k = _tensor(kv_shape, dtype, *args)
    p.v = _tensor(v_shape, dtype, *args)
    out_shape = q_shape[:-1] + v_shape[-1:]
    p.out = _tensor(out_shape, dtype, *args)
    if qkv_format == "thd":
        lse_shape = [q_shape[1], q_shape[0]]  # [h, t_q]
    elif qkv_format == "bshd":
        lse_shape = [q_shape[0], q_shape[2], q_shape[1]]  # [b, h, s_q]
    else:
        lse_shape = [q_shape[1], q_shape[2], q_shape[0]]
    p.lse = _tensor(lse_shape, "float32", *args)
    if backward:
        p.d_out = _tensor(out_shape, dtype, *args)
        p.d_q, p.d_k, p.d_v = p.q, p.k, p.v
    if cu_len is not None:
        p.cu_seqlens_q = _tensor([cu_len], "int32", *args)
        p.cu_seqlens_kv = _tensor([cu_len], "int32", *args)
    p.max_seqlen_q, p.max_seqlen_kv = int(max_seqlen_q), int(max_seqlen_kv)
    p.qkv_format = _FORMAT_ENUM[qkv_format]
    p.mask_type = _MASK_ENUM[mask_type]
    p.window_left, p.window_right = int(window[0]), int(window[1])
    p.softmax_scale = float(softmax_scale)
    p.dropout = float(dropout)
    p.backend = _BACKEND_ENUM[backend]
    if startend_shape is not None:
        p.startend_row_indices = _tensor(list(startend_shape), "int32", *args)
    status = _CLIB.pte_attn_check(ctypes.byref(p), p.backend, 1 if backward else 0)
    if status == 0:
        return ""
    # The text is thread-local in the core, and ctypes calls on this thread: no race.
    return (_CLIB.pte_last_error() or b"").decode("utf-8", "replace") or f"status {status}"


def core_version():
    return _CLIB.pte_version().decode()


class PteOpError(ValueError):
    """A ``pte_*`` op rejected its arguments (INVALID_ARGUMENT or NOT_SUPPORTED in the core)."""


# The ops prefix every message with a status tag (csrc/paddle/op_utils.h).
_TAG = re.compile(r"\[paddle_te:(invalid_argument|not_supported|cuda_error|internal_error)\] ")


def _translate(exc):
    """The exception to raise for an error thrown by a pte op, or None to re-raise as is."""
    msg = str(exc)
    m = _TAG.search(msg)
    if m is None or m.group(1) not in ("invalid_argument", "not_supported"):
        return None
    text = msg[m.end():].split("\n", 1)[0].strip()
    # Paddle appends " (at file:line)"; drop it.
    text = re.sub(r"\s*\(at [^()]*:\d+\)\s*$", "", text)
    err = PteOpError(text)
    err.status = m.group(1)
    return err


@unified
def _run_static_legacy(op_name, inputs, attrs, outputs):
    ins = {k: v for k, v in inputs if v is not None}
    helper = LayerHelper(op_name, **locals())
    outs = {name: helper.create_variable(dtype="float32") for name in outputs}
    helper.append_op(type=op_name, inputs=ins, outputs=outs, attrs=dict(attrs))
    return [outs[name] for name in outputs]


# ---- windows as op attributes -----------------------------------------------------------------
#: The ops' window attributes: 32-bit ints (``int`` in csrc/paddle/attn_params.h).
WINDOW_ATTRS = ("window_left", "window_right")
# A window side this large never excludes a key: sequence lengths are < 2^31, so with top-left
# alignment i - left < 0 <= j and i + right > j, and with bottom-right alignment (causal types:
# right = 0) i + delta - left <= L_k - 1 - left < 0. It is exactly the unbounded side (-1), and
# unlike the user's value (SPEC §2 keeps any l, r >= -1) it fits the attribute.
_UNBOUNDED_FROM = 2**31 - 1


def op_window(window):
    """``(left, right)`` as the ops take it: a side >= 2^31 - 1 becomes -1 (unbounded), which it
    is equivalent to; other values as they are. ``run_op`` applies it to every op's window
    attributes; callers that also consult the window elsewhere (capability check, unfused path)
    apply it first so that every path sees the same window."""
    left, right = window
    return (_op_window_side(left), _op_window_side(right))


def _op_window_side(w):
    w = int(w)
    return -1 if w >= _UNBOUNDED_FROM else w


@unified
def run_op(op_name, inputs, attrs, outputs):
    """Run custom op ``op_name``.

    inputs: list of (slot name, tensor or None) in declaration order; attrs: list of
    (name, python value) in declaration order; outputs: output slot names. Returns a list of
    outputs. In dygraph, argument errors raised by the core come back as ``ValueError``.
    Window attributes (``WINDOW_ATTRS``) go through :func:`op_window`, so a legal window side
    past the int32 range reaches the op as the -1 it is equivalent to.
    """
    attrs = [(k, _op_window_side(v) if k in WINDOW_ATTRS else v) for k, v in attrs]
    if in_dynamic_or_pir_mode():
        args = [t for _, t in inputs] + [v for _, v in attrs]
        if paddle.in_dynamic_mode():
            try:
                outs = _C_ops._run_custom_op(op_name, *args)
            except Exception as e:  # noqa: BLE001 - re-raised below unless it is ours
                err = _translate(e)
                if err is None:
                    raise
                raise err from None
        else:
            outs = _C_ops._run_custom_op(op_name, *args)
        return list(outs)
    return _run_static_legacy(op_name, inputs, attrs, outputs)
