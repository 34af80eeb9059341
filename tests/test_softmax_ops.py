"""The four masked-softmax ops of SPEC §3 against tests/reference.py: forward and gradient,
float32 and float64, fully masked rows exactly 0 (forward and gradient), masks broadcast over the
batch or given per batch, and a long row (s_kv = 16384, past any fast-kernel cap).

Tolerances (STYLE habit 2): float64 within 1e-12 (probabilities are <= 1); float32 within
2x the error of the reference computed in float32, plus a floor of 1e-6 (max |y| <= 1).
"""

import numpy as np
import paddle
import pytest

import paddle_te
import reference as R

paddle.set_device("cpu")

F32_FLOOR = 1e-6
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])


def _t(x, grad=False):
    t = paddle.to_tensor(np.ascontiguousarray(x))
    t.stop_gradient = not grad
    return t


def run(op, x, dy, *args, **kwargs):
    xt = _t(x, grad=True)
    y = op(xt, *(_t(a) for a in args), **kwargs)
    (dx,) = paddle.grad([y], [xt], grad_outputs=[_t(dy)])
    return y.numpy(), dx.numpy()


def assert_matches(actual, ref64, naive, dtype, name):
    assert actual.shape == ref64.shape and actual.dtype == np.dtype(dtype), \
        f"{name}: {actual.shape} {actual.dtype}"
    assert np.all(np.isfinite(actual)), f"{name}: non-finite values"
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(actual, ref64, rtol=1e-12, atol=1e-12, err_msg=name)
    else:
        floor = F32_FLOOR * max(1.0, float(np.max(np.abs(ref64), initial=0.0)))
        R.assert_close_fa(actual, ref64, naive, floor=floor, name=name)


def check(op_name, x, dy, dtype, scale, mask=None, causal=None):
    x, dy = x.astype(dtype), dy.astype(dtype)
    op = getattr(paddle_te.ops, op_name)
    args = () if mask is None else (mask,)
    y, dx = run(op, x, dy, *args, scale=scale)
    ref_y = R.softmax_fwd(x, mask=mask, scale=scale, causal=causal)
    ref_dx = R.softmax_bwd(ref_y, dy, scale)
    naive_y = naive_dx = None
    if np.dtype(dtype) != np.float64:
        naive_y = R.softmax_fwd(x, mask=mask, scale=scale, causal=causal, compute_dtype=dtype)
        naive_dx = R.softmax_bwd(naive_y, dy, scale, compute_dtype=dtype)
    assert_matches(y, ref_y, naive_y, dtype, f"{op_name} y")
    assert_matches(dx, ref_dx, naive_dx, dtype, f"{op_name} dx")
    # Masked elements, and so fully masked rows, are exactly 0 in y and dx.
    masked = ref_y == 0
    assert np.all(y[masked] == 0), f"{op_name}: masked elements of y must be exactly 0"
    assert np.all(dx[masked] == 0), f"{op_name}: masked elements of dx must be exactly 0"


SHAPES = [(2, 3, 5, 7), (1, 2, 17, 129), (2, 1, 9, 4), (1, 1, 1, 1), (1, 2, 3, 1000)]


@DTYPES
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scaled_softmax(rng, shape, dtype):
    check("scaled_softmax", rng.standard_normal(shape), rng.standard_normal(shape), dtype, 0.7)


@DTYPES
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mask_batch", ["broadcast", "per_batch"])
def test_scaled_masked_softmax(rng, shape, dtype, mask_batch):
    b, _, s_q, s_kv = shape
    mask = rng.random((1 if mask_batch == "broadcast" else b, 1, s_q, s_kv)) < 0.4
    mask[0, 0, s_q // 2, :] = True  # a fully masked row
    check("scaled_masked_softmax", rng.standard_normal(shape), rng.standard_normal(shape),
          dtype, 1.3, mask=mask)


def test_mask_per_batch_is_not_broadcast(rng):
    """Batch 1's mask must not be batch 0's: the per-batch mask is read per batch."""
    x = rng.standard_normal((2, 2, 4, 6))
    mask = np.zeros((2, 1, 4, 6), dtype=bool)
    mask[1, 0, :, 3:] = True
    y, _ = run(paddle_te.ops.scaled_masked_softmax, x, x, mask)
    assert np.all(y[1, :, :, 3:] == 0) and np.all(y[0] > 0)


@DTYPES
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scaled_upper_triang_masked_softmax(rng, shape, dtype):
    check("scaled_upper_triang_masked_softmax", rng.standard_normal(shape),
          rng.standard_normal(shape), dtype, 0.9, causal="top_left")


@DTYPES
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scaled_aligned_causal_masked_softmax(rng, shape, dtype):
    # (2, 1, 9, 4): s_q > s_kv, so the first 5 rows see nothing and must be exactly 0.
    check("scaled_aligned_causal_masked_softmax", rng.standard_normal(shape),
          rng.standard_normal(shape), dtype, 0.9, causal="bottom_right")


@pytest.mark.parametrize("op_name,causal,masked", [
    ("scaled_softmax", None, False),
    ("scaled_masked_softmax", None, True),
    ("scaled_upper_triang_masked_softmax", "top_left", False),
    ("scaled_aligned_causal_masked_softmax", "bottom_right", False),
])
def test_long_rows(rng, op_name, causal, masked):
    """s_kv = 16384: no length cap (SPEC §3); b*h*s_q kept small for the CPU."""
    shape = (1, 1, 3, 16384)
    mask = (rng.random((1, 1, 3, 16384)) < 0.5) if masked else None
    check(op_name, rng.standard_normal(shape), rng.standard_normal(shape), np.float32, 1.0,
          mask=mask, causal=causal)


def test_fully_masked_everything_is_zero(rng):
    x = rng.standard_normal((2, 2, 3, 5))
    y, dx = run(paddle_te.ops.scaled_masked_softmax, x, x, np.ones((1, 1, 3, 5), dtype=bool))
    assert np.all(y == 0) and np.all(dx == 0)


def test_extreme_inputs_stay_finite():
    """Large scores: the max-subtraction must keep exp finite (no inf/NaN)."""
    x = np.array([[[[1e4, -1e4, 0.0, 1e4]]]], dtype=np.float32)
    y, dx = run(paddle_te.ops.scaled_softmax, x, np.ones_like(x), scale=10.0)
    np.testing.assert_allclose(y, [[[[0.5, 0.0, 0.0, 0.5]]]], atol=1e-7)
    assert np.all(np.isfinite(dx))


@pytest.mark.parametrize("shape", [(1, 1, 2, 0), (0, 2, 3, 4), (2, 1, 0, 5)], ids=str)
@pytest.mark.parametrize("op_name", ["scaled_softmax", "scaled_masked_softmax",
                                     "scaled_upper_triang_masked_softmax",
                                     "scaled_aligned_causal_masked_softmax"])
def test_zero_size_x(op_name, shape):
    """An empty x has an empty softmax and an empty gradient (Paddle hands a custom op an empty
    tensor as if it were absent: the wrapper answers itself)."""
    x = np.zeros(shape, np.float32)
    args = (np.zeros((1, 1) + shape[2:], dtype=bool),) if op_name == "scaled_masked_softmax" else ()
    y, dx = run(getattr(paddle_te.ops, op_name), x, x, *args, scale=0.5)
    assert y.shape == shape and y.dtype == np.float32  # nothing to compare: no elements
    assert dx.shape == shape and dx.dtype == np.float32
