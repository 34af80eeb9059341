"""paddle_te.ops.mask_to_cu_seqlens (SPEC §3) against tests/reference.py: the three mask forms,
batch sizes 1..many, lengths 0 and full, and the ValueError for masks that are not right padding
(it must name attn_mask_type="arbitrary" as the way to use them)."""

import numpy as np
import paddle
import pytest

import paddle_te
import reference as R

paddle.set_device("cpu")

ARBITRARY = r"attn_mask_type=[\"']arbitrary[\"']"


def op(mask, mask_kv=None):
    cq, ck = paddle_te.ops.mask_to_cu_seqlens(
        paddle.to_tensor(mask), None if mask_kv is None else paddle.to_tensor(mask_kv))
    return cq.numpy(), ck.numpy()


def assert_cu(got, want):
    assert got.dtype == np.int32, got.dtype
    np.testing.assert_array_equal(got, want)


def lengths(rng, b, s):
    """Random lengths in [0, s] with 0 and s always present (when b allows)."""
    lens = rng.integers(0, s + 1, size=b)
    lens[0] = s
    if b > 1:
        lens[1] = 0
    return lens


@pytest.mark.parametrize("b", [1, 2, 5, 64, 300])
def test_self_attention_form(rng, b):
    s = 13
    lens = lengths(rng, b, s)
    mask = R.padding_mask(lens, s)
    cq, ck = op(mask)
    want_q, want_kv = R.mask_to_cu_seqlens(mask)
    assert_cu(cq, want_q)
    assert_cu(ck, want_kv)
    assert_cu(cq, R.cu_seqlens(lens))


@pytest.mark.parametrize("b", [1, 3, 64])
def test_cross_attention_form(rng, b):
    s_q, s_kv = 7, 19
    lq, lk = lengths(rng, b, s_q), lengths(rng, b, s_kv)[::-1].copy()
    mask, mask_kv = R.padding_mask(lq, s_q), R.padding_mask(lk, s_kv)
    cq, ck = op(mask, mask_kv)
    assert_cu(cq, R.cu_seqlens(lq))
    assert_cu(ck, R.cu_seqlens(lk))


@pytest.mark.parametrize("b", [1, 4, 40])
def test_full_form(rng, b):
    s_q, s_kv = 6, 11
    lq, lk = lengths(rng, b, s_q), lengths(rng, b, s_kv)
    lq[-1], lk[-1] = s_q, s_kv  # at least one batch fully valid
    mask = R.full_padding_mask(lq, lk, s_q, s_kv)
    cq, ck = op(mask)
    want_q, want_kv = R.mask_to_cu_seqlens(mask)
    assert_cu(cq, want_q)
    assert_cu(ck, want_kv)


def test_all_empty_and_all_full():
    s = 8
    assert_cu(op(np.ones((3, 1, 1, s), dtype=bool))[0], [0, 0, 0, 0])
    assert_cu(op(np.zeros((3, 1, 1, s), dtype=bool))[0], [0, 8, 16, 24])
    cq, ck = op(np.zeros((2, 1, 4, s), dtype=bool))
    assert_cu(cq, [0, 4, 8])
    assert_cu(ck, [0, 8, 16])


@pytest.mark.parametrize("mask_shape,kv_shape", [
    ((0, 1, 1, 5), None),  # empty batch, every form
    ((0, 1, 4, 5), None),
    ((0, 1, 1, 4), (0, 1, 1, 6)),
    ((3, 1, 1, 0), None),  # no positions: every sequence has length 0
    ((3, 1, 0, 5), None),
    ((3, 1, 4, 0), None),
    ((3, 1, 1, 0), (3, 1, 1, 0)),
], ids=str)
def test_empty_masks(mask_shape, kv_shape):
    """Any batch size, any length (SPEC §3), empty masks included (the op cannot take them)."""
    mask = np.zeros(mask_shape, dtype=bool)
    mask_kv = None if kv_shape is None else np.zeros(kv_shape, dtype=bool)
    cq, ck = op(mask, mask_kv)
    want_q, want_kv = R.mask_to_cu_seqlens(mask, mask_kv)
    assert_cu(cq, want_q)
    assert_cu(ck, want_kv)
    assert_cu(cq, np.zeros(mask_shape[0] + 1))


def test_cross_attention_one_side_empty(rng):
    """mask [b, 1, 1, 0] with a real mask_kv (and the other way round): the real side's lengths,
    still checked for right padding."""
    lk = lengths(rng, 4, 9)
    cq, ck = op(np.zeros((4, 1, 1, 0), dtype=bool), R.padding_mask(lk, 9))
    assert_cu(cq, np.zeros(5))
    assert_cu(ck, R.cu_seqlens(lk))
    cq, ck = op(R.padding_mask(lk, 9), np.zeros((4, 1, 1, 0), dtype=bool))
    assert_cu(cq, R.cu_seqlens(lk))
    assert_cu(ck, np.zeros(5))
    with pytest.raises(ValueError, match=ARBITRARY):
        op(np.zeros((2, 1, 1, 0), dtype=bool), _hole(2, 5))


def _left_padding(b, s):
    return R.padding_mask([s // 2] * b, s)[..., ::-1].copy()


def _hole(b, s):
    m = R.padding_mask([s] * b, s).copy()
    m[-1, 0, 0, 1] = True
    return m


NOT_RIGHT_PADDING = {
    "left_padding": lambda: (_left_padding(2, 6), None),
    "hole": lambda: (_hole(3, 6), None),
    "kv_hole": lambda: (R.padding_mask([2, 3], 4), _hole(2, 5)),
    "full_causal": lambda: ((~R.visibility_mask(4, 4, mask_type="causal"))[None, None]
                            .repeat(2, axis=0), None),
    "full_not_outer": lambda: (np.array([[[[False, True], [True, False]]]]), None),
    "full_left_padding": lambda: (R.full_padding_mask([2], [3], 4, 5)[..., ::-1, ::-1].copy(),
                                  None),
}


@pytest.mark.parametrize("name", list(NOT_RIGHT_PADDING))
def test_rejects_masks_that_are_not_right_padding(name):
    mask, mask_kv = NOT_RIGHT_PADDING[name]()
    assert not R.is_right_padding(mask, mask_kv)
    with pytest.raises(ValueError, match=ARBITRARY):
        op(mask, mask_kv)
    # The message names the mask at fault.
    with pytest.raises(ValueError, match="^mask_kv: " if name.startswith("kv_") else "^mask: "):
        op(mask, mask_kv)


# --------------------------------------------------------------------------------------------
# What is checked when (issue 17, docs/masks.md): the op checks unless check=False; the layers
# follow paddle_te.masks.set_mask_check, by default only where the check is free (CPU masks).
# --------------------------------------------------------------------------------------------

LEFT = np.array([True, False, False, False]).reshape(1, 1, 1, 4)


def test_check_false_reads_no_verdict():
    cq, ck = paddle_te.ops.mask_to_cu_seqlens(paddle.to_tensor(LEFT), check=False)
    assert cq.numpy().tolist() == [0, 3]  # the count of unpadded keys; meaningless as lengths
    with pytest.raises(TypeError, match="check=1"):
        paddle_te.ops.mask_to_cu_seqlens(paddle.to_tensor(LEFT), check=1)


@pytest.fixture
def mask_check():
    """Restores the process-wide mode after the test."""
    previous = paddle_te.masks.get_mask_check()
    yield paddle_te.masks.set_mask_check
    paddle_te.masks.set_mask_check(previous)


def _layer_calls(monkeypatch):
    calls = []
    real = paddle_te.ops._mask_to_cu_seqlens  # what the layers call (with their mask names)

    def spy(mask, mask_kv, check, names):
        calls.append(check)
        return real(mask, mask_kv, check, names)

    monkeypatch.setattr(paddle_te.ops, "_mask_to_cu_seqlens", spy)
    return calls


def _dpa_and_mha(mask_np):
    """One DotProductAttention and one MultiHeadAttention call with a padding mask."""
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 4, 2, 8)).astype("float32"))
    paddle_te.nn.DotProductAttention(2, 8, attn_mask_type="padding")(
        x, x, x, paddle.to_tensor(mask_np))
    e = x.reshape([1, 4, 16])
    mha = paddle_te.nn.MultiHeadAttention(16, 2, attn_mask_type="padding")
    mha(e, attn_mask=paddle.to_tensor(~mask_np))  # Paddle's convention: True = keep


@pytest.mark.parametrize("mode,on_gpu,checked", [
    ("no_sync", False, True), ("no_sync", True, False),
    ("always", False, True), ("always", True, True),
    ("never", False, False), ("never", True, False),
])
def test_layers_follow_the_mask_check_mode(monkeypatch, mask_check, mode, on_gpu, checked):
    from paddle_te.nn import _core

    calls = _layer_calls(monkeypatch)
    monkeypatch.setattr(_core, "_on_gpu", lambda t: on_gpu)  # where the mask seems to live
    mask_check(mode)
    right = np.array([False, False, True, True]).reshape(1, 1, 1, 4)
    _dpa_and_mha(right)
    assert calls == [checked, checked]
    if checked:
        with pytest.raises(ValueError, match=ARBITRARY):
            _dpa_and_mha(LEFT)
    else:
        _dpa_and_mha(LEFT)  # not looked at: no host sync, no error


def test_set_mask_check_validates(mask_check):
    assert paddle_te.masks.get_mask_check() in paddle_te.masks.MASK_CHECK_MODES
    with pytest.raises(ValueError, match="mode='sometimes'.*'no_sync', 'always', 'never'"):
        mask_check("sometimes")
    assert mask_check("always") in paddle_te.masks.MASK_CHECK_MODES
    assert paddle_te.masks.get_mask_check() == "always"
