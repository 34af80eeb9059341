"""The MultiHeadAttention drop-in's incremental path (SPEC §10): `gen_cache(..., max_length=N)`
preallocates the cache and every step appends in place through decode_attn; Paddle's `Cache` /
`StaticCache` single-token steps run decode_attn too. Outputs equal paddle.nn.MultiHeadAttention
(same state_dict) on the same inputs.
"""

import numpy as np
import paddle
import pytest

import paddle_te
import paddle_te.nn as tnn
from paddle_te.nn import _kv_cache

TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-10, atol=1e-10)}
E, H = 32, 4


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    old = paddle.get_default_dtype()
    paddle.set_default_dtype(request.param)
    yield request.param
    paddle.set_default_dtype(old)


def _pair(**kw):
    hints = {k: kw.pop(k) for k in ("attn_mask_type", "window_size", "backend") if k in kw}
    ref = paddle.nn.MultiHeadAttention(E, H, **kw)
    ours = tnn.MultiHeadAttention(E, H, **kw, **hints)
    ours.set_state_dict(ref.state_dict())
    return ref, ours


def _t(x, dtype):
    return paddle.to_tensor(np.asarray(x, dtype=dtype))


@pytest.fixture
def decode_calls(monkeypatch):
    """Counts calls of paddle_te.ops.decode_attn made by the layer."""
    calls = []
    real = paddle_te.ops.decode_attn

    def counting(*a, **kw):
        calls.append(kw.get("k_new") is not None)
        return real(*a, **kw)

    monkeypatch.setattr(_kv_cache.ops, "decode_attn", counting)
    return calls


@pytest.mark.parametrize("hint", [None, "causal"])
def test_preallocated_cache_matches_paddle(rng, dtype, hint, decode_calls):
    """Prefill 3 tokens with a causal mask, then 4 single-token steps, on a cache of 10."""
    b, pre, steps, max_len = 2, 3, 4, 10
    ref, ours = _pair(attn_mask_type=hint)
    x = _t(rng.standard_normal((b, pre + steps, E)), dtype)
    causal = paddle.to_tensor(np.tril(np.ones((pre, pre), dtype=bool)))
    rc = ref.gen_cache(x)
    oc = ours.gen_cache(x, max_length=max_len)
    assert isinstance(oc, ours.InplaceCache)
    assert list(oc.k_cache.shape) == [b, max_len, H, E // H]
    buf_k, buf_v = oc.k_cache, oc.v_cache
    for xt, mask in [(x[:, :pre], causal)] + [(x[:, t:t + 1], None) for t in range(pre, pre + steps)]:
        r, rc = ref(xt, xt, xt, mask, rc)
        o, oc = ours(xt, xt, xt, mask, oc)
        np.testing.assert_allclose(o.numpy(), r.numpy(), **TOL[dtype])
        # Same buffers every step (in place), the filled part equal to Paddle's concatenation.
        assert oc.k_cache is buf_k and oc.v_cache is buf_v
        np.testing.assert_array_equal(oc.k.numpy(), rc.k.numpy())
        np.testing.assert_array_equal(oc.v.numpy(), rc.v.numpy())
    np.testing.assert_array_equal(oc.seqlens.numpy(), [pre + steps] * b)
    assert np.all(buf_k.numpy()[:, pre + steps:] == 0)
    # Every step appended through decode_attn; the single-token steps took the direct path.
    assert decode_calls.count(True) == 1 + steps


def test_preallocated_cache_chunked_causal_steps(rng, dtype):
    """With the causal hint, multi-token steps (chunked prefill) decode bottom-right causal."""
    b, max_len = 2, 12
    ref, ours = _pair(attn_mask_type="causal")
    x = _t(rng.standard_normal((b, 7, E)), dtype)
    rc, oc = ref.gen_cache(x), ours.gen_cache(x, max_length=max_len)
    start = 0
    for n in (3, 1, 3):
        xt = x[:, start:start + n]
        keep = np.tril(np.ones((n, start + n), dtype=bool), k=start)  # bottom-right causal
        r, rc = ref(xt, xt, xt, paddle.to_tensor(keep), rc)
        o, oc = ours(xt, xt, xt, None, oc)  # the hint stands in for the mask
        np.testing.assert_allclose(o.numpy(), r.numpy(), **TOL[dtype])
        start += n


def test_preallocated_cache_with_mask(rng, dtype):
    """A key-padding mask over the cached positions: the general path over the buffer."""
    b, max_len = 2, 9
    ref, ours = _pair()
    x = _t(rng.standard_normal((b, 5, E)), dtype)
    k0 = _t(rng.standard_normal((b, H, 3, E // H)), dtype)
    v0 = _t(rng.standard_normal((b, H, 3, E // H)), dtype)
    rc = ref.gen_cache(k0, v0)
    oc = ours.gen_cache(k0, v0, max_length=max_len)
    np.testing.assert_array_equal(oc.k.numpy(), k0.numpy())
    keep = np.ones((b, 1, 2, 5), dtype=bool)
    keep[0, :, :, 1] = False
    keep[1, :, :, 4] = False
    xt = x[:, :2]
    r, rc = ref(xt, xt, xt, paddle.to_tensor(keep), rc)
    o, oc = ours(xt, xt, xt, paddle.to_tensor(keep), oc)
    np.testing.assert_allclose(o.numpy(), r.numpy(), **TOL[dtype])
    np.testing.assert_array_equal(oc.k.numpy(), rc.k.numpy())
    # A float (additive) mask, one more token.
    bias = rng.standard_normal((b, 1, 1, 6))
    xt = x[:, 2:3]
    r, rc = ref(xt, xt, xt, _t(bias, dtype), rc)
    o, oc = ours(xt, xt, xt, _t(bias, dtype), oc)
    np.testing.assert_allclose(o.numpy(), r.numpy(), **TOL[dtype])


def test_paddle_cache_steps_run_decode_attn(rng, dtype, decode_calls):
    """Paddle's Cache (concatenating) and StaticCache: single-token steps run decode_attn."""
    b = 2
    ref, ours = _pair()
    x = _t(rng.standard_normal((b, 4, E)), dtype)
    rc, oc = ref.gen_cache(x), ours.gen_cache(x)
    for t in range(4):
        xt = x[:, t:t + 1]
        r, rc = ref(xt, xt, xt, None, rc)
        o, oc = ours(xt, xt, xt, None, oc)
        np.testing.assert_allclose(o.numpy(), r.numpy(), **TOL[dtype])
    assert decode_calls == [False] * 4
    mem = _t(rng.standard_normal((b, 6, E)), dtype)
    rs = ref.gen_cache(mem, mem, type=ref.StaticCache)
    os_ = ours.gen_cache(mem, mem, type=ours.StaticCache)
    r, _ = ref(x[:, :1], mem, mem, None, rs)
    o, _ = ours(x[:, :1], mem, mem, None, os_)
    np.testing.assert_allclose(o.numpy(), r.numpy(), **TOL[dtype])
    assert len(decode_calls) == 5


def test_decoder_layer_with_preallocated_cache(rng):
    """paddle.nn.TransformerDecoderLayer drives an InplaceCache of a replaced layer."""
    paddle.set_default_dtype("float32")
    layer = paddle.nn.TransformerDecoderLayer(E, H, 64, dropout=0.0, normalize_before=True)
    ref = paddle.nn.TransformerDecoderLayer(E, H, 64, dropout=0.0, normalize_before=True)
    ref.set_state_dict(layer.state_dict())
    assert tnn.replace_multihead_attention(layer) == 2
    layer.eval()
    ref.eval()
    b = 2
    mem = _t(rng.standard_normal((b, 5, E)), "float32")
    tgt = _t(rng.standard_normal((b, 4, E)), "float32")
    rc = ref.gen_cache(mem)
    incr = layer.self_attn.gen_cache(tgt, max_length=8)
    static = layer.cross_attn.gen_cache(mem, mem, type=layer.cross_attn.StaticCache)
    oc = (incr, static)
    for t in range(4):
        r, rc = ref(tgt[:, t:t + 1], mem, None, None, rc)
        o, oc = layer(tgt[:, t:t + 1], mem, None, None, oc)
        np.testing.assert_allclose(o.numpy(), r.numpy(), rtol=2e-5, atol=2e-5)


def test_preallocated_cache_errors(rng):
    paddle.set_default_dtype("float32")
    _, ours = _pair()
    x = _t(rng.standard_normal((2, 3, E)), "float32")
    with pytest.raises(ValueError, match="max_length=0"):
        ours.gen_cache(x, max_length=0)
    with pytest.raises(ValueError, match="StaticCache"):
        ours.gen_cache(x, x, type=ours.StaticCache, max_length=4)
    oc = ours.gen_cache(x, max_length=2)
    with pytest.raises(ValueError, match=r"holds 2 positions per sequence: cannot append s_q=3"):
        ours(x, x, x, None, oc)
    _, oc = ours(x[:, :2], x[:, :2], x[:, :2], None, oc)
    with pytest.raises(ValueError, match=r"cache_seqlens\[0\]=2 \+ s_q=1: cache overflow"):
        ours(x[:, :1], x[:, :1], x[:, :1], None, oc)
    _, weights = _pair(need_weights=True)
    with pytest.raises(ValueError, match="need_weights"):
        weights(x[:, :1], x[:, :1], x[:, :1], None, weights.gen_cache(x, max_length=4))


@pytest.mark.parametrize("kind", ["Cache", "InplaceCache", "StaticCache"])
def test_training_through_a_cache(rng, kind, decode_calls):
    """Training mode with inputs that want gradients: the steps run as Paddle's layer does, so
    every parameter and the input get Paddle's gradients (decode_attn has none); in eval mode the
    same steps decode."""
    b = 2
    ref, ours = _pair()
    x_np = rng.standard_normal((b, 4, E)).astype("float32")
    grads = {}
    for name, m in (("paddle", ref), ("ours", ours)):
        x = paddle.to_tensor(x_np, stop_gradient=False)
        if kind == "StaticCache":
            c = m.gen_cache(x, x, type=m.StaticCache)
        elif kind == "InplaceCache" and m is ours:
            c = m.gen_cache(x, max_length=6)
        else:
            c = m.gen_cache(x)
        loss = 0.0
        for t in range(3):
            o, c = m(x[:, t:t + 1], x[:, t:t + 1], x[:, t:t + 1], None, c)
            loss = loss + (o * o).sum()
        loss.backward()
        grads[name] = [getattr(m, p).weight.grad.numpy() for p in ("q_proj", "k_proj", "v_proj")]
        grads[name].append(x.grad.numpy())
        m.clear_gradients()
    for got, want in zip(grads["ours"], grads["paddle"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not any(decode_calls)  # no decoding step (the in-place append included)
    ours.eval()
    x = paddle.to_tensor(x_np, stop_gradient=False)
    c = ours.gen_cache(x, max_length=6) if kind == "InplaceCache" else (
        ours.gen_cache(x, x, type=ours.StaticCache) if kind == "StaticCache" else ours.gen_cache(x))
    ours(x[:, :1], x[:, :1], x[:, :1], None, c)
    assert len(decode_calls) == 1


def test_dropout_through_a_cache(rng):
    """Training mode with dropout: cached steps draw it as Paddle's layer does (fresh per call);
    eval mode turns it off and decodes."""
    b = 2
    ours = tnn.MultiHeadAttention(E, H, dropout=0.5)
    x = paddle.to_tensor(rng.standard_normal((b, 3, E)).astype("float32"))
    for cache in (ours.gen_cache(x), ours.gen_cache(x, max_length=4)):
        runs = [ours(x[:, :1], x[:, :1], x[:, :1], None, cache)[0].numpy() for _ in range(2)]
        assert not np.allclose(runs[0], runs[1])
    ours.eval()
    for cache in (ours.gen_cache(x), ours.gen_cache(x, max_length=4)):
        runs = [ours(x[:, :1], x[:, :1], x[:, :1], None, cache)[0].numpy() for _ in range(2)]
        np.testing.assert_array_equal(runs[0], runs[1])
