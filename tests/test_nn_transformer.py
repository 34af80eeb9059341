"""TransformerLayer against a float64 numpy model built on tests/reference.py, the decoder's
cross-attention window (TransformerEngine issue #629), and replace_multihead_attention on
Paddle's own transformer layers."""

import math

import numpy as np
import paddle
import pytest

import paddle_te.nn as tnn
import reference as ref

HID, FFN, HEADS = 32, 48, 4  # head_dim 8: softmax scale 1/sqrt(8)


@pytest.fixture
def float64():
    old = paddle.get_default_dtype()
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype(old)


def _t(x):
    return paddle.to_tensor(x)


# ---- a numpy TransformerLayer ------------------------------------------------------------------

_erf = np.vectorize(math.erf)


def _ln(x, p, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["weight"] + p["bias"]


def _lin(x, p):
    return x @ p["weight"] + p["bias"]  # Paddle's Linear weight is [in, out]


def _attn(x, kv, p, heads, kv_heads, **ref_kw):
    b, s, _ = x.shape
    d = HID // heads
    q = _lin(x, p["q_proj"]).reshape(b, s, heads, d)
    k = _lin(kv, p["k_proj"]).reshape(b, kv.shape[1], kv_heads, d)
    v = _lin(kv, p["v_proj"]).reshape(b, kv.shape[1], kv_heads, d)
    out, _ = ref.attention_fwd(q, k, v, **ref_kw)
    return _lin(out.reshape(b, s, heads * d), p["out_proj"])


def _params(layer):
    """state_dict -> nested dict of numpy arrays."""
    tree = {}
    for name, value in layer.state_dict().items():
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value.numpy()
    return tree


def _np_layer(layer, x, heads, kv_heads, self_kw, enc=None, cross_kw=None):
    p = _params(layer)
    y = _ln(x, p["input_layernorm"])
    x = x + _attn(y, y, p["self_attention"], heads, kv_heads, **self_kw)
    if enc is not None:
        y = _ln(x, p["inter_layernorm"])
        x = x + _attn(y, enc, p["inter_attention"], heads, kv_heads, **cross_kw)
    y = _ln(x, p["mlp_layernorm"])
    h = _lin(y, p["fc1"])
    h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
    return x + _lin(h, p["fc2"])


@pytest.mark.parametrize("mask_type,window", [("causal", None), ("no_mask", (1, 1)),
                                              ("causal", (2, 0))])
@pytest.mark.parametrize("kv_heads", [HEADS, 2])
def test_encoder_vs_reference(rng, float64, mask_type, window, kv_heads):
    layer = tnn.TransformerLayer(HID, FFN, HEADS, num_gqa_groups=kv_heads, layer_type="encoder",
                                 self_attn_mask_type=mask_type, window_size=window,
                                 hidden_dropout=0.0, attention_dropout=0.0)
    x = rng.standard_normal((2, 6, HID))
    got = layer(_t(x)).numpy()
    want = _np_layer(layer, x, HEADS, kv_heads,
                     dict(attn_mask_type=mask_type, window_size=window))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_encoder_padding_mask_vs_reference(rng, float64):
    layer = tnn.TransformerLayer(HID, FFN, HEADS, self_attn_mask_type="padding",
                                 hidden_dropout=0.0, attention_dropout=0.0)
    x = rng.standard_normal((3, 5, HID))
    lens = np.array([5, 3, 1])
    got = layer(_t(x), attention_mask=_t(ref.padding_mask(lens, 5))).numpy()
    cu = ref.cu_seqlens(lens)
    want = _np_layer(layer, x, HEADS, HEADS,
                     dict(attn_mask_type="padding", cu_seqlens_q=cu, cu_seqlens_kv=cu))
    rows = ref.valid_rows("bshd", x.shape, cu)
    np.testing.assert_allclose(got[rows], want[rows], rtol=1e-9, atol=1e-9)


def _decoder_case(rng, window, enc_dec_window=None, enc_dec_type="padding"):
    s_dec, s_enc = 6, 9
    layer = tnn.TransformerLayer(HID, FFN, HEADS, layer_type="decoder", window_size=window,
                                 enc_dec_attn_mask_type=enc_dec_type,
                                 enc_dec_window_size=enc_dec_window, hidden_dropout=0.0,
                                 attention_dropout=0.0)
    x = rng.standard_normal((2, s_dec, HID))
    enc = rng.standard_normal((2, s_enc, HID))
    lq, lk = np.array([s_dec, s_dec]), np.array([s_enc, 6])
    mask = (_t(ref.padding_mask(lq, s_dec)), _t(ref.padding_mask(lk, s_enc)))
    cross_kw = dict(attn_mask_type=enc_dec_type, window_size=enc_dec_window)
    if enc_dec_type.startswith("padding"):
        cross_kw.update(cu_seqlens_q=ref.cu_seqlens(lq), cu_seqlens_kv=ref.cu_seqlens(lk))
    else:
        mask = None
    got = layer(_t(x), encoder_output=_t(enc), enc_dec_attn_mask=mask).numpy()
    want = _np_layer(layer, x, HEADS, HEADS, dict(attn_mask_type="causal", window_size=window),
                     enc, cross_kw)
    return layer, got, want


def test_decoder_cross_attention_does_not_inherit_window(rng, float64):
    """TransformerEngine #629: a decoder's sliding window leaked into its cross-attention.

    With window (1, 0) the self-attention sees 2 keys; the cross-attention must still see every
    (unpadded) encoder position. If the window leaked, cross-attention query i would see only
    encoder keys i-1..i and the output would be far from the reference.
    """
    layer, got, want = _decoder_case(rng, window=(1, 0))
    assert tuple(layer.window_size) == (1, 0)
    assert tuple(layer.self_attention.core_attention.window_size) == (1, 0)
    assert tuple(layer.enc_dec_window_size) == (-1, -1)
    assert tuple(layer.inter_attention.core_attention.window_size) == (-1, -1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # The check is sensitive: the reference with the leaked window is far away.
    _, _, leaked = _decoder_case(np.random.default_rng(0), window=(1, 0), enc_dec_window=(1, 0))
    _, got0, want0 = _decoder_case(np.random.default_rng(0), window=(1, 0))
    assert np.abs(leaked - want0).max() > 1e-2
    np.testing.assert_allclose(got0, want0, rtol=1e-9, atol=1e-9)


def test_decoder_own_enc_dec_window(rng, float64):
    layer, got, want = _decoder_case(rng, window=(2, 0), enc_dec_window=(3, 1),
                                     enc_dec_type="no_mask")
    assert tuple(layer.inter_attention.core_attention.window_size) == (3, 1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_decoder_full_enc_dec_mask(rng, float64):
    """enc_dec_attn_mask as a full [b, 1, s_dec, s_enc] mask == the tuple form."""
    layer = tnn.TransformerLayer(HID, FFN, HEADS, layer_type="decoder", hidden_dropout=0.0,
                                 attention_dropout=0.0)
    x, enc = _t(rng.standard_normal((2, 4, HID))), _t(rng.standard_normal((2, 5, HID)))
    lq, lk = np.array([4, 4]), np.array([5, 2])
    tup = (_t(ref.padding_mask(lq, 4)), _t(ref.padding_mask(lk, 5)))
    full = _t(ref.full_padding_mask(lq, lk, 4, 5))
    np.testing.assert_allclose(layer(x, encoder_output=enc, enc_dec_attn_mask=full).numpy(),
                               layer(x, encoder_output=enc, enc_dec_attn_mask=tup).numpy(),
                               rtol=1e-12, atol=1e-12)


def test_dropout_follows_training(rng):
    layer = tnn.TransformerLayer(HID, FFN, HEADS, hidden_dropout=0.3, attention_dropout=0.3)
    plain = tnn.TransformerLayer(HID, FFN, HEADS, hidden_dropout=0.0, attention_dropout=0.0)
    plain.set_state_dict(layer.state_dict())
    x = _t(rng.standard_normal((2, 5, HID)).astype(np.float32))
    layer.train()
    a, b = layer(x).numpy(), layer(x).numpy()
    assert not np.allclose(a, b)
    layer.eval()
    np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=1e-6, atol=1e-6)


def test_backward_reaches_every_parameter(rng):
    layer = tnn.TransformerLayer(HID, FFN, HEADS, num_gqa_groups=2, layer_type="decoder",
                                 enc_dec_attn_mask_type="no_mask", window_size=(2, 0))
    x = _t(rng.standard_normal((2, 5, HID)).astype(np.float32))
    enc = _t(rng.standard_normal((2, 3, HID)).astype(np.float32))
    x.stop_gradient = False
    layer(x, encoder_output=enc).sum().backward()
    assert x.grad is not None
    for name, p in layer.named_parameters():
        assert p.grad is not None and np.all(np.isfinite(p.grad.numpy())), name


def test_transformer_layer_errors(rng):
    with pytest.raises(ValueError, match="layer_type"):
        tnn.TransformerLayer(HID, FFN, HEADS, layer_type="encdec")
    with pytest.raises(ValueError, match="num_attention_heads"):
        tnn.TransformerLayer(HID, FFN, 5)
    with pytest.raises(ValueError, match="activation"):
        tnn.TransformerLayer(HID, FFN, HEADS, activation="nope")
    with pytest.raises(ValueError, match="num_gqa_groups"):
        tnn.TransformerLayer(HID, FFN, HEADS, num_gqa_groups=3)
    with pytest.raises(ValueError, match="window_size"):
        tnn.TransformerLayer(HID, FFN, HEADS, enc_dec_window_size=(-4, 0), layer_type="decoder")
    dec = tnn.TransformerLayer(HID, FFN, HEADS, layer_type="decoder")
    x = paddle.randn([1, 3, HID])
    with pytest.raises(ValueError, match="encoder_output"):
        dec(x)
    enc_layer = tnn.TransformerLayer(HID, FFN, HEADS)
    with pytest.raises(ValueError, match="decoder"):
        enc_layer(x, encoder_output=x)
    with pytest.raises(ValueError, match="hidden_states"):
        enc_layer(x[0])


# ---- replace_multihead_attention ---------------------------------------------------------------


def _transformer(seed=0):
    paddle.seed(seed)
    return paddle.nn.Transformer(d_model=HID, nhead=2, num_encoder_layers=2,
                                 num_decoder_layers=2, dim_feedforward=FFN, dropout=0.0)


def _batch(rng, b=3, s_src=6, s_tgt=5):
    src = _t(rng.standard_normal((b, s_src, HID)).astype(np.float32))
    tgt = _t(rng.standard_normal((b, s_tgt, HID)).astype(np.float32))
    lens = np.array([6, 4, 2])
    keep = (np.arange(s_src)[None, :] < lens[:, None])[:, None, None, :]  # Paddle: True = keep
    src_mask = _t(keep)
    tgt_mask = paddle.nn.Transformer.generate_square_subsequent_mask(None, s_tgt)
    return src, tgt, src_mask, tgt_mask, _t(keep)


def test_replace_in_transformer_same_eval_outputs(rng):
    model, theirs = _transformer(), _transformer()
    theirs.set_state_dict(model.state_dict())
    params_before = [id(p) for p in model.parameters()]
    model.eval()
    theirs.eval()
    assert tnn.replace_multihead_attention(model) == 6  # 2 encoder + 2 x 2 decoder
    assert [id(p) for p in model.parameters()] == params_before  # the same Parameter objects
    n_ours = sum(isinstance(m, tnn.MultiHeadAttention) for m in model.sublayers())
    assert n_ours == 6
    assert all(not m.training for m in model.sublayers())
    assert tnn.replace_multihead_attention(model) == 0  # idempotent
    src, tgt, src_mask, tgt_mask, mem_mask = _batch(rng)
    a = model(src, tgt, src_mask, tgt_mask, mem_mask).numpy()
    b = theirs(src, tgt, src_mask, tgt_mask, mem_mask).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_replace_in_transformer_same_training_step(rng):
    model, theirs = _transformer(1), _transformer(1)
    theirs.set_state_dict(model.state_dict())
    assert tnn.replace_multihead_attention(model) == 6
    src, tgt, src_mask, tgt_mask, mem_mask = _batch(rng)
    target = _t(rng.standard_normal((3, 5, HID)).astype(np.float32))
    results = []
    for m in (model, theirs):
        opt = paddle.optimizer.SGD(learning_rate=0.1, parameters=m.parameters())
        loss = ((m(src, tgt, src_mask, tgt_mask, mem_mask) - target) ** 2).mean()
        loss.backward()
        grads = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
        opt.step()
        opt.clear_grad()
        params = {n: p.numpy().copy() for n, p in m.named_parameters()}
        results.append((float(loss), grads, params))
    (la, ga, pa), (lb, gb, pb) = results
    assert abs(la - lb) <= 1e-5 * max(1.0, abs(lb))
    assert ga.keys() == gb.keys()
    for n in ga:
        np.testing.assert_allclose(ga[n], gb[n], rtol=1e-4, atol=1e-6, err_msg=n)
        np.testing.assert_allclose(pa[n], pb[n], rtol=1e-5, atol=1e-6, err_msg=n)


def test_replace_in_encoder_and_decoder_layers(rng):
    enc = paddle.nn.TransformerEncoderLayer(HID, 2, FFN, dropout=0.0)
    dec = paddle.nn.TransformerDecoderLayer(HID, 2, FFN, dropout=0.0, normalize_before=True)
    holder = paddle.nn.LayerList([enc, dec, paddle.nn.MultiHeadAttention(HID, 2)])
    ref_holder = paddle.nn.LayerList([
        paddle.nn.TransformerEncoderLayer(HID, 2, FFN, dropout=0.0),
        paddle.nn.TransformerDecoderLayer(HID, 2, FFN, dropout=0.0, normalize_before=True),
        paddle.nn.MultiHeadAttention(HID, 2),
    ])
    ref_holder.set_state_dict(holder.state_dict())
    assert tnn.replace_multihead_attention(holder) == 4
    assert isinstance(holder[2], tnn.MultiHeadAttention)
    assert isinstance(holder[0].self_attn, tnn.MultiHeadAttention)
    assert isinstance(holder[1].cross_attn, tnn.MultiHeadAttention)
    x = _t(rng.standard_normal((2, 4, HID)).astype(np.float32))
    mem = _t(rng.standard_normal((2, 5, HID)).astype(np.float32))
    np.testing.assert_allclose(holder[0](x).numpy(), ref_holder[0](x).numpy(), atol=1e-5)
    np.testing.assert_allclose(holder[1](x, mem).numpy(), ref_holder[1](x, mem).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(holder[2](x).numpy(), ref_holder[2](x).numpy(), atol=1e-5)


def test_replace_edge_cases():
    assert tnn.replace_multihead_attention(paddle.nn.Linear(2, 2)) == 0
    with pytest.raises(TypeError, match="model"):
        tnn.replace_multihead_attention("not a layer")
    ours = paddle.nn.Sequential(tnn.MultiHeadAttention(HID, 2))
    assert tnn.replace_multihead_attention(ours) == 0
    kv = paddle.nn.Sequential(paddle.nn.MultiHeadAttention(HID, 2, kdim=6, vdim=5, dropout=0.1,
                                                           need_weights=True, bias_attr=False))
    assert tnn.replace_multihead_attention(kv) == 1
    new = kv[0]
    assert isinstance(new, tnn.MultiHeadAttention)
    assert (new.kdim, new.vdim, new.dropout, new.need_weights) == (6, 5, 0.1, True)
    assert new.q_proj.bias is None
