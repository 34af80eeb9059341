"""The capability check as Python sees it (issue 10, part 4), on the CPU.

* paddle_te reaches the core's pte_attn_check through ctypes over a mirror of two C structs: the
  mirror is held to the header (field names and order), the Python vocabularies to the C enums,
  and the check's answers to the core's own reasons.
* `auto` never raises where the unfused path could run: on a (simulated) GPU, a call the core's
  check refuses runs unfused, with the same result; for thd (which the unfused path lacks) the
  error carries the core's reason.
"""

import os
import re

import numpy as np
import paddle
import pytest

import paddle_te
import reference as R
from paddle_te import _ops_lib, _unfused, _vocab, ops

_INCLUDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc",
                        "include", "paddle_te")


def _header(name):
    with open(os.path.join(_INCLUDE, name)) as f:
        text = f.read()
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments out


def _struct_fields(text, struct):
    body = re.search(r"typedef struct \{([^}]*)\}\s*" + struct + r";", text, re.S).group(1)
    names = []
    for decl in body.split(";"):
        decl = decl.strip()
        if decl:
            names.append(re.search(r"\**(\w+)\s*(\[[^\]]*\])?$", decl).group(1))
    return names


def _enum_names(text, enum, prefix):
    body = re.search(r"typedef enum \{([^}]*)\}\s*" + enum + r";", text, re.S).group(1)
    out = []
    for item in body.split(","):
        m = re.match(r"\s*(\w+)\s*=\s*(\d+)", item)
        if m and not m.group(1).endswith("_COUNT"):
            assert int(m.group(2)) == len(out), f"{enum}: {m.group(1)} is not in index order"
            out.append(m.group(1)[len(prefix):].lower())
    return out


def test_ctypes_mirror_matches_the_header():
    assert [f for f, _ in _ops_lib._Tensor._fields_] == _struct_fields(_header("common.h"), "pte_tensor_t")
    assert [f for f, _ in _ops_lib._AttnParams._fields_] == _struct_fields(
        _header("attention.h"), "pte_attn_params_t")


def test_vocabularies_follow_the_c_enums():
    att, com = _header("attention.h"), _header("common.h")
    assert _enum_names(att, "pte_qkv_format_t", "PTE_QKV_") == list(_vocab.QKV_FORMATS)
    assert _enum_names(att, "pte_mask_type_t", "PTE_MASK_") == list(_vocab.CORE_MASK_TYPES)
    assert _enum_names(att, "pte_backend_t", "PTE_BACKEND_") == list(_ops_lib.CORE_BACKENDS)
    assert _enum_names(com, "pte_dtype_t", "PTE_") == list(_ops_lib._DTYPE_ENUM)
    # Where the library names the words itself, they are the same.
    for c_names, table in ((_ops_lib.C_QKV_FORMATS, _vocab.QKV_FORMATS),
                           (_ops_lib.C_MASK_TYPES, _vocab.CORE_MASK_TYPES)):
        assert c_names is None or c_names == table
    assert paddle_te.masks.MASK_TYPES is _vocab.MASK_TYPES
    assert ops.QKV_FORMATS is _vocab.QKV_FORMATS
    assert set(ops.BACKENDS) == set(_ops_lib.CORE_BACKENDS) | set(_vocab.PYTHON_BACKENDS)


def _problem(**over):
    kw = dict(q_shape=[2, 5, 4, 16], kv_shape=[2, 7, 2, 16], v_shape=[2, 7, 2, 16],
              dtype="float32", qkv_format="bshd", mask_type="causal", window=(-1, 0),
              softmax_scale=0.25, dropout=0.0, max_seqlen_q=5, max_seqlen_kv=7, on_gpu=False)
    kw.update(over)
    return kw


def test_check_answers_like_the_core():
    assert _ops_lib.attn_check("cpu", **_problem()) == ""
    assert _ops_lib.attn_check("cpu", backward=True, **_problem()) == ""
    assert _ops_lib.attn_check("auto", **_problem()) == ""
    # Every field reaches the core where the mirror says it is:
    assert "head dim" in _ops_lib.attn_check("cpu", **_problem(kv_shape=[2, 7, 2, 8]))
    assert "heads" in _ops_lib.attn_check("cpu", **_problem(kv_shape=[2, 7, 3, 16],
                                                             v_shape=[2, 7, 3, 16]))
    assert "dropout" in _ops_lib.attn_check("cpu", **_problem(dropout=1.5))
    assert "softmax_scale" in _ops_lib.attn_check("cpu", **_problem(softmax_scale=-1.0))
    assert "thd" in _ops_lib.attn_check("cpu", **_problem(qkv_format="thd"))
    assert "CUDA" in _ops_lib.attn_check("flash", **_problem())
    assert "CPU" in _ops_lib.attn_check("cpu", **_problem(on_gpu=True))


def test_check_answers_are_cached_per_call_description(monkeypatch):
    _ops_lib._CHECKS.clear()
    calls = []
    real = _ops_lib._attn_check
    monkeypatch.setattr(_ops_lib, "_attn_check", lambda key: calls.append(key) or real(key))
    bad = _problem(kv_shape=[2, 7, 2, 8])
    first = _ops_lib.attn_check("cpu", **bad)
    assert _ops_lib.attn_check("cpu", **bad) == first and "head dim" in first
    assert len(calls) == 1
    _ops_lib.attn_check("cpu", backward=True, **bad)
    monkeypatch.setenv("PTE_FLASH_VARIANT", "sm80")  # the kernel family is part of the question
    _ops_lib.attn_check("cpu", **bad)
    assert len(calls) == 3


def _t(x, dtype="float16"):
    return paddle.to_tensor(np.asarray(x).astype(dtype))


@pytest.fixture
def simulated_gpu(monkeypatch):
    """ops believes the tensors are on GPU 0 (they stay on the CPU, where the unfused path and
    the core's check both run)."""
    monkeypatch.setattr(ops, "_is_gpu", lambda x: True)
    monkeypatch.setattr(ops, "_device_id", lambda x: 0)
    calls = []
    real = _unfused.fused_attn_unfused

    def spy(*a, **k):
        calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(_unfused, "fused_attn_unfused", spy)
    return calls


@pytest.mark.parametrize("grad", [False, True])
def test_auto_falls_back_to_unfused_with_the_core_reason(rng, simulated_gpu, monkeypatch, grad):
    """A head dim the compiled flash kernels lack and no cuDNN (the check says no for auto):
    auto runs the unfused path and gives the result of the reference instead of raising."""
    seen = []

    def check(backend, **kw):
        seen.append((backend, kw.get("backward", False), kw["q_shape"][-1]))
        return "flash: head_dim=96: not compiled (PTE_HDIMS); cudnn: not built"

    monkeypatch.setattr(_ops_lib, "attn_check", check)
    q, k, v = (rng.standard_normal((2, 6, 2, 96)) for _ in range(3))
    tq, tk, tv = _t(q), _t(k), _t(v)
    for t in (tq, tk, tv):
        t.stop_gradient = not grad
    out = paddle_te.fused_attn(tq, tk, tv, attn_mask_type="causal", backend="auto")
    assert len(simulated_gpu) == 1 and seen[0] == ("auto", False, 96)
    assert out.dtype == paddle.float16 and list(out.shape) == [2, 6, 2, 96]
    q16, k16, v16 = (x.astype(np.float16).astype(np.float64) for x in (q, k, v))
    want, _ = R.attention_fwd(q16, k16, v16, attn_mask_type="causal")
    np.testing.assert_allclose(out.astype("float32").numpy(), want, atol=1e-2)
    if grad:
        out.sum().backward()
        assert tq.grad is not None and np.isfinite(tq.grad.astype("float32").numpy()).all()


def test_auto_checks_the_backward_when_gradients_are_needed(rng, simulated_gpu, monkeypatch):
    monkeypatch.setattr(_ops_lib, "attn_check",
                        lambda backend, backward=False, **kw: "no dQ kernel" if backward else "")
    x = _t(rng.standard_normal((1, 4, 2, 64)))
    x.stop_gradient = False
    paddle_te.fused_attn(x, x, x, backend="auto")
    assert len(simulated_gpu) == 1  # the forward alone could run fused; the backward could not


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_auto_on_gpu_runs_unfused_with_the_real_check(rng, simulated_gpu, dtype):
    """No mock of the check: for float32 the dtype rule refuses, for float16 the core's own
    pte_attn_check through ctypes (here: no CUDA device on this machine), and auto runs the
    unfused path instead of raising."""
    if dtype == "float16":
        assert _ops_lib.attn_check("auto", **_problem(dtype="float16", on_gpu=True)) != ""
    x = rng.standard_normal((1, 5, 2, 32))
    out = paddle_te.fused_attn(_t(x, dtype), _t(x, dtype), _t(x, dtype),
                               attn_mask_type="causal_bottom_right", window_size=(2, 0))
    assert len(simulated_gpu) == 1 and out.dtype == getattr(paddle, dtype)
    x = x.astype(dtype).astype(np.float64)
    want, _ = R.attention_fwd(x, x, x, attn_mask_type="causal_bottom_right", window_size=(2, 0))
    np.testing.assert_allclose(out.astype("float32").numpy(), want,
                               atol=1e-5 if dtype == "float32" else 2e-3)


def test_auto_thd_that_no_backend_runs_names_the_reason(rng, simulated_gpu, monkeypatch):
    monkeypatch.setattr(_ops_lib, "attn_check", lambda backend, **kw: "head_dim=96: not compiled")
    x = _t(rng.standard_normal((6, 2, 96)))
    cu = paddle.to_tensor(np.array([0, 2, 6], np.int32))
    with pytest.raises(ValueError, match="head_dim=96: not compiled.*thd"):
        paddle_te.fused_attn(x, x, x, qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             backend="auto")


def test_explicit_backend_raises_with_the_core_reason(rng, simulated_gpu, monkeypatch):
    monkeypatch.setattr(_ops_lib, "backend_available", lambda name: (True, ""))
    monkeypatch.setattr(_ops_lib, "attn_check",
                        lambda backend, **kw: "" if backend == "cudnn" else "window (3, 1): no")
    x = _t(rng.standard_normal((1, 8, 2, 64)))
    with pytest.raises(ValueError, match=r"backend='flash' cannot run this call: window \(3, 1\)"):
        paddle_te.fused_attn(x, x, x, window_size=(3, 1), backend="flash")
    assert not simulated_gpu


def test_explicit_cudnn_with_dropout_warns(rng, simulated_gpu, monkeypatch):
    """cuDNN's dropout masks are correlated (docs/backends.md): an explicit backend="cudnn" with
    dropout warns; auto, flash, or cudnn without dropout (or in eval) do not."""
    import warnings

    monkeypatch.setattr(_ops_lib, "backend_available", lambda name: (True, ""))
    monkeypatch.setattr(_ops_lib, "attn_check", lambda backend, **kw: "")
    runs = []
    monkeypatch.setattr(_ops_lib, "run_op", lambda *a, **k: runs.append(a[0]) or [None, None])
    x = _t(rng.standard_normal((1, 8, 2, 64)))
    with pytest.warns(UserWarning, match="cuDNN's dropout masks are correlated"):
        paddle_te.fused_attn(x, x, x, dropout=0.1, backend="cudnn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paddle_te.fused_attn(x, x, x, dropout=0.1, backend="auto")
        paddle_te.fused_attn(x, x, x, dropout=0.1, backend="flash")
        paddle_te.fused_attn(x, x, x, dropout=0.0, backend="cudnn")
        paddle_te.fused_attn(x, x, x, dropout=0.1, training=False, backend="cudnn")
    layer = paddle_te.nn.DotProductAttention(2, 64, attention_dropout=0.2, backend="cudnn")
    with pytest.warns(UserWarning, match="backend='cudnn' with dropout=0.2"):
        layer(x, x, x)
    assert runs == ["pte_fused_attn"] * 6
