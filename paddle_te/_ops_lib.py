"""Loads the compiled op library and calls its custom ops.

The library (``paddle_te/_paddle_te_ops.so``, built by setup.py) registers the ``pte_*`` custom
operators with Paddle when it is loaded here, once per process. Loading a second library that
registers the same op names aborts the process (``meta info register failed``), so nothing else
in paddle_te loads it. Saved models that contain ``pte_*`` ops need this import before
``paddle.jit.load`` / ``paddle.inference.create_predictor``.

The same library also exports the framework-free C API (``pte_*`` C functions); a few of them
(backend availability, version) are reached through ctypes.
"""

import ctypes
import os
import re

import paddle
from paddle import _C_ops
from paddle.base.layer_helper import LayerHelper
from paddle.framework import in_dynamic_or_pir_mode
from paddle.jit.marker import unified

__all__ = ["LIB_PATH", "OP_NAMES", "run_op", "backend_available", "core_version", "PteOpError"]

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

# pte_backend_t values (csrc/include/paddle_te/attention.h)
_BACKEND_ENUM = {"auto": 0, "flash": 1, "cudnn": 2, "cpu": 3}


def backend_available(name):
    """``(available, reason)`` for a core backend in this build on this machine."""
    reason = ctypes.c_char_p()
    ok = _CLIB.pte_backend_available(_BACKEND_ENUM[name], ctypes.byref(reason))
    text = reason.value.decode("utf-8", "replace") if reason.value else ""
    return bool(ok), text


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


@unified
def run_op(op_name, inputs, attrs, outputs):
    """Run custom op ``op_name``.

    inputs: list of (slot name, tensor or None) in declaration order; attrs: list of
    (name, python value) in declaration order; outputs: output slot names. Returns a list of
    outputs. In dygraph, argument errors raised by the core come back as ``ValueError``.
    """
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
