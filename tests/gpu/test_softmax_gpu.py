"""CUDA masked softmax (forward and backward) against tests/reference.py.

Row lengths cover every register bucket of csrc/cuda/softmax/softmax.cuh (1 .. 4096 vectors), the
two-pass path past it (> 32768 fp16/bf16 elements) and the unaligned scalar path (s_kv not a
multiple of the 16-byte vector). Each case checks: no unwritten element (NaN poison), exact zeros
at masked elements and fully masked rows, and FlashAttention's error rule against float64.
"""

import numpy as np
import pytest

import reference as ref
from gpu_util import poison, to_numpy64

DTYPES = ("float16", "bfloat16", "float32")
VARIANTS = ("none", "mask", "mask_bcast", "top_left", "bottom_right")

# (b, h, s_q, s_kv): small rows (several per warp), warp rows, block rows, two-pass rows, odd sizes.
SHAPES = [
    (2, 3, 5, 8),
    (1, 2, 33, 40),
    (2, 2, 17, 128),
    (1, 3, 64, 200),
    (2, 2, 32, 1024),
    (1, 2, 19, 2048),
    (1, 1, 9, 2050),     # not a multiple of 8: scalar two-pass path
    (1, 2, 16, 4096),
    (1, 1, 7, 16384),
    (1, 1, 3, 32768),
    (1, 1, 3, 40000),    # past the register buckets: vector two-pass path
    (1, 1, 2, 7),
    (1, 2, 50, 16),      # s_q > s_kv: bottom-right leaves the first rows fully masked
]

FLOOR = {"float16": 1e-5, "bfloat16": 1e-5, "float32": 2e-6}


def _torch_dtype(torch, name):
    return getattr(torch, name)


def _round_to(torch, a64, dtype):
    """A float64 numpy array rounded to `dtype` (the storage of the kernel), back as float64."""
    return to_numpy64(torch.from_numpy(np.ascontiguousarray(a64)).to(dtype))


def _make_case(torch, rng, shape, dtype, variant):
    b, h, s_q, s_kv = shape
    x = torch.from_numpy(rng.standard_normal(shape)).to(dtype).cuda()
    mask = None
    causal = None
    if variant in ("mask", "mask_bcast"):
        mb = 1 if variant == "mask_bcast" else b
        m = rng.random((mb, 1, s_q, s_kv)) < 0.3
        m[:, :, s_q // 2, :] = True  # a fully masked row in every batch
        mask = torch.from_numpy(m).cuda()
    elif variant == "top_left":
        causal = "top_left"
    elif variant == "bottom_right":
        causal = "bottom_right"
    return x, mask, causal


def _check_zeros(y64, mask_np, causal, s_q, s_kv, what):
    masked = np.zeros(y64.shape, dtype=bool)
    if mask_np is not None:
        masked |= mask_np
    if causal is not None:
        kind = {"top_left": "causal", "bottom_right": "causal_bottom_right"}[causal]
        masked |= ~ref.visibility_mask(s_q, s_kv, mask_type=kind)
    assert np.all(y64[np.broadcast_to(masked, y64.shape)] == 0), f"{what}: masked elements not 0"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_softmax_fwd(core, torch, rng, shape, variant, dtype_name):
    _check_fwd(core, torch, rng, shape, variant, dtype_name)


def _check_fwd(core, torch, rng, shape, variant, dtype_name):
    dtype = _torch_dtype(torch, dtype_name)
    b, h, s_q, s_kv = shape
    x, mask, causal = _make_case(torch, rng, shape, dtype, variant)
    scale = float(rng.uniform(0.2, 2.0))
    y = poison(torch.empty_like(x))
    core.softmax_fwd(x, y, mask=mask, scale=scale, causal=causal)
    torch.cuda.synchronize()

    x64 = to_numpy64(x)
    mask_np = None if mask is None else mask.cpu().numpy()
    want = ref.softmax_fwd(x64, mask=mask_np, scale=scale, causal=causal)
    naive = _round_to(torch, ref.softmax_fwd(x64.astype(np.float32), mask=mask_np, scale=scale,
                                             causal=causal, compute_dtype=np.float32), dtype)
    got = to_numpy64(y)
    assert not np.isnan(got).any(), "y: unwritten (NaN) elements"
    _check_zeros(got, mask_np, causal, s_q, s_kv, "y")
    ref.assert_close_fa(got, want, naive, FLOOR[dtype_name], name="y")


# Large enough (h % 4 == 0, a wave of blocks after grouping) that the masked register kernels
# run work items of 4 heads sharing one mask row (softmax.cuh, with_head_groups): several rows
# per block (s_kv = 16) and one 512-thread block per row (s_kv = 16384 in bf16).
@pytest.mark.parametrize("shape", [(2, 4, 36864, 16), (1, 4, 264, 16384)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("variant", ["mask", "mask_bcast"])
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float32"])
def test_softmax_fwd_head_groups(core, torch, rng, shape, variant, dtype_name):
    _check_fwd(core, torch, rng, shape, variant, dtype_name)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_softmax_bwd(core, torch, rng, shape, dtype_name):
    dtype = _torch_dtype(torch, dtype_name)
    b, h, s_q, s_kv = shape
    x64 = rng.standard_normal(shape)
    m = rng.random((b, 1, s_q, s_kv)) < 0.3
    m[:, :, 0, :] = True  # a fully masked row: zero gradient
    y = torch.from_numpy(ref.softmax_fwd(x64, mask=m)).to(dtype).cuda()
    d_y = torch.from_numpy(rng.standard_normal(shape)).to(dtype).cuda()
    scale = float(rng.uniform(0.2, 2.0))
    d_x = poison(torch.empty_like(y))
    core.softmax_bwd(y, d_y, d_x, scale=scale)
    torch.cuda.synchronize()

    y64, dy64 = to_numpy64(y), to_numpy64(d_y)
    want = ref.softmax_bwd(y64, dy64, scale=scale)
    naive = _round_to(torch, ref.softmax_bwd(y64.astype(np.float32), dy64.astype(np.float32),
                                             scale=scale, compute_dtype=np.float32), dtype)
    got = to_numpy64(d_x)
    assert not np.isnan(got).any(), "d_x: unwritten (NaN) elements"
    assert np.all(got[np.broadcast_to(m, got.shape)] == 0), "d_x: not 0 where y == 0"
    ref.assert_close_fa(got, want, naive, FLOOR[dtype_name], name="d_x")


def test_softmax_on_side_stream(core, torch, rng):
    """The kernels run on the stream they are given (and the DLPack export orders the producer)."""
    x = torch.from_numpy(rng.standard_normal((4, 8, 64, 512))).half().cuda()
    y = poison(torch.empty_like(x))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        core.softmax_fwd(x, y, scale=0.5, causal="top_left", stream=s.cuda_stream)
    s.synchronize()
    want = ref.softmax_fwd(to_numpy64(x), scale=0.5, causal="top_left")
    assert np.max(np.abs(to_numpy64(y) - want)) < 2e-3


def test_softmax_graph_capture(core, torch, rng):
    """No host sync inside: the forward and backward can be captured and replayed in a graph."""
    x = torch.from_numpy(rng.standard_normal((2, 4, 32, 256))).bfloat16().cuda()
    mask = torch.from_numpy(rng.random((1, 1, 32, 256)) < 0.5).cuda()
    y = torch.empty_like(x)
    dx = torch.empty_like(x)
    dy = torch.randn_like(x)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s):
        core.softmax_fwd(x, y, mask=mask, stream=s.cuda_stream)
        core.softmax_bwd(y, dy, dx, stream=s.cuda_stream)
    poison(y)
    poison(dx)
    g.replay()
    torch.cuda.synchronize()
    want = ref.softmax_fwd(to_numpy64(x), mask=mask.cpu().numpy())
    assert np.max(np.abs(to_numpy64(y) - want)) < 1e-2
    assert not torch.isnan(dx).any()


@pytest.mark.parametrize("bad", ["dtype", "shape", "mask_shape", "scale"])
def test_softmax_bad_input(core, torch, bad):
    x = torch.randn(2, 2, 4, 8, device="cuda", dtype=torch.float16)
    y = torch.empty_like(x)
    kw = {}
    if bad == "dtype":
        y = torch.empty_like(x, dtype=torch.bfloat16)
    elif bad == "shape":
        y = torch.empty(2, 2, 4, 9, device="cuda", dtype=torch.float16)
    elif bad == "mask_shape":
        kw["mask"] = torch.zeros(2, 2, 4, 8, device="cuda", dtype=torch.bool)
    else:
        kw["scale"] = float("nan")
    with pytest.raises(ValueError):
        core.softmax_fwd(x, y, **kw)
