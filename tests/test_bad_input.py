"""Bad input to every public function of paddle_te.ops and every public layer of paddle_te.nn
(SPEC §7, issue 17): each wrong call raises ValueError or TypeError whose message names the
argument; none crashes, aborts, hangs or surfaces one of Paddle's internal messages.

The calls run in a subprocess (this file is also the worker: `python test_bad_input.py OUT`),
one JSON line per call, so a segfault or abort in an op fails the tests instead of killing
pytest; each parametrized test then checks one call's outcome. A few calls bypass the Python
checks and go straight to the custom ops, to show the C++ side also answers with a ValueError
naming the argument.
"""

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 300


def _cases():
    """[(id, thunk, allowed exception names, substring the message must contain)]."""
    import paddle

    import paddle_te
    from paddle_te import _ops_lib, ops

    paddle.set_device("cpu")

    def t(shape, dtype="float32"):
        return paddle.to_tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype))

    def i32(vals, dtype="int32"):
        return paddle.to_tensor(np.asarray(vals, dtype=dtype))

    def b(arr):
        return paddle.to_tensor(np.asarray(arr, dtype=bool))

    q, k, v = t([2, 5, 4, 8]), t([2, 6, 2, 8]), t([2, 6, 2, 8])
    tq, tk, tv = t([9, 4, 8]), t([11, 2, 8]), t([11, 2, 8])
    cu_q, cu_kv = i32([0, 3, 8]), i32([0, 6, 11])  # thd
    pq, pkv = i32([0, 3, 5]), i32([0, 6, 10])  # bshd lengths (3, 2) and (6, 4)
    x = t([2, 3, 4, 5])
    fa = ops.fused_attn
    V, T = ("ValueError",), ("TypeError",)

    def raw_attn(qq, kk, vv, fmt="bshd", mask_type="no_mask", scale=0.35):
        return _ops_lib.run_op(
            "pte_fused_attn",
            [("q", qq), ("k", kk), ("v", vv), ("cu_seqlens_q", None), ("cu_seqlens_kv", None),
             ("seed_offset", paddle.zeros([2], "int64")), ("startend_row_indices", None)],
            [("qkv_format", fmt), ("mask_type", mask_type), ("backend", "auto"), ("max_seqlen_q", 0),
             ("max_seqlen_kv", 0), ("window_left", -1), ("window_right", -1), ("softmax_scale", repr(scale)),
             ("dropout", 0.0), ("deterministic", False)],
            ["out", "lse"],
        )

    def raw_masked_softmax(xx, mask):
        return _ops_lib.run_op("pte_scaled_masked_softmax", [("x", xx), ("mask", mask)], [("scale", "1.0")], ["y"])

    def static_call(fn):
        paddle.enable_static()
        try:
            with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
                return fn()
        finally:
            paddle.disable_static()

    def static_run(build, feed):
        """Build a program with `build()` (inputs from paddle.static.data) and run it on `feed`:
        errors the ops find only in the values (at Executor.run)."""
        paddle.enable_static()
        try:
            main = paddle.static.Program()
            with paddle.static.program_guard(main, paddle.static.Program()):
                out = build()
            exe = paddle.static.Executor(paddle.CPUPlace())
            return exe.run(main, feed=feed, fetch_list=[out])
        finally:
            paddle.disable_static()

    def static_thd(cu_q):
        def build():
            sq = paddle.static.data("q", [-1, 2, 8])
            cu = paddle.static.data("cu", [3], "int32")
            return ops.fused_attn(sq, sq, sq, qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                                  max_seqlen_q=8, max_seqlen_kv=8)
        return static_run(build, {"q": np.ones([8, 2, 8], "float32"), "cu": np.int32(cu_q)})

    def static_masked_softmax(mask_shape):
        def build():
            return ops.scaled_masked_softmax(paddle.static.data("x", [-1, 3, 4, 5]),
                                             paddle.static.data("m", [-1, 1, -1, -1], "bool"))
        return static_run(build, {"x": np.ones([2, 3, 4, 5], "float32"),
                                  "m": np.zeros(mask_shape, bool)})

    nn = paddle_te.nn
    DPA, MHA, TL = nn.DotProductAttention, nn.MultiHeadAttention, nn.TransformerLayer
    dq, dk = t([2, 5, 4, 8]), t([2, 6, 2, 8])  # DPA(4, 8, num_gqa_groups=2): b=2, s_q=5, s_kv=6
    pad_kv = b(np.zeros([2, 1, 1, 6]))
    e, mem = t([2, 5, 16]), t([2, 7, 16])  # MHA(16, 4) / TransformerLayer(16, 32, 4) inputs

    def dpa(mask_type="no_mask", **kw):
        return DPA(4, 8, num_gqa_groups=2, attn_mask_type=mask_type, **kw)

    def decoder(**kw):
        return TL(16, 32, 4, layer_type="decoder", hidden_dropout=0.0, attention_dropout=0.0, **kw)

    return [
        # ---- the four cases of issue 17 ---------------------------------------------------------
        ("dpa_arbitrary_mask_shape", lambda: dpa("arbitrary")(dq, dk, dk, b(np.zeros([2, 1, 9, 6]))),
         V, "attention_mask has shape [2, 1, 9, 6]"),
        ("dpa_bias_not_broadcastable", lambda: dpa("causal")(dq, dk, dk, core_attention_bias=t([2, 3, 5, 6])),
         V, "core_attention_bias has shape [2, 3, 5, 6]"),
        ("mha_attn_mask_not_broadcastable", lambda: MHA(16, 4)(e, attn_mask=b(np.ones([2, 1, 5, 9]))),
         V, "attn_mask has shape [2, 1, 5, 9]"),
        ("tl_enc_dec_window", lambda: decoder(enc_dec_window_size=(-3, 0)), V, "enc_dec_window_size=(-3, 0)"),
        # ---- padding masks that are not right padding: named as the caller passed them ------
        ("dpa_padding_mask_q_holes", lambda: dpa("padding")(
            dq, dk, dk, (b(np.tile([0, 1, 0, 0, 0], (2, 1)).reshape(2, 1, 1, 5)), pad_kv)),
         V, "attention_mask[0] (mask_q): not a right-padding mask"),
        ("dpa_padding_mask_kv_left", lambda: dpa("padding")(
            dq, dk, dk, (b(np.zeros([2, 1, 1, 5])), b(np.tile([1, 0, 0, 0, 0, 0], (2, 1)).reshape(2, 1, 1, 6)))),
         V, "attention_mask[1] (mask_kv): not a right-padding mask"),
        ("mha_padding_hint_holes", lambda: MHA(16, 4, attn_mask_type="padding")(
            e, attn_mask=b(np.tile([1, 0, 1, 1, 1], (2, 1)).reshape(2, 1, 1, 5))),
         V, "attn_mask: not a right-padding mask"),
        # ---- DotProductAttention: constructor ---------------------------------------------
        ("dpa_heads_zero", lambda: DPA(0, 8), V, "num_attention_heads=0"),
        ("dpa_heads_float", lambda: DPA(4.0, 8), T, "num_attention_heads=4.0"),
        ("dpa_heads_bool", lambda: DPA(True, 8), T, "num_attention_heads=True"),
        ("dpa_kv_channels", lambda: DPA(4, -8), V, "kv_channels=-8"),
        ("dpa_gqa_not_dividing", lambda: DPA(4, 8, num_gqa_groups=3), V, "num_gqa_groups=3"),
        ("dpa_gqa_str", lambda: DPA(4, 8, num_gqa_groups="2"), T, "num_gqa_groups='2'"),
        ("dpa_dropout_str", lambda: DPA(4, 8, attention_dropout="0.1"), T, "attention_dropout='0.1'"),
        ("dpa_dropout_none", lambda: DPA(4, 8, attention_dropout=None), T, "attention_dropout=None"),
        ("dpa_dropout_one", lambda: DPA(4, 8, attention_dropout=1.0), V, "attention_dropout=1.0"),
        ("dpa_mask_type", lambda: DPA(4, 8, attn_mask_type="sliding"), V, "attn_mask_type='sliding'"),
        ("dpa_window", lambda: DPA(4, 8, window_size=(1, -2)), V, "window_size=(1, -2)"),
        ("dpa_attention_type", lambda: DPA(4, 8, attention_type="both"), V, "attention_type='both'"),
        ("dpa_qkv_format", lambda: DPA(4, 8, qkv_format="bhsd"), V, "qkv_format='bhsd'"),
        ("dpa_scale_nan", lambda: DPA(4, 8, softmax_scale=math.nan), V, "softmax_scale=nan"),
        ("dpa_scale_bool", lambda: DPA(4, 8, softmax_scale=True), T, "softmax_scale=True"),
        ("dpa_scale_int_past_float", lambda: DPA(4, 8, softmax_scale=10**400), V, "softmax_scale"),
        ("dpa_dropout_int_past_float", lambda: DPA(4, 8, attention_dropout=10**400), V, "attention_dropout"),
        ("dpa_deterministic", lambda: DPA(4, 8, deterministic="yes"), T, "deterministic='yes'"),
        ("dpa_backend", lambda: DPA(4, 8, backend="fast"), V, "backend='fast'"),
        # ---- DotProductAttention: forward ---------------------------------------------------
        ("dpa_query_not_tensor", lambda: dpa()(np.zeros([2, 5, 4, 8]), dk, dk), T, "query"),
        ("dpa_query_rank", lambda: dpa()(t([2, 5, 32]), dk, dk), V, "query has shape [2, 5, 32]"),
        ("dpa_query_int", lambda: dpa()(t([2, 5, 4, 8], "int32"), dk, dk), T, "query has dtype"),
        ("dpa_query_heads", lambda: dpa()(t([2, 5, 3, 8]), dk, dk), V, "num_attention_heads=4"),
        ("dpa_key_heads", lambda: dpa()(dq, t([2, 6, 4, 8]), dk), V, "num_gqa_groups=2"),
        ("dpa_query_head_dim", lambda: dpa()(t([2, 5, 4, 16]), t([2, 6, 2, 16]), t([2, 6, 2, 16])),
         V, "kv_channels=8"),
        ("dpa_key_head_dim", lambda: dpa()(dq, t([2, 6, 2, 4]), dk), V, "key has shape [2, 6, 2, 4]"),
        ("dpa_value_length", lambda: dpa()(dq, dk, t([2, 7, 2, 8])), V, "value has shape [2, 7, 2, 8]"),
        ("dpa_key_batch", lambda: dpa()(dq, t([3, 6, 2, 8]), t([3, 6, 2, 8])), V, "key has shape [3, 6, 2, 8]"),
        ("dpa_mask_with_no_mask_type", lambda: dpa("causal")(dq, dk, dk, pad_kv), V, "attention_mask"),
        ("dpa_padding_mask_float", lambda: dpa("padding")(dq, dk, dk, t([2, 1, 1, 6])), T, "attention_mask"),
        ("dpa_padding_mask_length", lambda: dpa("padding")(dq, dk, dk, (b(np.zeros([2, 1, 1, 5])),
                                                                        b(np.zeros([2, 1, 1, 7])))),
         V, "attention_mask[1] (mask_kv) has shape [2, 1, 1, 7]"),
        ("dpa_padding_mask_batch", lambda: dpa("padding")(dq, dk, dk, b(np.zeros([3, 1, 5, 6]))),
         V, "attention_mask has shape [3, 1, 5, 6]"),
        ("dpa_padding_self_mask_cross_lengths", lambda: dpa("padding")(dq, dk, dk, b(np.zeros([2, 1, 1, 5]))),
         V, "attention_mask has shape [2, 1, 1, 5]"),
        ("dpa_padding_tuple_of_three", lambda: dpa("padding")(dq, dk, dk, (pad_kv, pad_kv, pad_kv)),
         V, "attention_mask"),
        ("dpa_padding_mask_and_cu_seqlens", lambda: dpa("padding")(dq, dk, dk, pad_kv, cu_seqlens_q=pq,
                                                                   cu_seqlens_kv=pkv), V, "cu_seqlens"),
        ("dpa_arbitrary_mask_not_tensor", lambda: dpa("arbitrary")(dq, dk, dk, np.zeros([5, 6], bool)),
         T, "attention_mask is a ndarray"),
        ("dpa_arbitrary_mask_int", lambda: dpa("arbitrary")(dq, dk, dk, i32(np.zeros([5, 6]))),
         T, "attention_mask has dtype"),
        ("dpa_arbitrary_mask_rank5", lambda: dpa("arbitrary")(dq, dk, dk, b(np.zeros([1, 2, 1, 5, 6]))),
         V, "attention_mask has shape [1, 2, 1, 5, 6]"),
        ("dpa_bias_not_tensor", lambda: dpa()(dq, dk, dk, core_attention_bias=0.5), T, "core_attention_bias"),
        ("dpa_bias_bool", lambda: dpa()(dq, dk, dk, core_attention_bias=b(np.zeros([5, 6]))),
         T, "core_attention_bias has dtype"),
        ("dpa_cu_seqlens_int64", lambda: dpa("padding")(dq, dk, dk, cu_seqlens_q=i32([0, 3, 5], "int64"),
                                                       cu_seqlens_kv=pkv), T, "cu_seqlens_q"),
        ("dpa_max_seqlen_negative", lambda: dpa("padding")(dq, dk, dk, cu_seqlens_q=pq, cu_seqlens_kv=pkv,
                                                          max_seqlen_q=-4), V, "max_seqlen_q"),
        ("dpa_value_dtype", lambda: dpa()(dq, dk, t([2, 6, 2, 8], "float64")), T, "value has dtype"),
        # The bias / arbitrary-mask path reads cu_seqlens itself: same checks as fused_attn.
        ("dpa_bias_cu_seqlens_over_padded", lambda: dpa("padding")(
            dq, dk, dk, cu_seqlens_q=i32([0, 9, 12]), cu_seqlens_kv=i32([0, 6, 12]), core_attention_bias=t([5, 6])),
         V, "cu_seqlens_q"),
        ("dpa_bias_cu_seqlens_length", lambda: dpa("padding")(
            dq, dk, dk, cu_seqlens_q=i32([0, 3]), cu_seqlens_kv=i32([0, 6]), core_attention_bias=t([5, 6])),
         V, "cu_seqlens_q has shape [2]"),
        ("dpa_bias_cu_seqlens_list", lambda: dpa("padding")(
            dq, dk, dk, cu_seqlens_q=[0, 3, 5], cu_seqlens_kv=pkv, core_attention_bias=t([5, 6])), T, "cu_seqlens_q"),
        ("dpa_bias_cu_seqlens_int64", lambda: dpa("padding")(
            dq, dk, dk, cu_seqlens_q=pq, cu_seqlens_kv=i32([0, 6, 10], "int64"), core_attention_bias=t([5, 6])),
         T, "cu_seqlens_kv"),
        ("dpa_bias_max_seqlen_str", lambda: dpa("padding")(
            dq, dk, dk, cu_seqlens_q=pq, cu_seqlens_kv=pkv, max_seqlen_q="5", core_attention_bias=t([5, 6])),
         T, "max_seqlen_q"),
        ("dpa_arbitrary_max_seqlen_negative", lambda: dpa("arbitrary")(dq, dk, dk, b(np.zeros([5, 6])),
                                                                      max_seqlen_kv=-1), V, "max_seqlen_kv"),
        # ---- MultiHeadAttention ----------------------------------------------------------------
        ("mha_embed_dim", lambda: MHA(0, 4), V, "embed_dim=0"),
        ("mha_num_heads_str", lambda: MHA(16, "4"), T, "num_heads='4'"),
        ("mha_not_divisible", lambda: MHA(16, 3), V, "num_heads=3"),
        ("mha_dropout", lambda: MHA(16, 4, dropout=1.5), V, "dropout=1.5"),
        ("mha_kdim", lambda: MHA(16, 4, kdim=-1), V, "kdim=-1"),
        ("mha_need_weights", lambda: MHA(16, 4, need_weights=None), T, "need_weights=None"),
        ("mha_mask_type", lambda: MHA(16, 4, attn_mask_type="full"), V, "attn_mask_type='full'"),
        ("mha_window", lambda: MHA(16, 4, window_size=(0, 1, 2)), V, "window_size=(0, 1, 2)"),
        ("mha_backend", lambda: MHA(16, 4, backend="cuda"), V, "backend='cuda'"),
        ("mha_query_rank", lambda: MHA(16, 4)(t([2, 5, 4, 4])), V, "query has shape [2, 5, 4, 4]"),
        ("mha_query_width", lambda: MHA(16, 4)(t([2, 5, 12])), V, "embed_dim=16"),
        ("mha_key_width", lambda: MHA(16, 4, kdim=8)(e, t([2, 7, 16]), t([2, 7, 16])), V, "kdim=8"),
        ("mha_key_batch", lambda: MHA(16, 4)(e, t([3, 7, 16]), t([3, 7, 16])), V, "key has shape [3, 7, 16]"),
        ("mha_value_length", lambda: MHA(16, 4)(e, mem, t([2, 6, 16])), V, "value has shape [2, 6, 16]"),
        ("mha_query_not_tensor", lambda: MHA(16, 4)([[0.0] * 16]), T, "query"),
        ("mha_attn_mask_not_tensor", lambda: MHA(16, 4)(e, attn_mask=np.ones([5, 5], bool)), T, "attn_mask"),
        ("mha_attn_mask_rank5", lambda: MHA(16, 4)(e, attn_mask=b(np.ones([1, 2, 4, 5, 5]))),
         V, "attn_mask has shape [1, 2, 4, 5, 5]"),
        ("mha_padding_hint_per_head_mask", lambda: MHA(16, 4, attn_mask_type="padding")(
            e, attn_mask=b(np.ones([2, 4, 1, 5]))), V, "attn_mask"),
        ("mha_attn_mask_dtype", lambda: MHA(16, 4)(e, attn_mask=paddle.to_tensor(np.ones([5, 5], np.complex64))),
         T, "attn_mask has dtype"),
        ("mha_cache_type", lambda: MHA(16, 4)(e, cache=(1, 2)), T, "cache"),
        ("mha_query_int", lambda: MHA(16, 4)(i32(np.zeros([2, 5, 16]))), T, "query has dtype"),
        ("mha_value_float64", lambda: MHA(16, 4)(e, mem, t([2, 7, 16], "float64")), T, "value has dtype"),
        ("mha_cache_heads", lambda: MHA(16, 4)(e, cache=MHA.Cache(t([2, 3, 3, 4]), t([2, 3, 3, 4]))),
         V, "cache.k has shape [2, 3, 3, 4]"),
        ("mha_cache_rank3", lambda: MHA(16, 4)(e, cache=MHA.Cache(t([2, 4, 12]), t([2, 4, 12]))),
         V, "cache.k has shape [2, 4, 12]"),
        ("mha_cache_lengths", lambda: MHA(16, 4)(e, cache=MHA.Cache(t([2, 4, 3, 4]), t([2, 4, 2, 4]))),
         V, "cache.v has shape [2, 4, 2, 4]"),
        ("mha_cache_none", lambda: MHA(16, 4)(e, cache=MHA.Cache(None, None)), T, "cache.k"),
        ("mha_cache_int", lambda: MHA(16, 4)(e, cache=MHA.Cache(i32(np.zeros([2, 4, 3, 4])),
                                                                 i32(np.zeros([2, 4, 3, 4])))), T, "cache.k has dtype"),
        ("mha_static_cache_batch", lambda: MHA(16, 4)(e, cache=MHA.StaticCache(t([3, 4, 7, 4]), t([3, 4, 7, 4]))),
         V, "cache.k has shape [3, 4, 7, 4]"),
        ("mha_gen_cache_type", lambda: MHA(16, 4).gen_cache(e, type=dict), T, "type="),
        ("mha_gen_cache_key_none", lambda: MHA(16, 4).gen_cache(None), T, "key"),
        # ---- TransformerLayer ------------------------------------------------------------------
        ("tl_hidden_size", lambda: TL(-16, 32, 4), V, "hidden_size=-16"),
        ("tl_ffn_hidden_size", lambda: TL(16, 0, 4), V, "ffn_hidden_size=0"),
        ("tl_heads_not_dividing", lambda: TL(16, 32, 5), V, "num_attention_heads=5"),
        ("tl_gqa", lambda: TL(16, 32, 4, num_gqa_groups=3), V, "num_gqa_groups=3"),
        ("tl_layer_type", lambda: TL(16, 32, 4, layer_type="encoder_decoder"), V, "layer_type='encoder_decoder'"),
        ("tl_self_mask_type", lambda: TL(16, 32, 4, self_attn_mask_type="sliding"), V,
         "self_attn_mask_type='sliding'"),
        ("tl_window", lambda: TL(16, 32, 4, window_size=(-2, 0)), V, "window_size=(-2, 0)"),
        ("tl_enc_dec_mask_type", lambda: decoder(enc_dec_attn_mask_type="full"), V,
         "enc_dec_attn_mask_type='full'"),
        ("tl_hidden_dropout", lambda: TL(16, 32, 4, hidden_dropout="0.1"), T, "hidden_dropout='0.1'"),
        ("tl_attention_dropout", lambda: TL(16, 32, 4, attention_dropout=-0.5), V, "attention_dropout=-0.5"),
        ("tl_layernorm_epsilon", lambda: TL(16, 32, 4, layernorm_epsilon=0.0), V, "layernorm_epsilon=0.0"),
        ("tl_activation", lambda: TL(16, 32, 4, activation=["gelu"]), V, "activation=['gelu']"),
        ("tl_backend", lambda: TL(16, 32, 4, backend="cudnn9"), V, "backend='cudnn9'"),
        ("tl_hidden_states_width", lambda: TL(16, 32, 4)(t([2, 5, 12])), V, "hidden_states has shape [2, 5, 12]"),
        ("tl_hidden_states_not_tensor", lambda: TL(16, 32, 4)(None), T, "hidden_states"),
        ("tl_hidden_states_int", lambda: TL(16, 32, 4)(i32(np.zeros([2, 5, 16]))), T, "hidden_states has dtype"),
        ("tl_hidden_states_float64", lambda: TL(16, 32, 4)(t([2, 5, 16], "float64")), T, "hidden_states has dtype"),
        ("tl_encoder_output_int", lambda: decoder()(e, encoder_output=i32(np.zeros([2, 7, 16]))), T,
         "encoder_output has dtype"),
        ("tl_encoder_output_width", lambda: decoder()(e, encoder_output=t([2, 7, 8])), V,
         "encoder_output has shape [2, 7, 8]"),
        ("tl_encoder_output_batch", lambda: decoder()(e, encoder_output=t([3, 7, 16])), V,
         "encoder_output has shape [3, 7, 16]"),
        ("tl_decoder_without_encoder_output", lambda: decoder()(e), V, "encoder_output"),
        ("tl_encoder_with_encoder_output", lambda: TL(16, 32, 4)(e, encoder_output=mem), V, "encoder_output"),
        ("tl_enc_dec_mask_shape", lambda: decoder()(e, encoder_output=mem, enc_dec_attn_mask=(
            b(np.zeros([2, 1, 1, 5])), b(np.zeros([2, 1, 1, 9])))), V, "enc_dec_attn_mask[1] (mask_kv)"),
        ("tl_enc_dec_mask_float", lambda: decoder()(e, encoder_output=mem, enc_dec_attn_mask=t([2, 1, 5, 7])),
         T, "enc_dec_attn_mask"),
        ("tl_self_mask_shape", lambda: TL(16, 32, 4, self_attn_mask_type="padding")(
            e, attention_mask=b(np.zeros([2, 1, 1, 4]))), V, "attention_mask has shape [2, 1, 1, 4]"),
        # ---- replace_multihead_attention, mask check mode ----------------------------------
        ("replace_not_layer", lambda: nn.replace_multihead_attention([paddle.nn.MultiHeadAttention(16, 4)]),
         T, "model"),
        ("replace_backend", lambda: nn.replace_multihead_attention(
            paddle.nn.Sequential(paddle.nn.MultiHeadAttention(16, 4)), backend="gpu"), V, "backend='gpu'"),
        ("set_mask_check", lambda: paddle_te.masks.set_mask_check(True), V, "mode=True"),
        ("m2c_check_not_bool", lambda: ops.mask_to_cu_seqlens(pad_kv, check="no"), T, "check='no'"),
        ("fa_deterministic_not_bool", lambda: fa(q, k, v, deterministic=1), T, "deterministic"),
        ("fa_return_lse_not_bool", lambda: fa(q, k, v, return_softmax_lse="yes"), T, "return_softmax_lse"),
        # ---- fused_attn: tensors -------------------------------------------------------------
        ("q_rank", lambda: fa(t([2, 5, 32]), k, v), V, "q"),
        ("k_rank", lambda: fa(q, t([2, 6, 2, 8, 1]), v), V, "k"),
        ("thd_rank", lambda: fa(q, k, v, qkv_format="thd", cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv), V, "q"),
        ("q_not_tensor", lambda: fa(np.zeros([2, 5, 4, 8], np.float32), k, v), T, "q"),
        ("q_int_dtype", lambda: fa(t([2, 5, 4, 8], "int32"), k, v), T, "q"),
        ("k_dtype_mismatch", lambda: fa(q, t([2, 6, 2, 8], "float64"), v), T, "k"),
        ("k_batch", lambda: fa(q, t([3, 6, 2, 8]), t([3, 6, 2, 8])), V, "k"),
        ("v_seqlen", lambda: fa(q, k, t([2, 7, 2, 8])), V, "v"),
        ("v_heads", lambda: fa(q, k, t([2, 6, 1, 8])), V, "v"),
        ("heads_not_divisible", lambda: fa(q, t([2, 6, 3, 8]), t([2, 6, 3, 8])), V, "heads"),
        ("k_head_dim", lambda: fa(q, t([2, 6, 2, 16]), v), V, "k"),
        ("q_head_dim_zero", lambda: fa(t([2, 5, 4, 0]), t([2, 6, 2, 0]), v), V, "head dim"),
        # Zero-size tensors are legal (empty results); these are not, and must say why rather
        # than the op's "required but not given".
        ("v_head_dim_zero", lambda: fa(q, k, t([2, 6, 2, 0])), V, "v has shape [2, 6, 2, 0]"),
        ("kv_heads_zero", lambda: fa(q, t([2, 6, 0, 8]), t([2, 6, 0, 8])), V, "k has shape [2, 6, 0, 8]"),
        ("no_keys_q_head_dim_zero", lambda: fa(t([2, 5, 4, 0]), t([2, 0, 2, 0]), t([2, 0, 2, 0])),
         V, "head dim"),
        ("no_keys_flash_on_cpu", lambda: fa(q, t([2, 0, 2, 8]), t([2, 0, 2, 8]), backend="flash"), V, "backend"),
        # ---- fused_attn: options --------------------------------------------------------------
        ("qkv_format", lambda: fa(q, k, v, qkv_format="bhsd"), V, "qkv_format"),
        ("mask_type_unknown", lambda: fa(q, k, v, attn_mask_type="causal_top_left"), V, "attn_mask_type"),
        ("mask_type_arbitrary", lambda: fa(q, k, v, attn_mask_type="arbitrary"), V, "arbitrary"),
        ("backend_unknown", lambda: fa(q, k, v, backend="triton"), V, "backend"),
        ("backend_flash_on_cpu", lambda: fa(q, k, v, backend="flash"), V, "backend"),
        ("backend_cudnn_on_cpu", lambda: fa(q, k, v, backend="cudnn"), V, "backend"),
        ("backend_unfused_thd", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv,
                                           backend="unfused"), V, "backend"),
        ("window_below_minus_one", lambda: fa(q, k, v, window_size=(-2, 0)), V, "window_size"),
        ("window_not_pair", lambda: fa(q, k, v, window_size=(1,)), V, "window_size"),
        ("window_float", lambda: fa(q, k, v, window_size=(1.5, 2)), V, "window_size"),
        ("scale_zero", lambda: fa(q, k, v, softmax_scale=0.0), V, "softmax_scale"),
        ("scale_negative", lambda: fa(q, k, v, softmax_scale=-1.0), V, "softmax_scale"),
        ("scale_nan", lambda: fa(q, k, v, softmax_scale=math.nan), V, "softmax_scale"),
        ("scale_inf", lambda: fa(q, k, v, softmax_scale=math.inf), V, "softmax_scale"),
        ("scale_str", lambda: fa(q, k, v, softmax_scale="0.1"), T, "softmax_scale"),
        ("scale_int_past_float", lambda: fa(q, k, v, softmax_scale=10**400), V, "softmax_scale"),
        ("dropout_one", lambda: fa(q, k, v, dropout=1.0), V, "dropout"),
        ("dropout_negative", lambda: fa(q, k, v, dropout=-0.1), V, "dropout"),
        ("dropout_str", lambda: fa(q, k, v, dropout="0.1"), T, "dropout"),
        ("dropout_int_past_float", lambda: fa(q, k, v, dropout=10**400), V, "dropout"),
        ("training_not_bool", lambda: fa(q, k, v, training="yes"), T, "training"),
        ("max_seqlen_negative", lambda: fa(q, k, v, max_seqlen_q=-1), V, "max_seqlen_q"),
        ("max_seqlen_float", lambda: fa(q, k, v, max_seqlen_kv=2.5), T, "max_seqlen_kv"),
        ("max_seqlen_over_padded", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq,
                                              cu_seqlens_kv=pkv, max_seqlen_q=6), V, "max_seqlen_q"),
        # ---- fused_attn: sequence lengths --------------------------------------------------
        ("padding_without_cu_seqlens", lambda: fa(q, k, v, attn_mask_type="padding_causal"), V, "cu_seqlens"),
        ("cu_seqlens_with_no_mask", lambda: fa(q, k, v, cu_seqlens_q=pq, cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_with_causal", lambda: fa(q, k, v, attn_mask_type="causal", cu_seqlens_q=pq,
                                              cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_int64", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([0, 3, 5], "int64"),
                                        cu_seqlens_kv=pkv), T, "cu_seqlens_q"),
        ("cu_seqlens_float", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq,
                                        cu_seqlens_kv=i32([0, 6, 10], "float32")), T, "cu_seqlens_kv"),
        ("cu_seqlens_length", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([0, 3, 4, 5]),
                                         cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_no_offsets", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=i32([]),
                                             cu_seqlens_kv=i32([])), V, "cu_seqlens_q has shape [0]"),
        ("cu_seqlens_empty_batch_length", lambda: fa(t([0, 5, 4, 8]), t([0, 6, 2, 8]), t([0, 6, 2, 8]),
                                                     attn_mask_type="padding", cu_seqlens_q=i32([0, 0]),
                                                     cu_seqlens_kv=i32([0, 0])), V, "cu_seqlens_q has shape [2]"),
        ("cu_seqlens_rank2", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([[0, 3, 5]]),
                                        cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_not_from_zero", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([1, 3, 5]),
                                                cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_decreasing", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq,
                                             cu_seqlens_kv=i32([0, 6, 5])), V, "cu_seqlens_kv"),
        ("cu_seqlens_over_padded", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([0, 6, 8]),
                                              cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_missing_kv_cross", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq),
         V, "cu_seqlens_kv"),
        ("thd_without_cu_seqlens", lambda: fa(tq, tk, tv, qkv_format="thd"), V, "cu_seqlens_q"),
        ("thd_cu_seqlens_past_tokens", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=i32([0, 4, 10]),
                                                  cu_seqlens_kv=cu_kv), V, "cu_seqlens_q"),
        ("thd_cu_seqlens_lengths_differ", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=i32([0, 4, 6, 9]),
                                                     cu_seqlens_kv=cu_kv), V, "cu_seqlens_kv"),
        ("thd_over_max_seqlen", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv,
                                           max_seqlen_q=3), V, "cu_seqlens_q"),
        ("padded_over_max_seqlen", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq, cu_seqlens_kv=pkv,
                                              max_seqlen_kv=2), V, "max_seqlen_kv=2"),
        # ---- flashmask_attention ----------------------------------------------------------------
        ("fm_key_batch", lambda: paddle_te.flashmask_attention(q, t([3, 6, 2, 8]), t([3, 6, 2, 8])),
         V, "key has shape [3, 6, 2, 8]"),
        ("fm_value_heads", lambda: paddle_te.flashmask_attention(q, k, t([2, 6, 1, 8])), V, "value has shape [2, 6, 1, 8]"),
        ("fm_key_head_dim", lambda: paddle_te.flashmask_attention(q, t([2, 6, 2, 4]), v), V, "key has shape [2, 6, 2, 4]"),
        ("fm_head_dim_zero", lambda: paddle_te.flashmask_attention(t([2, 5, 4, 0]), t([2, 6, 2, 0]), t([2, 6, 2, 0])),
         V, "query has shape [2, 5, 4, 0]"),
        # ---- decode_attn ----------------------------------------------------------------------
        ("decode_v_cache_head_dim_zero", lambda: ops.decode_attn(t([2, 1, 4, 8]), t([2, 10, 2, 8]), t([2, 10, 2, 0]),
                                                                 i32([3, 5])), V, "v_cache has shape [2, 10, 2, 0]"),
        ("decode_block_table_no_pages", lambda: ops.decode_attn(t([2, 1, 4, 8]), t([6, 4, 2, 8]), t([6, 4, 2, 8]),
                                                                i32([3, 5]), block_table=i32(np.zeros([2, 0]))),
         V, "cache_seqlens"),
        ("decode_scale_int_past_float", lambda: ops.decode_attn(t([2, 1, 4, 8]), t([2, 10, 2, 8]), t([2, 10, 2, 8]),
                                                                i32([3, 5]), softmax_scale=10**400), V, "softmax_scale"),
        # ---- masked softmax -----------------------------------------------------------------
        ("softmax_rank", lambda: ops.scaled_softmax(t([3, 4, 5])), V, "x"),
        ("softmax_int", lambda: ops.scaled_softmax(t([2, 3, 4, 5], "int64")), T, "x"),
        ("softmax_not_tensor", lambda: ops.scaled_softmax([[1.0]]), T, "x"),
        ("softmax_scale_zero", lambda: ops.scaled_softmax(x, scale=0.0), V, "scale"),
        ("softmax_scale_inf", lambda: ops.scaled_upper_triang_masked_softmax(x, scale=math.inf), V, "scale"),
        ("softmax_scale_bool", lambda: ops.scaled_aligned_causal_masked_softmax(x, scale=True), T, "scale"),
        ("softmax_empty_scale_nan", lambda: ops.scaled_softmax(t([2, 3, 4, 0]), scale=math.nan), V, "scale"),
        ("masked_softmax_empty_mask_shape", lambda: ops.scaled_masked_softmax(
            t([2, 3, 4, 0]), b(np.zeros([2, 1, 4, 5]))), V, "mask has shape [2, 1, 4, 5]"),
        ("masked_softmax_mask_float", lambda: ops.scaled_masked_softmax(x, t([2, 1, 4, 5])), T, "mask"),
        ("masked_softmax_mask_shape", lambda: ops.scaled_masked_softmax(x, b(np.zeros([2, 1, 4, 6]))), V, "mask"),
        ("masked_softmax_mask_heads", lambda: ops.scaled_masked_softmax(x, b(np.zeros([2, 3, 4, 5]))), V, "mask"),
        ("masked_softmax_mask_batch", lambda: ops.scaled_masked_softmax(x, b(np.zeros([3, 1, 4, 5]))), V, "mask"),
        ("masked_softmax_mask_rank", lambda: ops.scaled_masked_softmax(x, b(np.zeros([4, 5]))), V, "mask"),
        ("masked_softmax_mask_none", lambda: ops.scaled_masked_softmax(x, None), T, "mask"),
        # ---- mask_to_cu_seqlens -------------------------------------------------------------
        ("m2c_float_mask", lambda: ops.mask_to_cu_seqlens(t([2, 1, 1, 5])), T, "mask"),
        ("m2c_rank", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 5]))), V, "mask"),
        ("m2c_dim1", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 2, 1, 5]))), V, "mask"),
        ("m2c_empty_float_mask", lambda: ops.mask_to_cu_seqlens(t([0, 1, 1, 5])), T, "mask"),
        ("m2c_empty_kv_batch", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 1, 1, 5])), b(np.zeros([0, 1, 1, 4]))),
         V, "mask_kv has shape [0, 1, 1, 4]"),
        ("m2c_kv_batch", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 1, 1, 5])), b(np.zeros([3, 1, 1, 4]))),
         V, "mask_kv"),
        ("m2c_kv_with_full_mask", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 1, 5, 5])), b(np.zeros([2, 1, 1, 5]))),
         V, "mask"),
        ("m2c_left_padding", lambda: ops.mask_to_cu_seqlens(b([[[[1, 1, 0, 0, 0]]], [[[0, 0, 0, 0, 0]]]])),
         V, "arbitrary"),
        ("m2c_hole", lambda: ops.mask_to_cu_seqlens(b([[[[0, 1, 0, 1, 1]]], [[[0, 0, 0, 0, 0]]]])), V, "arbitrary"),
        ("m2c_full_not_outer_or", lambda: ops.mask_to_cu_seqlens(b(np.triu(np.ones([4, 4]), 1).reshape(1, 1, 4, 4))),
         V, "arbitrary"),
        # ---- check_set_window_size -----------------------------------------------------------
        ("window_policy_unknown_type", lambda: paddle_te.masks.check_set_window_size("sliding", None), V,
         "attn_mask_type"),
        ("window_policy_below", lambda: paddle_te.masks.check_set_window_size("causal", (-3, 0)), V, "window_size"),
        ("window_policy_bool", lambda: paddle_te.masks.check_set_window_size("no_mask", (True, 1)), V, "window_size"),
        # ---- FlashMask builders and converters (paddle_te.masks) ------------------------------
        ("fm_dense_causal_str", lambda: paddle_te.masks.startend_row_indices_to_dense(
            i32(np.full([1, 1, 4, 2], 4)), 4, "no"), T, "causal='no'"),
        ("fm_dense_float_bounds", lambda: paddle_te.masks.startend_row_indices_to_dense(t([1, 1, 4, 1]), 4, True),
         T, "startend_row_indices has dtype"),
        ("fm_to_bounds_causal_str", lambda: paddle_te.masks.dense_to_startend_row_indices(
            b(np.zeros([1, 1, 4, 4])), "False"), T, "causal='False'"),
        ("doc_mask_none", lambda: paddle_te.masks.document_mask(None), T, "cu_seqlens"),
        ("doc_mask_float", lambda: paddle_te.masks.document_mask([0.0, 2.5, 5.0]), T, "cu_seqlens"),
        ("doc_mask_seq_len_short", lambda: paddle_te.masks.causal_document_mask([0, 3, 5], seq_len=2), V, "seq_len=2"),
        ("doc_mask_seq_len_str", lambda: paddle_te.masks.document_mask([0, 3, 5], seq_len="8"), V, "seq_len='8'"),
        ("prefix_lm_float", lambda: paddle_te.masks.prefix_lm_document_mask([0, 3, 5], [1.5, 1]), T, "prefix_lengths"),
        ("share_question_none", lambda: paddle_te.masks.share_question_mask(None), V, "segments"),
        ("share_question_empty_doc", lambda: paddle_te.masks.share_question_mask([[]]), V, "segments"),
        ("sliding_window_seq_len_negative", lambda: paddle_te.masks.sliding_window_mask(-1, 2), V, "seq_len=-1"),
        ("sliding_window_batch_zero", lambda: paddle_te.masks.sliding_window_mask(8, 2, batch_size=0), V, "batch_size=0"),
        ("sliding_window_causal_str", lambda: paddle_te.masks.sliding_window_mask(8, 2, causal="no"), T, "causal"),
        # ---- static mode: shape/dtype checks without values -----------------------------
        ("static_q_rank", lambda: static_call(lambda: fa(paddle.static.data("q", [2, 5, 32]),
                                                           paddle.static.data("k", [2, 6, 2, 8]),
                                                           paddle.static.data("v", [2, 6, 2, 8]))), V, "q"),
        ("static_cu_seqlens_dtype", lambda: static_call(lambda: fa(
            paddle.static.data("q", [-1, 5, 4, 8]), paddle.static.data("k", [-1, 6, 2, 8]),
            paddle.static.data("v", [-1, 6, 2, 8]), attn_mask_type="padding",
            cu_seqlens_q=paddle.static.data("cq", [-1], "int64"),
            cu_seqlens_kv=paddle.static.data("ck", [-1], "int32"))), T, "cu_seqlens_q"),
        ("static_mask_dtype", lambda: static_call(lambda: ops.scaled_masked_softmax(
            paddle.static.data("x", [-1, 3, 4, 5]), paddle.static.data("m", [-1, 1, 4, 5], "int32"))), T, "mask"),
        # ---- static mode: values checked by the ops at Executor.run (the message must survive
        # Paddle's executor, which reported every non-Paddle exception as 'std::exception') ----
        ("static_run_cu_seqlens_decreasing", lambda: static_thd([0, 5, 3]), V, "cu_seqlens_q"),
        ("static_run_cu_seqlens_past_tokens", lambda: static_thd([0, 5, 9]), V, "cu_seqlens_q"),
        ("static_run_softmax_mask_shape", lambda: static_masked_softmax([2, 1, 4, 6]), V, "mask"),
        # ---- the C++ ops themselves (Python checks bypassed) ------------------------------
        ("raw_op_q_rank", lambda: raw_attn(t([2, 5, 32]), k, v), V, "q"),
        ("raw_op_heads", lambda: raw_attn(q, t([2, 6, 3, 8]), t([2, 6, 3, 8])), V, "heads"),
        ("raw_op_scale", lambda: raw_attn(q, k, v, scale=-1.0), V, "softmax_scale"),
        ("raw_op_mask_type", lambda: raw_attn(q, k, v, mask_type="sliding"), V, "attn_mask_type"),
        ("raw_op_padding_no_cu", lambda: raw_attn(q, k, v, mask_type="padding"), V, "cu_seqlens_q"),
        ("raw_op_softmax_mask_shape", lambda: raw_masked_softmax(x, b(np.zeros([2, 1, 4, 6]))), V, "mask"),
    ]


def _worker(out_path):
    warnings.simplefilter("ignore")
    cases = _cases()
    with open(out_path, "w") as f:
        for case_id, thunk, allowed, needle in cases:
            # Written before the call: if the process dies, the last line names the culprit.
            f.write(json.dumps({"id": case_id, "started": True}) + "\n")
            f.flush()
            rec = {"id": case_id, "allowed": list(allowed), "needle": needle}
            try:
                thunk()
                rec.update(exc=None, msg="")
            except Exception as e:  # noqa: BLE001 - recorded and judged by the test
                rec.update(exc=type(e).__name__, mro=[c.__name__ for c in type(e).__mro__], msg=str(e))
            f.write(json.dumps(rec) + "\n")
            f.flush()


def _case_ids():
    # The ids without building tensors: parse them from this file's source.
    import re

    src = open(os.path.abspath(__file__)).read()
    body = src[src.index("    return [\n", src.index("def _cases")):src.index("def _worker")]
    return re.findall(r'^\s+\("([a-z0-9_]+)", lambda', body, flags=re.M)


CASE_IDS = _case_ids()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import paddle_te

    out = tmp_path_factory.mktemp("bad_input") / "report.jsonl"
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(paddle_te.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("GLOG_minloglevel", "2")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(out)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    results, last_started = {}, None
    if out.exists():
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("started"):
                last_started = rec["id"]
            else:
                results[rec["id"]] = rec
    return {"rc": proc.returncode, "stderr": proc.stderr[-4000:], "results": results, "last_started": last_started}


def test_worker_did_not_crash(report):
    assert report["rc"] == 0, (
        f"the bad-input worker died with exit code {report['rc']} during case {report['last_started']!r}:\n"
        f"{report['stderr']}"
    )


def test_at_least_thirty_cases():
    assert len(CASE_IDS) >= 30 and len(set(CASE_IDS)) == len(CASE_IDS)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input(report, case_id):
    rec = report["results"].get(case_id)
    if rec is None:
        pytest.fail(f"{case_id}: no result (the worker died during {report['last_started']!r}, "
                    f"exit code {report['rc']})\n{report['stderr']}")
    assert rec["exc"] is not None, f"{case_id}: no exception raised"
    assert any(name in rec["mro"] for name in rec["allowed"]), (
        f"{case_id}: raised {rec['exc']}, expected one of {rec['allowed']}: {rec['msg']}")
    assert rec["needle"] in rec["msg"], f"{case_id}: message does not name {rec['needle']!r}: {rec['msg']}"
    assert "Traceback" not in rec["msg"] and len(rec["msg"]) < 2000, f"{case_id}: message is not clean: {rec['msg']}"


def test_thd_max_seqlen_past_token_count():
    """max_seqlen is an upper bound: in thd one past the token count is the token count (the kernels
    size their grid by it; max_seqlen_q=2**40 kept the CPU kernel busy for hours), in dygraph and
    in a static program whose token count is unknown until it runs (the op bounds it)."""
    code = (
        "import numpy as np, paddle, paddle_te\n"
        "paddle.set_device('cpu')\n"
        "rng = np.random.default_rng(0)\n"
        "q, k, v = (paddle.to_tensor(rng.standard_normal(s).astype('float32')) for s in ([9, 4, 8], [11, 2, 8], [11, 2, 8]))\n"
        "cu_q, cu_kv = paddle.to_tensor(np.int32([0, 3, 9])), paddle.to_tensor(np.int32([0, 5, 11]))\n"
        "kw = dict(qkv_format='thd', cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv, attn_mask_type='causal')\n"
        "ref = paddle_te.ops.fused_attn(q, k, v, **kw).numpy()\n"
        "got = paddle_te.ops.fused_attn(q, k, v, max_seqlen_q=2**40, max_seqlen_kv=2**40, **kw).numpy()\n"
        "assert np.array_equal(got, ref)\n"
        # Static mode: the token count is unknown when the program is built (only the op can bound it).
        "paddle.enable_static()\n"
        "main = paddle.static.Program()\n"
        "with paddle.static.program_guard(main, paddle.static.Program()):\n"
        "    sq, sk, sv = (paddle.static.data(n, [-1, h, 8]) for n, h in (('q', 4), ('k', 2), ('v', 2)))\n"
        "    cq, ck = paddle.static.data('cq', [3], 'int32'), paddle.static.data('ck', [3], 'int32')\n"
        "    out = paddle_te.ops.fused_attn(sq, sk, sv, qkv_format='thd', cu_seqlens_q=cq, cu_seqlens_kv=ck,\n"
        "                                   attn_mask_type='causal', max_seqlen_q=2**40, max_seqlen_kv=2**40)\n"
        "exe = paddle.static.Executor(paddle.CPUPlace())\n"
        "got, = exe.run(main, feed={'q': q.numpy(), 'k': k.numpy(), 'v': v.numpy(), 'cq': cu_q.numpy(),\n"
        "                           'ck': cu_kv.numpy()}, fetch_list=[out])\n"
        "assert np.allclose(got, ref, atol=1e-6)\n"
    )
    env = dict(os.environ)
    import paddle_te

    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(paddle_te.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("fused_attn(thd, max_seqlen_q=2**40) did not finish within 120 s")
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_window_warning_is_userwarning():
    from paddle_te.masks import check_set_window_size

    with pytest.warns(UserWarning, match="window_size"):
        assert check_set_window_size("causal", (4, 2)) == (4, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_set_window_size("causal", None) == (-1, 0)
        assert check_set_window_size("padding_causal_bottom_right", (-1, -1)) == (-1, 0)
        assert check_set_window_size("causal", (3, 0)) == (3, 0)
        assert check_set_window_size("no_mask", None) == (-1, -1)
        assert check_set_window_size("padding", (-1, 0)) == (-1, 0)
        assert check_set_window_size("arbitrary", [2, 5]) == (2, 5)
        # Sides past the int32 range are kept (the ops read them as -1, the same window).
        assert check_set_window_size("no_mask", (2**31, 0)) == (2**31, 0)
        assert check_set_window_size("padding", (3, 2**40)) == (3, 2**40)
        assert check_set_window_size("causal", (2**32, 0)) == (2**32, 0)


if __name__ == "__main__":
    _worker(sys.argv[1])
