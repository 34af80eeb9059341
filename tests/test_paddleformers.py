"""paddle_te as PaddleFormers' attention implementation (paddle_te/integrations/paddleformers.py).

Tiny Llama, Qwen2, Qwen3 and ERNIE 4.5 models (hidden 64, 2 layers, 4 heads, 2 kv heads,
float32) run with ``_attn_implementation="paddle_te"`` and with ``"eager"`` on the same weights;
logits on non-pad tokens and all parameter gradients must agree, on causal, left- and
right-padded, packed-document (FlashMask indices and dense block-diagonal masks) and
sliding-window batches, and in cached generation. PaddleFormers' eager path is the oracle (on the
CPU its ``sdpa`` drops packed masks). The function itself is checked against
``eager_attention_forward`` for scaling, GQA, d_v != d, sinks and every mask plan.
"""

import contextlib
import subprocess
import sys
import types

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")
pytest.importorskip("paddleformers")

import paddle_te  # noqa: E402
from paddle_te.integrations import paddleformers as pte_pf  # noqa: E402
from paddle_te.integrations._mask_plan import additive_parts, plan_for_mask  # noqa: E402

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS = 96, 64, 2, 4, 2
TOL = dict(rtol=2e-4, atol=2e-5)
# Gradients of whole models: float32 sums in a different order (fused kernels vs eager's matmul +
# softmax) differ by a few ulps of the *largest* terms, so an element's error scales with its
# tensor's magnitude, not with the element (which may be a near-cancellation).
GRAD_REL_TO_MAX = 2e-5


def _assert_close_to_scale(got, ref, name):
    scale = float(np.abs(ref).max()) + 1e-12
    err = float(np.abs(got - ref).max())
    assert err <= GRAD_REL_TO_MAX * scale, f"{name}: max |error| {err:.3g} > {GRAD_REL_TO_MAX} x {scale:.3g}"


def _native_qwen():
    """Qwen2/Qwen3's modeling modules import the paddlefleet-backed ``GPTModelProvider`` for
    their fleet ``*ForCausalLM`` classes. Without paddlefleet (not on PyPI) a stand-in lets the
    modules import; the tests build the classes PaddleFormers implements itself
    (``Qwen*ForCausalLMDeprecated``), which never touch the provider."""
    name = "paddleformers.transformers.gpt_provider"
    from paddleformers.utils.import_utils import is_paddlefleet_available

    if not is_paddlefleet_available() and name not in sys.modules:
        stub = types.ModuleType(name)
        stub.GPTModelProvider = type("GPTModelProvider", (), {})
        sys.modules[name] = stub
    from paddleformers.transformers.qwen2.modeling import Qwen2ForCausalLMDeprecated
    from paddleformers.transformers.qwen3.modeling import Qwen3ForCausalLMDeprecated

    return Qwen2ForCausalLMDeprecated, Qwen3ForCausalLMDeprecated


def _model_classes():
    from paddleformers.transformers import (Ernie4_5Config, Ernie4_5ForCausalLM, LlamaConfig,
                                            LlamaForCausalLM, Qwen2Config, Qwen3Config)

    qwen2, qwen3 = _native_qwen()
    return {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, qwen2),
        "qwen3": (Qwen3Config, qwen3),
        "ernie4_5": (Ernie4_5Config, Ernie4_5ForCausalLM),
    }


MODELS = ("llama", "qwen2", "qwen3", "ernie4_5")
_PAIRS = {}


def _pair(name, sliding_window=None):
    """(eager model, paddle_te model) with the same weights; the implementation is set on the
    config before the model is built (ERNIE 4.5 reads it then)."""
    key = (name, sliding_window)
    if key not in _PAIRS:
        pte_pf.register()
        config_cls, model_cls = _model_classes()[name]
        models = []
        for impl in ("eager", "paddle_te"):
            extra = {}
            if sliding_window is not None:  # Qwen: layer 1 of 2 slides (max_window_layers=1)
                extra = dict(use_sliding_window=True, sliding_window=sliding_window, max_window_layers=1)
            config = config_cls(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                                num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                num_key_value_heads=KV_HEADS, max_position_embeddings=128,
                                fuse_rms_norm=False, dtype="float32", **extra)
            config._attn_implementation = impl
            paddle.seed(7)
            models.append(model_cls(config))
        models[1].set_state_dict(models[0].state_dict())
        _PAIRS[key] = tuple(models)
    return _PAIRS[key]


def _logits(model, ids, **kw):
    out = model(input_ids=ids, return_dict=True, use_cache=kw.pop("use_cache", False), **kw)
    return out.logits, out


def _train_step(model, ids, keep, **kw):
    """logits and the gradient of a fixed random projection of the logits on the kept tokens."""
    model.clear_gradients()
    logits, _ = _logits(model, ids, **kw)
    w = paddle.to_tensor(np.random.default_rng(1).standard_normal(logits.shape).astype("float32"))
    weight = w * keep.astype("float32").unsqueeze(-1)
    (logits * weight).sum().backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    return logits.numpy(), grads


@contextlib.contextmanager
def _paths():
    """The set of paddle_te paths the attention calls took: fused, flashmask, decode, masked."""
    seen = set()
    names = {"fused_attn": "fused", "flashmask_attention": "flashmask", "decode_attn": "decode"}
    saved = {n: getattr(paddle_te.ops, n) for n in names}
    saved_unfused = pte_pf._unfused.unfused_attention_bhsd

    def spy(fn, label):
        def wrapped(*args, **kwargs):
            seen.add(label)
            return fn(*args, **kwargs)
        return wrapped

    try:
        for n, label in names.items():
            setattr(paddle_te.ops, n, spy(saved[n], label))
        pte_pf._unfused.unfused_attention_bhsd = spy(saved_unfused, "masked")
        yield seen
    finally:
        for n in names:
            setattr(paddle_te.ops, n, saved[n])
        pte_pf._unfused.unfused_attention_bhsd = saved_unfused


def _compare(name, ids, keep, sliding_window=None, paths=None, **kw):
    eager, ours = _pair(name, sliding_window)
    ref_logits, ref_grads = _train_step(eager, ids, keep, **kw)
    with _paths() as seen:
        got_logits, got_grads = _train_step(ours, ids, keep, **kw)
    if paths is not None:
        assert seen == set(paths)
    k = keep.numpy()
    np.testing.assert_allclose(got_logits[k], ref_logits[k], **TOL)
    assert set(got_grads) == set(ref_grads)
    for n in ref_grads:
        _assert_close_to_scale(got_grads[n], ref_grads[n], n)


def _ids(b, s, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).integers(1, VOCAB, (b, s)), dtype="int64")


def _positions(mask2d):
    """Position ids of a padded batch: count only real tokens (as generation does)."""
    pos = paddle.cumsum(mask2d.astype("int64"), axis=-1) - 1
    return paddle.clip(pos, min=0)


# ------------------------------------------------------------------------------------------------
# whole models: eager vs paddle_te
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_causal(name):
    ids = _ids(2, 12)
    _compare(name, ids, paddle.ones([2, 12], dtype="bool"), paths={"fused"})


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded(name, side):
    b, s = 3, 12
    lengths = [12, 7, 4]
    mask = np.zeros((b, s), dtype=bool)
    for i, n in enumerate(lengths):
        if side == "left":
            mask[i, s - n:] = True
        else:
            mask[i, :n] = True
    mask = paddle.to_tensor(mask)
    # Right padding: key lengths (padding_causal); left padding: FlashMask column bounds.
    _compare(name, _ids(b, s, 1), mask, attention_mask=mask.astype("int64"),
             position_ids=_positions(mask), paths={"right": {"fused"}, "left": {"flashmask"}}[side])


def _document_ids(cu, s):
    pos = np.zeros(s, dtype=np.int64)
    for a, e in zip(cu[:-1], cu[1:]):
        pos[a:e] = np.arange(e - a)
    return pos


@pytest.mark.parametrize("name", MODELS)
def test_packed_documents_startend(name):
    """Packed documents as FlashMask indices (flashmask_attention; eager builds the dense mask)."""
    s = 16
    cus = [[0, 5, 11, 16], [0, 9, 16]]
    se = paddle_te.masks.causal_document_mask(cus)  # int32 [2, 1, 16, 1]
    pos = paddle.to_tensor(np.stack([_document_ids(cu, s) for cu in cus]))
    _compare(name, _ids(2, s, 2), paddle.ones([2, s], dtype="bool"),
             attn_mask_startend_row_indices=se, position_ids=pos, paths={"flashmask"})


def _block_causal_keep(cus, s, window=None):
    """bool [b, 1, s, s], True = keep (PaddleFormers' 4-D masks): causal inside each document,
    and within `window` keys when given."""
    out = np.zeros((len(cus), 1, s, s), dtype=bool)
    for bi, cu in enumerate(cus):
        for a, e in zip(cu[:-1], cu[1:]):
            for i in range(a, e):
                lo = a if window is None else max(a, i - window + 1)
                out[bi, 0, i, lo:i + 1] = True
    return paddle.to_tensor(out)


@pytest.mark.parametrize("name", ["llama", "ernie4_5"])
def test_packed_documents_dense(name):
    """A dense block-diagonal 4-D mask: turned into FlashMask bounds after checking."""
    s = 16
    cus = [[0, 5, 11, 16], [0, 9, 16]]
    keep = _block_causal_keep(cus, s)
    pos = paddle.to_tensor(np.stack([_document_ids(cu, s) for cu in cus]))
    _compare(name, _ids(2, s, 3), paddle.ones([2, s], dtype="bool"), attention_mask=keep,
             position_ids=pos, paths={"flashmask"})


@pytest.mark.parametrize("name", ["qwen2", "qwen3"])
def test_sliding_window_native(name):
    """Qwen's own sliding-window layers: the dense mask they build becomes a (3, 0) window."""
    mask = paddle.to_tensor(np.array([[True] * 14, [False] * 3 + [True] * 11]))
    _compare(name, _ids(2, 14, 4), mask, sliding_window=4, attention_mask=mask.astype("int64"),
             position_ids=_positions(mask), paths={"flashmask"})
    _compare(name, _ids(2, 14, 5), paddle.ones([2, 14], dtype="bool"), sliding_window=4,
             paths={"fused"})  # the sliding layer's dense mask is a (3, 0) window


@pytest.mark.parametrize("name", ["llama", "ernie4_5"])
def test_sliding_window_dense(name):
    """A sliding-window 4-D mask handed to a model that has no window of its own."""
    keep = _block_causal_keep([[0, 14], [0, 14]], 14, window=5)
    _compare(name, _ids(2, 14, 6), paddle.ones([2, 14], dtype="bool"), attention_mask=keep,
             paths={"fused"})


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("padded", [False, True])
def test_cached_generation(name, padded):
    """Prefill, then three greedy decode steps with a KV cache; the next tokens come from eager."""
    eager, ours = _pair(name)
    b, s = 2, 6
    mask = np.ones((b, s), dtype=bool)
    if padded:
        mask[1, :2] = False  # left padding, as in batched generation
    mask = paddle.to_tensor(mask)
    ids = _ids(b, s, 8)
    caches = [None, None]
    with paddle.no_grad(), _paths() as seen:
        for step in range(4):
            keep = mask[:, -ids.shape[1]:]
            pos = _positions(mask)[:, -ids.shape[1]:]
            outs = []
            for n, model in enumerate((eager, ours)):
                logits, out = _logits(model, ids, attention_mask=mask.astype("int64"),
                                      position_ids=pos, past_key_values=caches[n], use_cache=True)
                caches[n] = out.past_key_values
                outs.append(logits.numpy())
            k = keep.numpy()
            np.testing.assert_allclose(outs[1][k], outs[0][k], err_msg=f"step {step}", **TOL)
            ids = paddle.to_tensor(outs[0][:, -1].argmax(-1)[:, None], dtype="int64")
            mask = paddle.concat([mask, paddle.ones([b, 1], dtype="bool")], axis=1)
    # Without padding: prefill causal (fused), then the decode kernel; left padding: FlashMask.
    assert seen == ({"flashmask"} if padded else {"fused", "decode"})


# ------------------------------------------------------------------------------------------------
# the function, against PaddleFormers' eager_attention_forward
# ------------------------------------------------------------------------------------------------
class _Module(paddle.nn.Layer):
    def __init__(self, groups, training=False):
        super().__init__()
        self.num_key_value_groups = groups
        self.training = training


def _qkv(b=2, h=4, h_kv=2, s_q=7, s_k=7, d=16, d_v=None, seed=0):
    rng = np.random.default_rng(seed)
    q = paddle.to_tensor(rng.standard_normal((b, h, s_q, d)).astype("float32"))
    k = paddle.to_tensor(rng.standard_normal((b, h_kv, s_k, d)).astype("float32"))
    v = paddle.to_tensor(rng.standard_normal((b, h_kv, s_k, d_v or d)).astype("float32"))
    for t in (q, k, v):
        t.stop_gradient = False
    return q, k, v


def _eager(q, k, v, mask, scaling, sink=None):
    from paddleformers.nn.attention.eager_attention import eager_attention_forward

    module = _Module(q.shape[1] // k.shape[1])
    return eager_attention_forward(module, q, k, v, attention_mask=mask, scaling=scaling, sink=sink)[0]


def _additive(keep):
    """bool keep [b, 1, s_q, s_k] -> PaddleFormers' float mask (0 / finfo.min)."""
    return paddle.where(keep, paddle.zeros([1]), paddle.full([1], float(np.finfo(np.float32).min)))


def _check_same(q, k, v, mask, scaling=0.3, rows=None, **kw):
    """attention_forward vs eager: outputs (on rows that see a key) and q/k/v gradients."""
    out, weights = pte_pf.attention_forward(_Module(q.shape[1] // k.shape[1]), q, k, v,
                                            attention_mask=mask, scaling=scaling, **kw)
    assert weights is None
    b, h, s_q, d_v = q.shape[0], q.shape[1], q.shape[2], v.shape[-1]
    assert out.shape == [b, s_q, h * d_v]
    ref = _eager(q, k, v, mask, scaling)
    keep = np.ones((b, s_q), dtype=bool) if rows is None else rows
    np.testing.assert_allclose(out.numpy()[keep], ref.numpy()[keep], **TOL)
    w = paddle.to_tensor(np.random.default_rng(3).standard_normal(out.shape).astype("float32"))
    w = w * paddle.to_tensor(keep.astype("float32")).unsqueeze(-1)
    g = paddle.grad([(out * w).sum()], [q, k, v])
    gr = paddle.grad([(ref * w).sum()], [q, k, v])
    for a, e, n in zip(g, gr, "qkv"):
        np.testing.assert_allclose(a.numpy(), e.numpy(), err_msg=f"d{n}", **TOL)


def _causal_keep(b, s_q, s_k, lengths_k=None, left_pad=None, window=None):
    i = np.arange(s_q)[:, None] + (s_k - s_q)
    j = np.arange(s_k)[None, :]
    keep = np.broadcast_to(j <= i, (b, 1, s_q, s_k)).copy()
    if window is not None:
        keep &= (j > i - window)
    for bi in range(b):
        if lengths_k is not None:
            keep[bi, :, :, lengths_k[bi]:] = False
        if left_pad is not None:
            keep[bi, :, :, :left_pad[bi]] = False
    return keep


def _plan(keep, b):
    masked, values = additive_parts(_additive(paddle.to_tensor(keep)), keep.shape[-1])
    return plan_for_mask(masked, b, column_heads=(1, 2, 4), values=values)


CASES = {
    # name: (keep mask, expected plan, expected mask type)
    "causal": (_causal_keep(2, 7, 7), "fused", "causal_bottom_right"),
    "causal_cache": (_causal_keep(2, 3, 9), "fused", "causal_bottom_right"),
    "window_cache": (_causal_keep(2, 3, 9, window=4), "fused", "causal_bottom_right"),
    "right_padded": (_causal_keep(2, 7, 7, lengths_k=[7, 4]), "fused", "padding_causal"),
    "left_padded": (_causal_keep(2, 7, 7, left_pad=[0, 3]), "flashmask", None),
    "left_padded_cache": (_causal_keep(2, 2, 8, left_pad=[0, 3]), "flashmask", None),
    "decode_left_padded": (_causal_keep(2, 1, 8, left_pad=[2, 0]), "flashmask", None),
    "block_diagonal": (_block_causal_keep([[0, 3, 7], [0, 5, 7]], 7).numpy(), "flashmask", None),
    "full": (np.ones((2, 1, 7, 7), dtype=bool), "fused", "no_mask"),
    "band": (np.abs(np.arange(7)[:, None] - np.arange(7)[None, :])[None, None].repeat(2, 0) <= 1,
             "fused", "no_mask"),
    "checkerboard": ((np.add.outer(np.arange(7), np.arange(7)) % 2 == 0)[None, None].repeat(2, 0),
                     "masked", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dense_mask_plans(case):
    keep, kind, mask_type = CASES[case]
    plan = _plan(keep, 2)
    assert plan.kind == kind
    if mask_type is not None:
        assert plan.mask_type == mask_type
    s_q, s_k = keep.shape[2], keep.shape[3]
    q, k, v = _qkv(s_q=s_q, s_k=s_k, seed=len(case))
    _check_same(q, k, v, _additive(paddle.to_tensor(keep)), rows=keep.any(-1)[:, 0])


def test_plan_windows_and_lengths():
    plan = _plan(_causal_keep(2, 3, 9, window=4), 2)
    assert plan.window == (3, 0) and plan.cu_seqlens_q is None
    plan = _plan(_causal_keep(2, 7, 7, lengths_k=[7, 4]), 2)
    assert plan.cu_seqlens_q.numpy().tolist() == [0, 7, 14]
    assert plan.cu_seqlens_kv.numpy().tolist() == [0, 7, 11]
    band = CASES["band"][0]
    assert _plan(band, 2).window == (1, 1)
    one = _plan(_causal_keep(1, 7, 7, lengths_k=[5]), 3)  # a mask of batch 1 broadcasts
    assert one.cu_seqlens_kv.numpy().tolist() == [0, 5, 10, 15]


def test_bias_runs_unfused():
    """A mask with values other than 0 and 'masked out' is a bias: added, not thresholded."""
    q, k, v = _qkv(seed=5)
    keep = paddle.to_tensor(_causal_keep(2, 7, 7))
    bias = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 1, 7, 7)).astype("float32"))
    mask = paddle.where(keep, bias, paddle.full([1], float("-inf")))
    masked, values = additive_parts(mask, 7)
    plan = plan_for_mask(masked, 2, values=values)
    assert plan.kind == "masked" and plan.bias is not None
    _check_same(q, k, v, mask)


def test_no_mask_is_causal_bottom_right_and_decode():
    q, k, v = _qkv(s_q=3, s_k=9, seed=1)
    out = pte_pf.attention_forward(_Module(2), q, k, v, scaling=0.25)[0]
    ref = _eager(q, k, v, _additive(paddle.to_tensor(_causal_keep(2, 3, 9))), 0.25)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), **TOL)
    # s_q = 1 without gradients: the decode kernel.
    q1, k1, v1 = _qkv(s_q=1, s_k=9, seed=2)
    with paddle.no_grad():
        out = pte_pf.attention_forward(_Module(2), q1, k1, v1, scaling=0.25)[0]
    ref = _eager(q1, k1, v1, None, 0.25)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), **TOL)
    # is_causal=False: every key.
    out = pte_pf.attention_forward(_Module(2), q, k, v, scaling=0.25, is_causal=False)[0]
    np.testing.assert_allclose(out.numpy(), _eager(q, k, v, None, 0.25).numpy(), **TOL)


def test_scaling_and_value_head_dim():
    """scaling is honoured (PaddleFormers' sdpa/flashmask wrappers drop it); d_v != d works."""
    q, k, v = _qkv(d=16, d_v=8, seed=4)
    keep = paddle.to_tensor(_causal_keep(2, 7, 7, left_pad=[0, 2]))
    _check_same(q, k, v, _additive(keep), scaling=0.9, rows=keep.numpy().any(-1)[:, 0])
    _check_same(q, k, v, _additive(paddle.to_tensor(_causal_keep(2, 7, 7))), scaling=0.05)


def test_sliding_window_argument():
    q, k, v = _qkv(s_q=6, s_k=6, seed=6)
    out = pte_pf.attention_forward(_Module(2), q, k, v, scaling=0.25, sliding_window=3)[0]
    ref = _eager(q, k, v, _additive(paddle.to_tensor(_causal_keep(2, 6, 6, window=3))), 0.25)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), **TOL)
    se = paddle_te.masks.causal_document_mask([0, 4, 6])
    out = pte_pf.attention_forward(_Module(2), q, k, v, scaling=0.25, sliding_window=2,
                                   attn_mask_startend_row_indices=paddle.expand(se, [2, 1, 6, 1]))[0]
    keep = _block_causal_keep([[0, 4, 6]] * 2, 6, window=2)
    np.testing.assert_allclose(out.numpy(), _eager(q, k, v, _additive(keep), 0.25).numpy(), **TOL)


def test_sink_inference():
    q, k, v = _qkv(seed=7)
    sink = paddle.to_tensor(np.array([0.5, -1.0, 2.0, 0.0], dtype="float32"))
    keep = paddle.to_tensor(_causal_keep(2, 7, 7))
    with paddle.no_grad():
        out = pte_pf.attention_forward(_Module(2), q, k, v, scaling=0.25, sink=sink)[0]
        ref = _eager(q, k, v, _additive(keep), 0.25, sink=sink)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), **TOL)
    with pytest.raises(ValueError, match="sink"):
        pte_pf.attention_forward(_Module(2), q, k, v, scaling=0.25, sink=sink)


def test_dropout_follows_training():
    q, k, v = _qkv(seed=8)
    eval_out = pte_pf.attention_forward(_Module(2, training=False), q, k, v, dropout=0.5)[0]
    plain = pte_pf.attention_forward(_Module(2, training=False), q, k, v)[0]
    np.testing.assert_array_equal(eval_out.numpy(), plain.numpy())
    paddle.seed(3)
    a = pte_pf.attention_forward(_Module(2, training=True), q, k, v, dropout=0.5)[0]
    paddle.seed(3)
    b = pte_pf.attention_forward(_Module(2, training=True), q, k, v, dropout=0.5)[0]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), plain.numpy())


def test_errors_name_the_argument():
    q, k, v = _qkv()
    mask = _additive(paddle.to_tensor(_causal_keep(2, 7, 7)))
    se = paddle_te.masks.causal_document_mask([[0, 7], [0, 7]])
    with pytest.raises(ValueError, match="attn_mask_startend_row_indices"):
        pte_pf.attention_forward(_Module(2), q, k, v, attention_mask=mask,
                                 attn_mask_startend_row_indices=se)
    with pytest.raises(ValueError, match="cu_seq_lens_q"):
        pte_pf.attention_forward(_Module(2), q, k, v, cu_seq_lens_q=paddle.to_tensor([0, 7]))
    with pytest.raises(ValueError, match="attention_mask"):
        pte_pf.attention_forward(_Module(2), q, k, v, attention_mask=mask[:, :, :3])
    with pytest.raises(ValueError, match="sliding_window"):
        pte_pf.attention_forward(_Module(2), q, k, v, sliding_window=0)


# ------------------------------------------------------------------------------------------------
# registration
# ------------------------------------------------------------------------------------------------
def test_register_is_idempotent_and_apply_switches_built_models():
    from paddleformers.nn.attention.interface import ALL_ATTENTION_FUNCTIONS

    assert pte_pf.register() == "paddle_te" and pte_pf.register() == "paddle_te"
    assert ALL_ATTENTION_FUNCTIONS["paddle_te"] is pte_pf.attention_forward
    assert pte_pf.is_registered()
    eager, _ = _pair("ernie4_5")
    config_cls, model_cls = _model_classes()["ernie4_5"]
    built = model_cls(eager.config.__class__.from_dict(eager.config.to_dict()))
    pte_pf.apply(built)
    impls = {getattr(layer, "attn_implementation") for layer in built.sublayers()
             if hasattr(layer, "attn_implementation")}
    assert impls == {"paddle_te"} and built.config._attn_implementation == "paddle_te"


def test_import_paddle_te_does_not_import_paddleformers():
    code = "import sys, paddle_te; assert 'paddleformers' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_example_smoke(tmp_path):
    """examples/paddleformers_flashmask.py: a few steps, both loss curves equal."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "paddleformers_flashmask.py"
    spec = importlib.util.spec_from_file_location("paddleformers_flashmask", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--steps", "3", "--seq-len", "48", "--out", str(tmp_path)])
    assert summary["max_abs_loss_difference"] < 1e-4
    assert (tmp_path / "paddleformers_summary.json").exists()
