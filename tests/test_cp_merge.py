"""The lse merge of context parallelism (SPEC §11; paddle_te/merge.h): the Paddle op
(paddle_te.distributed.attn_merge) and paddle_te_core.attn_merge on the CPU, against float64
numpy; plus the argument checks of the context-parallel entry points (no processes needed)."""

import math

import numpy as np
import paddle
import pytest

import reference as ref
from core_import import cpu_core
from paddle_te import distributed as ptd

core = cpu_core()
needs_core = pytest.mark.skipif(core is None, reason="paddle_te_core is not built (make core)")

NEG_INF = -math.inf


def _merge64(oa, la, ob, lb, fmt):
    """float64 merge; out layout per fmt, lse [b, h, s] ([h, t] for thd)."""
    la, lb = la.astype(np.float64), lb.astype(np.float64)
    lse = np.logaddexp(la, lb)
    with np.errstate(invalid="ignore"):
        wa, wb = np.exp(la - lse), np.exp(lb - lse)
    wa, wb = np.nan_to_num(wa), np.nan_to_num(wb)

    def to_out(w):  # lse-shaped weights -> out-shaped
        if fmt == "bshd":
            return w.transpose(0, 2, 1)[..., None]
        if fmt == "sbhd":
            return w.transpose(2, 0, 1)[..., None]
        return w.transpose(1, 0)[..., None]

    oa64 = np.where(to_out(wa) > 0, oa.astype(np.float64), 0.0)
    ob64 = np.where(to_out(wb) > 0, ob.astype(np.float64), 0.0)
    return to_out(wa) * oa64 + to_out(wb) * ob64, lse


def _case(rng, fmt, dtype=np.float32):
    b, s, h, d = 2, 5, 3, 8
    shape = {"bshd": (b, s, h, d), "sbhd": (s, b, h, d), "thd": (s, h, d)}[fmt]
    lse_shape = (h, s) if fmt == "thd" else (b, h, s)
    oa, ob = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    la, lb = (rng.standard_normal(lse_shape).astype(np.float32) * 3 for _ in range(2))
    # Rows where one part, the other, or both saw no key. The empty part's output is garbage
    # (NaN): it must not be read.
    flat_a, flat_b = la.reshape(-1), lb.reshape(-1)
    flat_a[0] = flat_b[0] = NEG_INF  # both empty
    flat_a[1] = NEG_INF  # only B
    flat_b[2] = NEG_INF  # only A
    return oa, la, ob, lb


def _nan_rows(o, l_part, fmt):
    """Poison the outputs of the rows whose lse is -inf."""
    o = o.copy()
    idx = np.argwhere(np.isneginf(l_part))
    for ix in idx:
        if fmt == "bshd":
            o[ix[0], ix[2], ix[1]] = np.nan
        elif fmt == "sbhd":
            o[ix[2], ix[0], ix[1]] = np.nan
        else:
            o[ix[1], ix[0]] = np.nan
    return o


@pytest.mark.parametrize("fmt", ["bshd", "sbhd", "thd"])
def test_merge_op_matches_float64(rng, fmt):
    oa, la, ob, lb = _case(rng, fmt)
    oa, ob = _nan_rows(oa, la, fmt), _nan_rows(ob, lb, fmt)
    out, lse = ptd.attn_merge(*(paddle.to_tensor(x) for x in (oa, la, ob, lb)), qkv_format=fmt)
    want_out, want_lse = _merge64(oa, la, ob, lb, fmt)
    assert not np.isnan(out.numpy()).any()
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-6, atol=1e-6)
    got_lse = lse.numpy()
    assert np.array_equal(np.isneginf(got_lse), np.isneginf(want_lse))
    fin = np.isfinite(want_lse)
    np.testing.assert_allclose(got_lse[fin], want_lse[fin], rtol=1e-6, atol=1e-6)
    # Both parts empty: output exactly 0, lse -inf.
    empty = np.isneginf(want_lse)
    assert empty.sum() == 1 and np.isneginf(got_lse.reshape(-1)[0])


@pytest.mark.parametrize("fmt", ["bshd", "sbhd"])
def test_merge_order_independent(rng, fmt):
    """Swapping the parts gives the same bits; folding three parts in any order agrees to
    rounding."""
    oa, la, ob, lb = _case(rng, fmt)
    t = [paddle.to_tensor(x) for x in (oa, la, ob, lb)]
    o1, l1 = ptd.attn_merge(t[0], t[1], t[2], t[3], qkv_format=fmt)
    o2, l2 = ptd.attn_merge(t[2], t[3], t[0], t[1], qkv_format=fmt)
    assert np.array_equal(o1.numpy(), o2.numpy()) and np.array_equal(l1.numpy(), l2.numpy())
    oc, lc = _case(rng, fmt)[:2]
    tc = [paddle.to_tensor(oc), paddle.to_tensor(lc)]
    x1 = ptd.attn_merge(*ptd.attn_merge(t[0], t[1], t[2], t[3], qkv_format=fmt), *tc, qkv_format=fmt)
    x2 = ptd.attn_merge(t[0], t[1], *ptd.attn_merge(t[2], t[3], *tc, qkv_format=fmt), qkv_format=fmt)
    np.testing.assert_allclose(x1[0].numpy(), x2[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x1[1].numpy(), x2[1].numpy(), rtol=1e-5, atol=1e-6)


def test_merge_of_split_keys_is_attention_over_all(rng):
    """Attention over keys [0, 5) and [5, 12) merged = attention over [0, 12) (oracle), causal
    with a window so that some rows see nothing in one part (and one part sees nothing at all
    for the first rows)."""
    b, s_q, s_kv, h, d = 2, 12, 12, 2, 8
    q, k, v = (rng.standard_normal((b, n, h, d)) for n in (s_q, s_kv, s_kv))
    full, full_lse = ref.attention_fwd(q, k, v, attn_mask_type="causal", window_size=(4, 0))
    cut = 5
    # Query i sees key j iff i - 4 <= j <= i. Part A: keys [0, cut) as window (4, 0) over
    # positions; part B: keys [cut, 12) are positions j' + cut: i - 4 - cut <= j' <= i - cut.
    vis_a = ref.visibility_mask(s_q, cut, mask_type="no_mask", window=(4, 0))
    oa, la = ref.attention_fwd(q, k[:, :cut], v[:, :cut], attn_mask=~vis_a[None, None])
    jj = np.arange(s_kv - cut)[None, :] + cut
    ii = np.arange(s_q)[:, None]
    vis_b = (jj <= ii) & (jj >= ii - 4)
    ob, lb = ref.attention_fwd(q, k[:, cut:], v[:, cut:], attn_mask=~vis_b[None, None])
    out, lse = ptd.attn_merge(*(paddle.to_tensor(x) for x in (oa, la.astype(np.float32), ob,
                                                              lb.astype(np.float32))))
    np.testing.assert_allclose(out.numpy(), full, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lse.numpy(), full_lse, rtol=1e-6, atol=1e-6)


def test_merge_float16_on_cpu(rng):
    """CPU float16 partials are merged in float32 and returned in the accumulator's dtype."""
    oa, la, ob, lb = _case(rng, "bshd")
    out, _ = ptd.attn_merge(paddle.to_tensor(oa).astype("float16"), paddle.to_tensor(la),
                            paddle.to_tensor(ob).astype("float16"), paddle.to_tensor(lb))
    assert out.dtype == paddle.float16
    want, _ = _merge64(oa.astype(np.float16), la, ob.astype(np.float16), lb, "bshd")
    np.testing.assert_allclose(out.astype("float32").numpy(), want, rtol=2e-3, atol=2e-3)


def test_merge_bad_input(rng):
    oa, la, ob, lb = (paddle.to_tensor(x) for x in _case(rng, "bshd"))
    with pytest.raises(ValueError, match="lse_b"):
        ptd.attn_merge(oa, la, ob, lb[:, :, :2])
    with pytest.raises(ValueError, match="out_b"):
        ptd.attn_merge(oa, la, ob[:, :2], lb)
    with pytest.raises(ValueError, match="lse_a has dtype float64"):
        ptd.attn_merge(oa, la.astype("float64"), ob, lb)
    with pytest.raises(ValueError, match="qkv_format"):
        ptd.attn_merge(oa, la, ob, lb, qkv_format="bhsd")


@needs_core
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_core_merge_in_place_and_strided(rng, dtype):
    """paddle_te_core.attn_merge: out/lse aliasing out_a/lse_a (a running accumulator), and a
    strided destination (a slice of a larger buffer along the sequence)."""
    oa, la, ob, lb = _case(rng, "bshd", dtype)
    want_out, want_lse = _merge64(oa, la, ob, lb, "bshd")
    acc, acc_lse = oa.copy(), la.copy()
    core.attn_merge(acc, acc_lse, ob, lb, acc, acc_lse, qkv_format="bshd")
    np.testing.assert_allclose(acc, want_out, rtol=1e-6, atol=1e-6)
    fin = np.isfinite(want_lse)
    np.testing.assert_allclose(acc_lse[fin], want_lse[fin], rtol=1e-6, atol=1e-6)
    assert np.isneginf(acc_lse.reshape(-1)[0])
    big = np.full((2, 9, 3, 8), np.nan, dtype=dtype)
    big_lse = np.full((2, 3, 9), np.nan, dtype=np.float32)
    core.attn_merge(oa, la, ob, lb, big[:, 2:7], big_lse[:, :, 2:7])
    np.testing.assert_allclose(big[:, 2:7], want_out, rtol=1e-6, atol=1e-6)
    assert np.isnan(big[:, :2]).all() and np.isnan(big[:, 7:]).all()  # nothing else written
    with pytest.raises(ValueError, match="out aliases out_b"):
        core.attn_merge(oa, la, ob, lb, ob, la.copy())


# ---- argument checks of the context-parallel entry points (no processes) -----------------------
class _FakeGroup:
    def __init__(self, n, rank):
        self.nranks, self.rank, self.ranks = n, rank, list(range(n))


def test_layout_round_trip_and_errors():
    x = paddle.arange(2 * 16).reshape([2, 16])
    shards = [ptd.get_batch_on_this_cp_rank(x, 1, _FakeGroup(4, r)) for r in range(4)]
    # rank 1 of 4 holds chunks 1 and 6 (chunk length 2)
    assert shards[1][0].numpy().tolist() == [2, 3, 12, 13]
    with pytest.raises(ValueError, match="divisible by 2 \\* N = 6"):
        ptd.get_batch_on_this_cp_rank(x, 1, _FakeGroup(3, 0))
    with pytest.raises(ValueError, match="seq_dim"):
        ptd.get_batch_on_this_cp_rank(x, 2, _FakeGroup(2, 0))


def test_cp_argument_errors():
    with pytest.raises(ValueError, match="cp_comm_type='a2a'"):
        ptd.check_cp_args(_FakeGroup(2, 0), cp_comm_type="a2a")
    with pytest.raises(ValueError, match="N >= 2"):
        ptd.check_cp_args(_FakeGroup(1, 0))
    with pytest.raises(ValueError, match="cp_global_ranks"):
        ptd.check_cp_args(_FakeGroup(2, 0), cp_global_ranks=[1, 0])
    with pytest.raises(TypeError, match="cp_group"):
        ptd.check_cp_args(object())
    q = paddle.zeros([1, 6, 2, 8])
    g = _FakeGroup(2, 0)
    with pytest.raises(ValueError, match="attn_mask_type='arbitrary'"):
        ptd.context_parallel_attn(q, q, q, cp_group=g, attn_mask_type="arbitrary")
    with pytest.raises(ValueError, match="qkv_format='thd'"):
        ptd.context_parallel_attn(q, q, q, cp_group=g, qkv_format="thd")
    with pytest.raises(ValueError, match="global sequence length 10 must be divisible by 2N = 4"):
        ptd.context_parallel_attn(q[:, :5], q[:, :5], q[:, :5], cp_group=g)
    with pytest.raises(ValueError, match="needs cu_seqlens"):
        ptd.context_parallel_attn(q, q, q, cp_group=g, attn_mask_type="padding")
    from paddle_te.nn import DotProductAttention

    with pytest.raises(ValueError, match="cp_comm_type"):
        DotProductAttention(2, 8, cp_comm_type="ring")


def test_pair_plans():
    """The work of each (query chunk, key chunk) pair, chunk length 4."""
    from paddle_te.distributed._plan import pair_plan as _pair_plan

    def plan(qc, kc, left, right):
        p = _pair_plan(qc, kc, 4, left, right)
        return None if p is None else (p.f, p.e, p.left, p.right)

    assert plan(1, 1, -1, 0) == (0, 0, -1, 0)  # diagonal: causal
    assert plan(2, 1, -1, 0) == (0, 0, -1, -1)  # below the diagonal: a full block
    assert plan(1, 2, -1, 0) is None  # above: nothing
    assert plan(2, 1, 5, 0) == (0, 0, 1, -1)  # window 5 reaches back into the block
    assert plan(3, 1, 5, 0) == (0, 3, 0, -1)  # keys 0..2 out of reach: sliced off
    assert plan(3, 0, 5, 0) is None  # entirely outside the window
    assert plan(0, 1, 3, 2) == (2, 0, -1, 0)  # right window: the first two queries see nothing
