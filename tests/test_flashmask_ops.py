"""paddle_te.flashmask_attention, the FlashMask helpers of paddle_te.masks and
DotProductAttention(startend_row_indices=) on the CPU (SPEC §9), against tests/reference.py."""

import numpy as np
import paddle
import pytest

import flashmask_zoo as zoo
import reference as ref
import paddle_te
from paddle_te import masks
from paddle_te.nn import DotProductAttention

paddle.set_device("cpu")


def _t(a, grad=False):
    t = paddle.to_tensor(a)
    t.stop_gradient = not grad
    return t


def _inputs(rng, b, s_q, s_kv, h, h_kv, d, dtype="float64"):
    return [rng.standard_normal(s).astype(dtype) for s in
            ((b, s_q, h, d), (b, s_kv, h_kv, d), (b, s_kv, h_kv, d))]


def _run(arrs, se, causal, d_out, **kw):
    q, k, v = (_t(a, True) for a in arrs)
    res = paddle_te.flashmask_attention(q, k, v, None if se is None else _t(se), causal=causal,
                                        return_softmax_lse=True, **kw)
    out, lse = res[0], res[1]
    grads = paddle.grad([(out * _t(d_out)).sum()], [q, k, v])
    return out.numpy(), lse.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("name", [z[0] for z in zoo.ZOO])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zoo(rng, name, dtype):
    causal, fn = zoo.ZOO_BY_NAME[name]
    b, s, h, h_kv, d = 2, 67, 4, 2, 16
    se = zoo.with_heads(fn(rng, b, s, s), rng, int(rng.choice([1, h_kv, h])))
    arrs = _inputs(rng, b, s, s, h, h_kv, d, dtype)
    d_out = rng.standard_normal((b, s, h, d)).astype(dtype)
    out, lse, grads = _run(arrs, se, causal, d_out)
    want, want_lse = ref.flashmask_attention_fwd(*arrs, se, causal=causal)
    want_grads = ref.flashmask_attention_bwd(*arrs, d_out, se, causal=causal)
    tol = 1e-9 if dtype == "float64" else 3e-5
    np.testing.assert_allclose(out, want, atol=tol, rtol=tol)
    fin = np.isfinite(want_lse)
    assert np.array_equal(np.isfinite(lse), fin) and np.all(lse[~fin] == -np.inf)
    np.testing.assert_allclose(lse[fin], want_lse[fin], atol=1e-5, rtol=1e-5)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, atol=tol * 10, rtol=tol * 10)
    dead = ~fin.transpose(0, 2, 1)
    assert np.all(out[dead] == 0) and np.all(grads[0][dead] == 0)


def test_return_forms_and_defaults(rng):
    arrs = _inputs(rng, 1, 20, 20, 2, 2, 8)
    q, k, v = (_t(a) for a in arrs)
    se = _t(zoo.causal_document(rng, 1, 20, 20))
    out = paddle_te.flashmask_attention(q, k, v, se, causal=True)
    assert isinstance(out, paddle.Tensor) and out.shape == [1, 20, 2, 8]
    res = paddle_te.flashmask_attention(q, k, v, se, causal=True, return_seed_offset=True)
    assert isinstance(res, list) and len(res) == 2 and res[1].dtype == paddle.int64 and res[1].shape == [2]
    res = paddle_te.flashmask_attention(q, k, v, se, causal=True, return_softmax_lse=True,
                                        return_seed_offset=True)
    assert len(res) == 3 and res[1].shape == [1, 2, 20] and res[1].dtype == paddle.float32
    # No indices, no window: plain (causal) attention; softmax_scale honoured.
    plain = paddle_te.flashmask_attention(q, k, v, causal=True, softmax_scale=0.3).numpy()
    want, _ = ref.attention_fwd(*arrs, attn_mask_type="causal", softmax_scale=0.3)
    np.testing.assert_allclose(plain, want, atol=1e-10)
    assert paddle_te.ops.flashmask_attention is paddle_te.flashmask_attention


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [3, (2, 5)])
def test_window_size_builds_the_mask(rng, causal, window):
    arrs = _inputs(rng, 2, 30, 30, 2, 1, 8)
    q, k, v = (_t(a) for a in arrs)
    out = paddle_te.flashmask_attention(q, k, v, window_size=window, causal=causal).numpy()
    left, right = (window, window) if isinstance(window, int) else window
    want, _ = ref.attention_fwd(*arrs, attn_mask_type="causal" if causal else "no_mask",
                                window_size=(left, 0 if causal else right))
    np.testing.assert_allclose(out, want, atol=1e-10)


def test_dropout_replay(rng):
    arrs = _inputs(rng, 1, 40, 40, 2, 2, 8)
    se = _t(zoo.causal_document(rng, 1, 40, 40))
    q, k, v = (_t(a) for a in arrs)
    o1, so = paddle_te.flashmask_attention(q, k, v, se, dropout=0.4, causal=True, return_seed_offset=True)
    o2 = paddle_te.flashmask_attention(q, k, v, se, dropout=0.4, causal=True)
    assert not np.allclose(o1.numpy(), o2.numpy())  # fresh randomness per call
    o3 = paddle_te.flashmask_attention(q, k, v, se, dropout=0.4, causal=True, fixed_seed_offset=so)
    np.testing.assert_array_equal(o1.numpy(), o3.numpy())  # replay
    seed, offset = (int(x) for x in so.numpy())
    want, _ = ref.flashmask_attention_fwd(*arrs, se.numpy(), causal=True, dropout_p=0.4,
                                          seed=seed, offset=offset)
    np.testing.assert_allclose(o1.numpy(), want, atol=1e-10)
    off = paddle_te.flashmask_attention(q, k, v, se, dropout=0.4, causal=True, training=False)
    want, _ = ref.flashmask_attention_fwd(*arrs, se.numpy(), causal=True)
    np.testing.assert_allclose(off.numpy(), want, atol=1e-10)


def test_rng_name(rng):
    from paddle.distributed.fleet.meta_parallel import get_rng_state_tracker

    arrs = _inputs(rng, 1, 16, 16, 2, 2, 8)
    q, k, v = (_t(a) for a in arrs)
    se = _t(zoo.causal_document(rng, 1, 16, 16))
    tracker = get_rng_state_tracker()
    saved = dict(tracker.states_), set(tracker.seeds_)
    try:
        draws = []
        for default_seed in (1, 2):
            paddle.seed(default_seed)  # the default generator differs between the runs
            tracker.reset()
            tracker.add("pte_fm_test", 4321)
            paddle.randn([3])
            _, so = paddle_te.flashmask_attention(q, k, v, se, dropout=0.5, causal=True,
                                                  rng_name="pte_fm_test", return_seed_offset=True)
            draws.append(so.numpy().tolist())
        assert draws[0] == draws[1]
        # An unregistered name draws from Paddle's default generator.
        paddle.seed(5)
        _, a = paddle_te.flashmask_attention(q, k, v, se, dropout=0.5, causal=True,
                                             rng_name="not_registered", return_seed_offset=True)
        paddle.seed(5)
        _, b = paddle_te.flashmask_attention(q, k, v, se, dropout=0.5, causal=True,
                                             return_seed_offset=True)
        assert a.numpy().tolist() == b.numpy().tolist()
    finally:
        tracker.states_, tracker.seeds_ = saved


def test_bad_inputs(rng):
    arrs = _inputs(rng, 1, 8, 8, 4, 2, 8)
    q, k, v = (_t(a) for a in arrs)
    fa = paddle_te.flashmask_attention
    ok = np.zeros((1, 1, 8, 1), np.int32)
    with pytest.raises((TypeError, ValueError), match="startend_row_indices"):
        fa(q, k, v, _t(ok.astype(np.int64)), causal=True)
    with pytest.raises(ValueError, match="startend_row_indices.*C = 1 with causal=False"):
        fa(q, k, v, _t(ok))
    with pytest.raises(ValueError, match="startend_row_indices.*C = 4 with causal=True"):
        fa(q, k, v, _t(np.zeros((1, 1, 8, 4), np.int32)), causal=True)
    with pytest.raises(ValueError, match="mask_heads = 3"):
        fa(q, k, v, _t(np.zeros((1, 3, 8, 1), np.int32)), causal=True)
    with pytest.raises(ValueError, match="startend_row_indices has shape"):
        fa(q, k, v, _t(np.zeros((1, 1, 9, 1), np.int32)), causal=True)
    with pytest.raises(ValueError, match="window_size and startend_row_indices"):
        fa(q, k, v, _t(ok), causal=True, window_size=2)
    with pytest.raises(ValueError, match="value 9"):
        fa(q, k, v, _t(np.full((1, 1, 8, 1), 9, np.int32)), causal=True)
    with pytest.raises(ValueError, match="dropout"):
        fa(q, k, v, _t(ok), causal=True, dropout=1.5)
    # Paddle's block mask: [b, mask_heads, ceil(s_q / 128), ceil(s_kv / 128)] int32, with bounds.
    bm = np.ones((1, 1, 1, 1), np.int32)
    with pytest.raises(ValueError, match="block_mask needs startend_row_indices"):
        fa(q, k, v, None, causal=True, block_mask=_t(bm))
    with pytest.raises(ValueError, match=r"block_mask has shape \[1, 2, 1, 1\]"):
        fa(q, k, v, _t(ok), causal=True, block_mask=_t(np.ones((1, 2, 1, 1), np.int32)))
    with pytest.raises((TypeError, ValueError), match="block_mask"):
        fa(q, k, v, _t(ok), causal=True, block_mask=_t(bm.astype(np.int64)))
    # The block mask runs the unfused path, whose dropout a seed/offset pair does not describe.
    with pytest.raises(ValueError, match="fixed_seed_offset / return_seed_offset.*block_mask"):
        fa(q, k, v, _t(ok), causal=True, block_mask=_t(bm), dropout=0.2, return_seed_offset=True)


@pytest.mark.parametrize("causal", [True, False])
def test_block_mask(rng, causal):
    """Paddle's block_mask (1 = keep the 128 x 128 block) on top of the column bounds, mask heads
    broadcast as the bounds' (the bounds' head count)."""
    b, s_q, s_kv, h, h_kv, d = 2, 300, 270, 4, 2, 8
    arrs = _inputs(rng, b, s_q, s_kv, h, h_kv, d)
    fn = zoo.causal_document if causal else zoo.document
    se = zoo.with_heads(fn(rng, b, s_q, s_kv), rng, h_kv)
    bm = (rng.random((b, h_kv, 3, 3)) < 0.6).astype(np.int32)
    bm[0, 0, 2, :] = 0  # query block 2 of head group 0: every row sees nothing
    d_out = rng.standard_normal((b, s_q, h, d))
    q, k, v = (_t(a, True) for a in arrs)
    out, lse = paddle_te.flashmask_attention(q, k, v, _t(se), causal=causal, block_mask=_t(bm),
                                             return_softmax_lse=True)
    grads = paddle.grad([(out * _t(d_out)).sum()], [q, k, v])
    blocked = np.repeat(np.repeat(bm == 0, 128, axis=2), 128, axis=3)[:, :, :s_q, :s_kv]
    mask = ref.flashmask_dense(se, s_q, causal, h) | np.repeat(blocked, h // h_kv, axis=1)
    kind = "causal" if causal else "no_mask"
    want, want_lse = ref.attention_fwd(*arrs, attn_mask_type=kind, attn_mask=mask)
    want_grads = ref.attention_bwd(*arrs, d_out, attn_mask_type=kind, attn_mask=mask)
    np.testing.assert_allclose(out.numpy(), want, atol=1e-9)
    fin = np.isfinite(want_lse)
    assert np.all(lse.numpy()[~fin] == -np.inf) and (~fin[0, :2, 256:]).all()
    np.testing.assert_allclose(lse.numpy()[fin], want_lse[fin], atol=1e-5, rtol=1e-5)  # float32
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g.numpy(), w, atol=1e-8)
    assert np.all(out.numpy()[0, 256:, :2] == 0) and np.all(grads[0].numpy()[0, 256:, :2] == 0)


# ---- paddle_te.masks ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", [z[0] for z in zoo.ZOO])
def test_dense_round_trip(rng, name):
    causal, fn = zoo.ZOO_BY_NAME[name]
    se = zoo.with_heads(fn(rng, 2, 23, 19), rng, 2)
    dense = masks.startend_row_indices_to_dense(paddle.to_tensor(se), 23, causal).numpy()
    want = ref.flashmask_dense(se, 23, causal)
    if causal:
        want = want | (np.arange(19)[None, :] > np.arange(23)[:, None])
    np.testing.assert_array_equal(dense, want)
    back = masks.dense_to_startend_row_indices(dense, causal)
    again = masks.startend_row_indices_to_dense(back, 23, causal).numpy()
    np.testing.assert_array_equal(again, dense)


def test_dense_inexpressible():
    m = np.zeros((1, 1, 6, 3), bool)
    m[0, 0, [1, 3, 5], 0] = True  # three separate runs in column 0
    with pytest.raises(ValueError, match='attn_mask_type="arbitrary"'):
        masks.dense_to_startend_row_indices(m, False)
    m = np.zeros((1, 1, 6, 3), bool)
    m[0, 0, [2, 4], 0] = True  # two runs below the diagonal
    with pytest.raises(ValueError, match='two separate.*attn_mask_type="arbitrary"'):
        masks.dense_to_startend_row_indices(m, True)


def test_dense_causal_ignores_the_upper_triangle():
    """With causal=True the table describes the rows at and below the diagonal; the elements
    above it (masked by the causal rule anyway) are not read, masked or not."""
    upper = np.arange(3)[None, :] > np.arange(6)[:, None]
    m = np.zeros((1, 1, 6, 3), bool)
    m[0, 0, 4:, 1] = True
    for given in (m, m | upper):
        back = masks.dense_to_startend_row_indices(given, True)
        np.testing.assert_array_equal(back.numpy()[0, 0, :, 0], [6, 4, 6])
        np.testing.assert_array_equal(masks.startend_row_indices_to_dense(back, 6, True).numpy(),
                                      m | upper)


def _doc_id(cu, s):
    return np.searchsorted(np.asarray(cu), np.arange(s), side="right") - 1


def _dense(se, s, causal):
    return masks.startend_row_indices_to_dense(se, s, causal).numpy()[0, 0]


def test_builders_against_definitions():
    cu, s = [0, 5, 9, 16], 16
    doc = _doc_id(cu, s)
    same = doc[:, None] == doc[None, :]
    i, j = np.arange(s)[:, None], np.arange(s)[None, :]
    np.testing.assert_array_equal(_dense(masks.causal_document_mask(cu), s, True), ~(same & (j <= i)))
    np.testing.assert_array_equal(_dense(masks.document_mask(cu), s, False), ~same)
    prefix = [2, 0, 7]
    pl = np.asarray(prefix)[doc]
    start = np.asarray(cu)[doc]
    vis = same & ((j <= i) | (j < start[None, :] + pl[None, :]))
    np.testing.assert_array_equal(_dense(masks.prefix_lm_document_mask(cu, prefix), s, False), ~vis)
    vis = same & (j <= i) & (i - j <= 3)
    np.testing.assert_array_equal(_dense(masks.sliding_window_mask(s, 3, cu_seqlens=cu), s, True), ~vis)
    vis = (j - i <= 2) & (i - j <= 1)
    np.testing.assert_array_equal(_dense(masks.sliding_window_mask(s, (1, 2), causal=False), s, False), ~vis)
    # Share-question: documents [question, answers...]; an answer sees its question and itself.
    segs = [[3, 2, 4], [2, 3]]
    seg_id = np.repeat(np.arange(5), [3, 2, 4, 2, 3])
    is_q = np.isin(seg_id, [0, 3])
    d2 = np.repeat([0, 0, 0, 1, 1], [3, 2, 4, 2, 3])
    i, j = np.arange(14)[:, None], np.arange(14)[None, :]
    vis = (d2[:, None] == d2[None, :]) & (j <= i) & ((seg_id[:, None] == seg_id[None, :]) | is_q[None, :])
    np.testing.assert_array_equal(_dense(masks.share_question_mask(segs), 14, True), ~vis)
    # Batch of cu_seqlens rows.
    two = masks.causal_document_mask([[0, 4, 8], [0, 8]])
    assert two.shape == [2, 1, 8, 1] and two.dtype == paddle.int32
    with pytest.raises(ValueError, match="cu_seqlens"):
        masks.document_mask([1, 4])


# ---- DotProductAttention ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["bshd", "sbhd"])
def test_dpa_startend(rng, fmt):
    b, s, h, d = 2, 24, 4, 8
    arrs = _inputs(rng, b, s, s, h, 2, d, "float32")
    se = zoo.causal_document(rng, b, s, s)
    layer = DotProductAttention(h, d, num_gqa_groups=2, attn_mask_type="causal", qkv_format=fmt,
                                attention_dropout=0.0)
    ts = [_t(a if fmt == "bshd" else a.transpose(1, 0, 2, 3)) for a in arrs]
    out = layer(*ts, startend_row_indices=_t(se)).numpy()
    if fmt == "sbhd":
        out = out.transpose(1, 0, 2, 3)
    want, _ = ref.flashmask_attention_fwd(*arrs, se, causal=True)
    np.testing.assert_allclose(out, want, atol=2e-5)
    with pytest.raises(ValueError, match="startend_row_indices and cu_seqlens_q"):
        layer(*ts, startend_row_indices=_t(se), cu_seqlens_q=_t(np.array([0, 3, 5], np.int32)))
    bad = DotProductAttention(h, d, num_gqa_groups=2, attn_mask_type="padding", qkv_format=fmt)
    with pytest.raises(ValueError, match="startend_row_indices with attn_mask_type='padding'"):
        bad(*ts, startend_row_indices=_t(se))
    # (-1, 0) makes no_mask causal, but the bounds' table depends on causal: refused, not dropped.
    bad = DotProductAttention(h, d, num_gqa_groups=2, attn_mask_type="no_mask", qkv_format=fmt,
                              window_size=(-1, 0))
    with pytest.raises(ValueError, match=r"window_size=\(-1, 0\).*attn_mask_type='causal'"):
        bad(*ts, startend_row_indices=_t(np.concatenate([se, se], axis=-1)))


@pytest.mark.parametrize("b,s_q,s_kv", [(2, 0, 5), (2, 4, 0), (0, 4, 5)])
def test_zero_size_inputs(b, s_q, s_kv):
    """No queries, no keys or no batch: rows that see no key give 0 and lse -inf, gradients are
    0 (zero-size where empty); the custom op cannot receive the empty tensors."""
    q = _t(np.ones((b, s_q, 4, 8)), True)
    k, v = (_t(np.ones((b, s_kv, 2, 8)), True) for _ in range(2))
    se = _t(np.full((b, 1, s_kv, 1), s_q, np.int32))
    out, lse = paddle_te.flashmask_attention(q, k, v, se, causal=True, return_softmax_lse=True)
    assert out.shape == [b, s_q, 4, 8] and lse.shape == [b, 4, s_q]
    assert np.all(out.numpy() == 0) and np.all(lse.numpy() == -np.inf)
    grads = paddle.grad([out.sum()], [q, k, v])
    for g, t in zip(grads, (q, k, v)):
        assert g.shape == t.shape and np.all(g.numpy() == 0)
