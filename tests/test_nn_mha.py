"""paddle_te.nn.MultiHeadAttention is a drop-in for paddle.nn.MultiHeadAttention.

The peer is Paddle's own layer: both load the same state_dict (each way), see the same inputs and
masks (Paddle's convention: bool True = keep, int 1 = keep, float added) and must agree within
dtype tolerance. The one allowed difference (SPEC §8): a query row whose keys are all masked gets
0 from our attention core, so our layer output there is out_proj's bias (Paddle gives a uniform
average or NaN).
"""

import numpy as np
import paddle
import pytest

import paddle_te.nn as tnn

TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-10, atol=1e-10)}
E, H = 32, 4  # head_dim 8: a softmax scale (1/sqrt(8)) that float32 cannot represent


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    old = paddle.get_default_dtype()
    paddle.set_default_dtype(request.param)
    yield request.param
    paddle.set_default_dtype(old)


def _pair(dtype, load_into="ours", **kw):
    """(paddle layer, paddle_te layer) with the same weights, the state_dict loaded `load_into`."""
    hints = {k: kw.pop(k) for k in ("attn_mask_type", "window_size", "backend") if k in kw}
    ref = paddle.nn.MultiHeadAttention(E, H, **kw)
    ours = tnn.MultiHeadAttention(E, H, **kw, **hints)
    if load_into == "ours":
        ours.set_state_dict(ref.state_dict())
    else:
        ref.set_state_dict(ours.state_dict())
    return ref, ours


def _t(x, dtype=None):
    return paddle.to_tensor(x if dtype is None else np.asarray(x, dtype=dtype))


def _keep_rows(keep, b, s_q, s_kv):
    """keep: Paddle-convention bool array broadcastable to [b, h, s_q, s_kv] -> bool [b, h, s_q]
    True where a query row has at least one visible key."""
    full = np.broadcast_to(keep, np.broadcast_shapes(keep.shape, (b, H, s_q, s_kv)))
    return full.any(-1)


def _assert_out(ours, ref, dtype, ours_layer, rows_ok=None):
    """Outputs [b, s_q, E] agree on rows that see a key; elsewhere ours == out_proj.bias."""
    o, r = ours.numpy(), ref.numpy()
    assert np.all(np.isfinite(o))
    if rows_ok is None:
        np.testing.assert_allclose(o, r, **TOL[dtype])
        return
    row = rows_ok.all(1)  # [b, s_q]: every head sees a key
    np.testing.assert_allclose(o[row], r[row], **TOL[dtype])
    none = ~rows_ok.any(1)  # rows no head can see anything: the output is out_proj's bias
    if none.any():
        bias = ours_layer.out_proj.bias.numpy()
        np.testing.assert_allclose(o[none], np.broadcast_to(bias, o[none].shape), **TOL[dtype])


def _inputs(rng, b, s_q, s_kv, kdim=E, vdim=E, dtype="float32"):
    q = _t(rng.standard_normal((b, s_q, E)), dtype)
    k = _t(rng.standard_normal((b, s_kv, kdim)), dtype)
    v = _t(rng.standard_normal((b, s_kv, vdim)), dtype)
    return q, k, v


# ---- no mask: self, cross, kdim/vdim, both load directions ---------------------------------


@pytest.mark.parametrize("load_into", ["ours", "paddle"])
@pytest.mark.parametrize("kind", ["self", "cross", "kdim_vdim"])
def test_no_mask(rng, dtype, kind, load_into):
    kw = dict(kdim=12, vdim=10) if kind == "kdim_vdim" else {}
    ref, ours = _pair(dtype, load_into, **kw)
    q, k, v = _inputs(rng, 2, 5, 7, kw.get("kdim", E), kw.get("vdim", E), dtype)
    if kind == "self":
        _assert_out(ours(q), ref(q), dtype, ours)
    else:
        _assert_out(ours(q, k, v), ref(q, k, v), dtype, ours)


def test_sublayers_and_parameter_names():
    ref = paddle.nn.MultiHeadAttention(E, H, kdim=12, vdim=10, bias_attr=False)
    ours = tnn.MultiHeadAttention(E, H, kdim=12, vdim=10, bias_attr=False)
    assert isinstance(ours, paddle.nn.MultiHeadAttention)
    assert [n for n, _ in ours.named_sublayers()] == [n for n, _ in ref.named_sublayers()]
    assert {k: list(v.shape) for k, v in ours.state_dict().items()} == {
        k: list(v.shape) for k, v in ref.state_dict().items()
    }
    assert ours.Cache is paddle.nn.MultiHeadAttention.Cache
    assert ours.StaticCache is paddle.nn.MultiHeadAttention.StaticCache


# ---- masks in Paddle's convention -----------------------------------------------------------


def _mask(kind, rng, b, s_q, s_kv):
    """(mask tensor in Paddle's convention, keep bool array, hint or None)."""
    if kind in ("bool", "int", "float", "bool_2d", "bool_per_head"):
        shape = {"bool_2d": (s_q, s_kv), "bool_per_head": (b, H, s_q, s_kv)}.get(
            kind, (b, 1, s_q, s_kv)
        )
        keep = rng.random(shape) < 0.7
        keep.reshape(-1, s_kv)[0, :] = False  # at least one fully masked row
        if kind == "int":
            return _t(keep.astype(np.int64)), keep, None
        if kind == "float":
            return _t(np.where(keep, 0.0, -np.inf), paddle.get_default_dtype()), keep, None
        return _t(keep), keep, None
    if kind == "float_additive":
        # A finite additive bias (e.g. relative positions) plus -inf entries.
        add = rng.standard_normal((b, 1, s_q, s_kv))
        keep = rng.random((b, 1, s_q, s_kv)) < 0.8
        return _t(np.where(keep, add, -np.inf), paddle.get_default_dtype()), keep, None
    causal = np.tril(np.ones((s_q, s_kv), dtype=bool))
    if kind == "causal_bool":
        return _t(causal), causal, None
    if kind == "causal_float":
        m = paddle.nn.Transformer.generate_square_subsequent_mask(None, s_q)
        return m.astype(paddle.get_default_dtype()), causal, None
    if kind == "causal_hint":
        return _t(causal), causal, "causal"
    lengths = rng.integers(1, s_kv + 1, size=b)
    lengths[0] = s_kv
    key_keep = np.arange(s_kv)[None, :] < lengths[:, None]  # [b, s_kv]
    if kind in ("padding_bool", "padding_hint"):
        keep = key_keep[:, None, None, :]
        return _t(keep), keep, ("padding" if kind == "padding_hint" else None)
    if kind == "padding_int_hint":
        keep = key_keep[:, None, None, :]
        return _t(keep.astype(np.int32)), keep, "padding"
    if kind == "padding_full_hint":
        q_len = rng.integers(1, s_q + 1, size=b)
        q_keep = np.arange(s_q)[None, :] < q_len[:, None]
        keep = (q_keep[:, :, None] & key_keep[:, None, :])[:, None]
        return _t(keep), keep, "padding"
    raise AssertionError(kind)


MASK_KINDS = [
    "bool",
    "int",
    "float",
    "bool_2d",
    "bool_per_head",
    "float_additive",
    "causal_bool",
    "causal_float",
    "causal_hint",
    "padding_bool",
    "padding_hint",
    "padding_int_hint",
    "padding_full_hint",
]


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_masks(rng, dtype, kind):
    b, s = 3, 6
    s_kv = s if kind.startswith("causal") else 7
    mask, keep, hint = _mask(kind, rng, b, s, s_kv)
    ref, ours = _pair(dtype, attn_mask_type=hint)
    q, k, v = _inputs(rng, b, s, s_kv, dtype=dtype)
    if s_kv == s:
        k = v = q
    rows = _keep_rows(keep, b, s, s_kv)
    _assert_out(ours(q, k, v, mask), ref(q, k, v, mask), dtype, ours, rows)


@pytest.mark.parametrize("kind", ["bool", "causal_float", "padding_hint"])
def test_need_weights(rng, dtype, kind):
    b, s, s_kv = 2, 5, 5
    mask, keep, hint = _mask(kind, rng, b, s, s_kv)
    ref, ours = _pair(dtype, need_weights=True, attn_mask_type=hint)
    q, _, _ = _inputs(rng, b, s, s_kv, dtype=dtype)
    o_out, o_w = ours(q, q, q, mask)
    r_out, r_w = ref(q, q, q, mask)
    rows = _keep_rows(keep, b, s, s_kv)
    _assert_out(o_out, r_out, dtype, ours, rows)
    w, rw = o_w.numpy(), r_w.numpy()
    assert w.shape == (b, H, s, s_kv)
    np.testing.assert_allclose(w[rows], rw[rows], **TOL[dtype])
    assert np.all(w[~rows] == 0)


def test_need_weights_no_mask(rng, dtype):
    ref, ours = _pair(dtype, need_weights=True)
    q, _, _ = _inputs(rng, 2, 4, 4, dtype=dtype)
    (o, ow), (r, rw) = ours(q), ref(q)
    np.testing.assert_allclose(o.numpy(), r.numpy(), **TOL[dtype])
    np.testing.assert_allclose(ow.numpy(), rw.numpy(), **TOL[dtype])


def test_gradients_match(rng):
    old = paddle.get_default_dtype()
    paddle.set_default_dtype("float64")
    try:
        for kind in ("padding_hint", "bool"):
            mask, keep, hint = _mask(kind, rng, 2, 5, 5)
            if kind == "bool":
                keep[...] = True  # every row sees a key: gradients are comparable everywhere
                mask = _t(keep)
            ref, ours = _pair("float64", attn_mask_type=hint)
            x = _t(rng.standard_normal((2, 5, E)))
            grads = []
            for layer in (ref, ours):
                xx = x.clone()
                xx.stop_gradient = False
                (layer(xx, xx, xx, mask) ** 2).sum().backward()
                grads.append(
                    [xx.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()]
                )
                layer.clear_gradients()
            for a, b in zip(*grads):
                np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-10)
    finally:
        paddle.set_default_dtype(old)


def test_dropout_eval_matches(rng, dtype):
    ref, ours = _pair(dtype, dropout=0.5)
    ref.eval()
    ours.eval()
    q, _, _ = _inputs(rng, 2, 4, 4, dtype=dtype)
    _assert_out(ours(q), ref(q), dtype, ours)


def test_dropout_in_training_changes_output(rng):
    _, ours = _pair("float32", dropout=0.5)
    q, _, _ = _inputs(rng, 2, 6, 6)
    ours.train()
    paddle.seed(3)
    a = ours(q).numpy()
    paddle.seed(3)
    b = ours(q).numpy()
    c = ours(q).numpy()
    ours.eval()
    d = ours(q).numpy()
    np.testing.assert_array_equal(a, b)  # paddle.seed makes it repeatable
    assert not np.allclose(a, c)  # fresh randomness each call
    assert not np.allclose(a, d)  # no dropout in eval mode


# ---- incremental decoding --------------------------------------------------------------------


@pytest.mark.parametrize("hint", [None, "causal"])
def test_cache_decoding(rng, dtype, hint):
    """A prefill of 3 tokens with a causal mask, then 3 single-token steps without a mask."""
    b, pre, steps = 2, 3, 3
    ref, ours = _pair(dtype, attn_mask_type=hint)
    x = _t(rng.standard_normal((b, pre + steps, E)), dtype)
    causal = _t(np.tril(np.ones((pre, pre), dtype=bool)))
    caches = [ref.gen_cache(x), ours.gen_cache(x)]
    assert list(caches[1].k.shape) == [b, H, 0, E // H]
    assert isinstance(caches[1], paddle.nn.MultiHeadAttention.Cache)
    xs = [(x[:, :pre], causal)] + [(x[:, t : t + 1], None) for t in range(pre, pre + steps)]
    for xt, mask in xs:
        r, caches[0] = ref(xt, xt, xt, mask, caches[0])
        o, caches[1] = ours(xt, xt, xt, mask, caches[1])
        _assert_out(o, r, dtype, ours)
        np.testing.assert_array_equal(caches[1].k.numpy(), caches[0].k.numpy())
        np.testing.assert_array_equal(caches[1].v.numpy(), caches[0].v.numpy())
    # The same sequence in one causal pass gives the same last output.
    full_mask = _t(np.tril(np.ones((pre + steps,) * 2, dtype=bool)))
    np.testing.assert_allclose(
        ours(x, x, x, full_mask).numpy()[:, -1], o.numpy()[:, 0], **TOL[dtype]
    )


def test_cache_decoding_need_weights_causal_hint(rng, dtype):
    """need_weights (unfused) with the causal hint while decoding: bottom-right causal."""
    ref, ours = _pair(dtype, need_weights=True, attn_mask_type="causal")
    x = _t(rng.standard_normal((2, 5, E)), dtype)
    causal = _t(np.tril(np.ones((3, 3), dtype=bool)))
    cr, co = ref.gen_cache(x), ours.gen_cache(x)
    for xt, mask in [(x[:, :3], causal), (x[:, 3:4], None), (x[:, 4:5], None)]:
        r, rw, cr = ref(xt, xt, xt, mask, cr)
        o, ow, co = ours(xt, xt, xt, None, co)  # the hint stands in for the mask
        _assert_out(o, r, dtype, ours)
        np.testing.assert_allclose(ow.numpy(), rw.numpy(), **TOL[dtype])


def test_cache_with_initial_value_and_mask(rng, dtype):
    """gen_cache(key, value) wraps given tensors; a key-padding mask over the cached positions."""
    ref, ours = _pair(dtype, need_weights=True)
    k0 = _t(rng.standard_normal((2, H, 3, E // H)), dtype)
    v0 = _t(rng.standard_normal((2, H, 3, E // H)), dtype)
    x = _t(rng.standard_normal((2, 1, E)), dtype)
    keep = np.array([[True, True, False, True], [True, True, True, True]])[:, None, None, :]
    r, rw, rc = ref(x, x, x, _t(keep), ref.gen_cache(k0, v0))
    o, ow, oc = ours(x, x, x, _t(keep), ours.gen_cache(k0, v0))
    _assert_out(o, r, dtype, ours)
    np.testing.assert_allclose(ow.numpy(), rw.numpy(), **TOL[dtype])
    assert list(oc.k.shape) == [2, H, 4, E // H]


@pytest.mark.parametrize("hint", [None, "padding"])
def test_static_cache(rng, dtype, hint):
    b, s_enc = 2, 7
    ref, ours = _pair(dtype, kdim=12, vdim=10, attn_mask_type=hint)
    mem_k = _t(rng.standard_normal((b, s_enc, 12)), dtype)
    mem_v = _t(rng.standard_normal((b, s_enc, 10)), dtype)
    keep = (np.arange(s_enc)[None, :] < np.array([7, 4])[:, None])[:, None, None, :]
    mask = _t(keep)
    rc = ref.gen_cache(mem_k, mem_v, type=ref.StaticCache)
    oc = ours.gen_cache(mem_k, mem_v, type=ours.StaticCache)
    assert isinstance(oc, paddle.nn.MultiHeadAttention.StaticCache)
    np.testing.assert_allclose(oc.k.numpy(), rc.k.numpy(), **TOL[dtype])
    for t in range(3):
        x = _t(rng.standard_normal((b, 1, E)), dtype)
        r, rc2 = ref(x, None, None, mask, rc)
        o, oc2 = ours(x, None, None, mask, oc)
        assert oc2 is oc
        _assert_out(o, r, dtype, ours)


def test_inside_paddle_decoder_layer_cache(rng):
    """Paddle's TransformerDecoderLayer drives the caches of a replaced layer unchanged."""
    paddle.seed(1)
    layer = paddle.nn.TransformerDecoderLayer(E, H, 32, dropout=0.0)
    layer.eval()
    ours = paddle.nn.TransformerDecoderLayer(E, H, 32, dropout=0.0)
    ours.set_state_dict(layer.state_dict())
    ours.eval()
    assert tnn.replace_multihead_attention(ours) == 2
    mem = _t(rng.standard_normal((2, 5, E)), "float32")
    ca, cb = layer.gen_cache(mem), ours.gen_cache(mem)
    for _ in range(3):
        x = _t(rng.standard_normal((2, 1, E)), "float32")
        a, ca = layer(x, mem, None, None, ca)
        b, cb = ours(x, mem, None, None, cb)
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=2e-5, atol=2e-5)


# ---- hints and errors -------------------------------------------------------------------------


def test_window_hint_matches_explicit_mask(rng):
    """A window hint with no mask (fused) == the same window as an explicit bool mask (unfused)."""
    ref, ours = _pair("float32", attn_mask_type="causal", window_size=(2, 0))
    s = 6
    i, j = np.arange(s)[:, None], np.arange(s)[None, :]
    keep = (j <= i) & (j >= i - 2)
    q, _, _ = _inputs(rng, 2, s, s)
    _assert_out(ours(q), ref(q, q, q, _t(keep)), "float32", ours)


def test_errors():
    with pytest.raises(ValueError, match="attn_mask_type"):
        tnn.MultiHeadAttention(E, H, attn_mask_type="bogus")
    with pytest.raises(ValueError, match="window_size"):
        tnn.MultiHeadAttention(E, H, window_size=(-2, 0))
    ours = tnn.MultiHeadAttention(E, H, attn_mask_type="no_mask")
    q = paddle.randn([1, 3, E])
    with pytest.raises(ValueError, match="no_mask"):
        ours(q, attn_mask=paddle.ones([3, 3], dtype="bool"))
    ours = tnn.MultiHeadAttention(E, H)
    with pytest.raises(TypeError, match="attn_mask"):
        ours(q, attn_mask=paddle.ones([3, 3], dtype="complex64"))
    with pytest.raises(ValueError, match="attn_mask"):
        ours(q, attn_mask=paddle.ones([1, 1, 1, 3, 3], dtype="bool"))
    with pytest.raises(TypeError, match="cache"):
        ours(q, cache=(q, q))
    ours = tnn.MultiHeadAttention(E, H, attn_mask_type="padding")
    with pytest.raises(ValueError, match="every head"):
        ours(q, attn_mask=paddle.ones([1, H, 3, 3], dtype="bool"))


@pytest.mark.parametrize("q_shape,k_shape", [((2, 3), (2, 0)), ((2, 0), (2, 5)), ((0, 3), (0, 5))])
def test_empty_inputs(q_shape, k_shape):
    """No keys: every row sees nothing, so the output is out_proj's bias; no queries or no batch:
    an empty output of the right shape (Paddle's own layer returns [0, 0, embed_dim] for all
    three)."""
    E, H = 16, 4
    layer = tnn.MultiHeadAttention(E, H)
    with paddle.no_grad():
        layer.out_proj.bias.set_value(paddle.arange(E, dtype="float32"))
    q = paddle.randn(list(q_shape) + [E])
    k = paddle.randn(list(k_shape) + [E])
    out = layer(q, k, k)
    assert out.shape == list(q_shape) + [E]
    want = np.broadcast_to(np.arange(E, dtype="float32"), out.shape)
    np.testing.assert_allclose(out.numpy(), want, atol=1e-6)
