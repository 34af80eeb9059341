"""CUDA mask -> cu_seqlens against tests/reference.py: the three mask forms, lengths 0 and s,
batch sizes past one scan chunk (1024), masks that are not right padding (the same verdict as the
reference), and capture in a CUDA graph: the core makes no device->host copy on CUDA (issue 17)
unless asked to with check=True, with or without a `valid` tensor for the verdict."""

import numpy as np
import pytest

import reference as ref
from gpu_util import poison


def _lengths(rng, b, s):
    lens = rng.integers(0, s + 1, size=b)
    lens[: min(b, 2)] = [0, s][: min(b, 2)]  # the extremes
    return lens


def _run(core, torch, mask, mask_kv=None, **kw):
    b = mask.shape[0]
    cu_q = poison(torch.empty(b + 1, dtype=torch.int32, device="cuda"))
    cu_kv = poison(torch.empty(b + 1, dtype=torch.int32, device="cuda"))
    core.mask_to_cu_seqlens(mask, cu_q, cu_kv, mask_kv=mask_kv, **kw)
    return cu_q.cpu().numpy(), cu_kv.cpu().numpy()


def _cuda(torch, a):
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


@pytest.mark.parametrize("b", [1, 3, 1025, 5000])
@pytest.mark.parametrize("form", ["self", "cross", "full"])
def test_right_padding(core, torch, rng, b, form):
    s_q, s_kv = (37, 300) if form != "self" else (300, 300)
    if form == "full" and b > 1025:
        s_q, s_kv = 9, 33  # keep the host reference cheap
    lq = _lengths(rng, b, s_q)
    lk = lq.copy() if form == "self" else _lengths(rng, b, s_kv)
    if form == "self":
        mask, mask_kv = ref.padding_mask(lq, s_q), None
    elif form == "cross":
        mask, mask_kv = ref.padding_mask(lq, s_q), ref.padding_mask(lk, s_kv)
    else:
        mask, mask_kv = ref.full_padding_mask(lq, lk, s_q, s_kv), None
    want_q, want_kv = ref.mask_to_cu_seqlens(mask, mask_kv)
    got_q, got_kv = _run(core, torch, _cuda(torch, mask),
                         None if mask_kv is None else _cuda(torch, mask_kv))
    np.testing.assert_array_equal(got_q, want_q)
    np.testing.assert_array_equal(got_kv, want_kv)


def _not_right_padding(rng, form):
    b, s_q, s_kv = 4, 16, 24
    lq = np.array([3, 16, 0, 9])
    lk = np.array([24, 5, 0, 11])
    if form == "left":
        m = ref.padding_mask(lq, s_q)[:, :, :, ::-1]
        return m, None
    if form == "hole":
        m = ref.padding_mask(lq, s_q).copy()
        m[1, 0, 0, 7] = True
        return m, None
    if form == "cross_kv_hole":
        mk = ref.padding_mask(lk, s_kv).copy()
        mk[3, 0, 0, 2] = True
        return ref.padding_mask(lq, s_q), mk
    full = ref.full_padding_mask(lq, lk, s_q, s_kv).copy()
    if form == "full_hole":
        full[3, 0, 4, 5] = True  # inside the valid block
    elif form == "full_not_outer":
        full[0, 0, 1, 20] = True  # row 1 shorter than row 0
        full[0, 0, 0, 20] = False
    elif form == "full_row_gap":
        full[1, 0, 2, :] = True  # a padded row between valid rows
    return full, None


@pytest.mark.parametrize("form", ["left", "hole", "cross_kv_hole", "full_hole",
                                  "full_not_outer", "full_row_gap"])
def test_not_right_padding(core, torch, rng, form):
    mask, mask_kv = _not_right_padding(rng, form)
    assert not ref.is_right_padding(mask, mask_kv)
    with pytest.raises(ValueError, match="arbitrary"):
        _run(core, torch, _cuda(torch, mask), None if mask_kv is None else _cuda(torch, mask_kv),
             check=True)
    # By default the verdict is not read on CUDA (no host copy), so no error either.
    _run(core, torch, _cuda(torch, mask), None if mask_kv is None else _cuda(torch, mask_kv))
    valid = poison(torch.empty(1, dtype=torch.int32, device="cuda"))
    _run(core, torch, _cuda(torch, mask), None if mask_kv is None else _cuda(torch, mask_kv),
         valid=valid)
    assert int(valid.item()) == 0


def test_random_masks_same_verdict(core, torch, rng):
    """Random small masks of every form: the same verdict (and lengths when valid) as the reference."""
    for _ in range(200):
        b = int(rng.integers(1, 4))
        s_q, s_kv = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        full = bool(rng.integers(0, 2))
        if full:
            m = rng.random((b, 1, s_q, s_kv)) < rng.random()
        else:
            m = rng.random((b, 1, 1, s_kv)) < rng.random()
        valid = poison(torch.empty(1, dtype=torch.int32, device="cuda"))
        got_q, got_kv = _run(core, torch, _cuda(torch, m), valid=valid)
        lq, lk, ok = ref.mask_lengths(m)
        assert int(valid.item()) == int(ok), m
        if ok:
            np.testing.assert_array_equal(got_q, ref.cu_seqlens(lq))
            np.testing.assert_array_equal(got_kv, ref.cu_seqlens(lk))


def test_graph_capture(core, torch, rng):
    b, s = 7, 64
    lens = _lengths(rng, b, s)
    mask = _cuda(torch, ref.padding_mask(lens, s))
    cu_q = torch.empty(b + 1, dtype=torch.int32, device="cuda")
    cu_kv = torch.empty(b + 1, dtype=torch.int32, device="cuda")
    valid = torch.empty(1, dtype=torch.int32, device="cuda")
    st = torch.cuda.Stream()
    st.wait_stream(torch.cuda.current_stream())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=st):
        core.mask_to_cu_seqlens(mask, cu_q, cu_kv, valid=valid, stream=st.cuda_stream)
    for _ in range(2):
        lens = _lengths(rng, b, s)
        mask.copy_(_cuda(torch, ref.padding_mask(lens, s)))
        poison(cu_q)
        poison(valid)
        g.replay()
        torch.cuda.synchronize()
        np.testing.assert_array_equal(cu_q.cpu().numpy(), ref.cu_seqlens(lens))
        assert int(valid.item()) == 1


@pytest.mark.parametrize("form", ["self", "cross", "full"])
def test_graph_capture_default_call(core, torch, rng, form):
    """The call as SPEC §5 writes it (no `valid`, no `check`) captures in a CUDA graph: any
    device->host copy or sync inside it would fail the capture ("operation not permitted when
    stream is capturing"). Replays on new masks give the reference's lengths."""
    b, s_q, s_kv = 5, 48, 80

    def masks(lq, lk):
        if form == "self":
            return ref.padding_mask(lq, s_q), None
        if form == "cross":
            return ref.padding_mask(lq, s_q), ref.padding_mask(lk, s_kv)
        return ref.full_padding_mask(lq, lk, s_q, s_kv), None

    lq, lk = _lengths(rng, b, s_q), _lengths(rng, b, s_kv)
    if form == "self":
        lk = lq
    m, mk = masks(lq, lk)
    mask = _cuda(torch, m)
    mask_kv = None if mk is None else _cuda(torch, mk)
    cu_q = torch.empty(b + 1, dtype=torch.int32, device="cuda")
    cu_kv = torch.empty(b + 1, dtype=torch.int32, device="cuda")
    st = torch.cuda.Stream()
    st.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(st):  # warm-up outside the capture (lazy CUDA init, allocations)
        core.mask_to_cu_seqlens(mask, cu_q, cu_kv, mask_kv=mask_kv, stream=st.cuda_stream)
    st.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=st):
        core.mask_to_cu_seqlens(mask, cu_q, cu_kv, mask_kv=mask_kv, stream=st.cuda_stream)
    for _ in range(3):
        lq, lk = _lengths(rng, b, s_q), _lengths(rng, b, s_kv)
        if form == "self":
            lk = lq
        m, mk = masks(lq, lk)
        mask.copy_(_cuda(torch, m))
        if mask_kv is not None:
            mask_kv.copy_(_cuda(torch, mk))
        poison(cu_q)
        poison(cu_kv)
        g.replay()
        torch.cuda.synchronize()
        want_q, want_kv = ref.mask_to_cu_seqlens(m, mk)
        np.testing.assert_array_equal(cu_q.cpu().numpy(), want_q)
        np.testing.assert_array_equal(cu_kv.cpu().numpy(), want_kv)


def test_check_true_reads_the_verdict(core, torch, rng):
    """check=True is the one documented host copy: correct outside a graph."""
    mask = _cuda(torch, ref.padding_mask(np.array([3, 5]), 6))
    got_q, _ = _run(core, torch, mask, check=True)
    np.testing.assert_array_equal(got_q, [0, 3, 8])


def test_empty_batch(core, torch):
    mask = torch.zeros(0, 1, 1, 5, dtype=torch.bool, device="cuda")
    got_q, got_kv = _run(core, torch, mask)
    assert got_q.tolist() == [0] and got_kv.tolist() == [0]
