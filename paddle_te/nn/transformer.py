"""TransformerLayer: a pre-LayerNorm encoder or decoder layer on DotProductAttention (SPEC §4)."""

import paddle
import paddle.nn.functional as F
from paddle import nn

from ..masks import check_window_for
from . import _core
from ._core import given
from .attention import DotProductAttention

_ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": paddle.tanh,
}


class _Attention(nn.Layer):
    """Projections around a DotProductAttention core: q (and k, v from `kv_input`), core, out."""

    def __init__(self, hidden_size, num_heads, num_kv_heads, mask_type, window_size, dropout,
                 attention_type, backend):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = hidden_size // num_heads
        kv_size = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, kv_size)
        self.v_proj = nn.Linear(hidden_size, kv_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.core_attention = DotProductAttention(
            num_heads,
            self.head_dim,
            num_gqa_groups=num_kv_heads,
            attention_dropout=dropout,
            attn_mask_type=mask_type,
            window_size=window_size,
            attention_type=attention_type,
            qkv_format="bshd",
            backend=backend,
        )

    def forward(self, x, kv_input, attention_mask):
        # x: [b, s_q, hidden]; kv_input: [b, s_kv, hidden]
        q = _core.split_heads(self.q_proj(x), self.num_heads, self.head_dim)
        k = _core.split_heads(self.k_proj(kv_input), self.num_kv_heads, self.head_dim)
        v = _core.split_heads(self.v_proj(kv_input), self.num_kv_heads, self.head_dim)
        out = self.core_attention(q, k, v, attention_mask)  # [b, s_q, h, d]
        return self.out_proj(_core.merge_heads(out))


class TransformerLayer(nn.Layer):
    """One pre-LayerNorm transformer layer, `[b, s, hidden]` in and out.

    encoder: x + SelfAttn(LN(x)), then + MLP(LN(.)). The self-attention uses
    `self_attn_mask_type` and `window_size`.

    decoder: as the encoder, plus cross-attention on `encoder_output` between self-attention and
    the MLP. The cross-attention uses `enc_dec_attn_mask_type` and `enc_dec_window_size` -- never
    `window_size` (a decoder's sliding window is a property of its self-attention; leaking it into
    cross-attention was TransformerEngine issue #629).

    Masks use the canonical convention (True = masked out). `attention_mask` goes to the
    self-attention (padding forms or an arbitrary mask, per its type); `enc_dec_attn_mask` takes
    the padding forms of DotProductAttention: a `(mask_q, mask_kv)` tuple or a full
    `[b, 1, s_dec, s_enc]` mask.
    """

    def __init__(
        self,
        hidden_size,
        ffn_hidden_size,
        num_attention_heads,
        num_gqa_groups=None,
        layer_type="encoder",
        self_attn_mask_type="causal",
        window_size=None,
        enc_dec_attn_mask_type="padding",
        enc_dec_window_size=None,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        layernorm_epsilon=1e-5,
        activation="gelu",
        backend="auto",
        cp_group=None,
        cp_global_ranks=None,
        cp_comm_type="p2p",
        cp_stream=None,
    ):
        super().__init__()
        _core.check_choice(layer_type, "layer_type", ("encoder", "decoder"))
        hidden_size = _core.check_positive_int(hidden_size, "hidden_size")
        ffn_hidden_size = _core.check_positive_int(ffn_hidden_size, "ffn_hidden_size")
        num_attention_heads = _core.check_positive_int(num_attention_heads, "num_attention_heads")
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by "
                f"num_attention_heads={num_attention_heads}"
            )
        _core.check_choice(activation, "activation", tuple(sorted(_ACTIVATIONS)))
        _core.check_probability(hidden_dropout, "hidden_dropout")
        _core.check_probability(attention_dropout, "attention_dropout")
        _core.check_positive_float(layernorm_epsilon, "layernorm_epsilon")
        _core.check_backend(backend)
        # Each window is checked under its own names (the cross-attention's are enc_dec_*).
        window_size = check_window_for(self_attn_mask_type, window_size,
                                       type_arg="self_attn_mask_type", window_arg="window_size")
        if layer_type == "decoder":
            enc_dec_window_size = check_window_for(
                enc_dec_attn_mask_type, enc_dec_window_size, type_arg="enc_dec_attn_mask_type",
                window_arg="enc_dec_window_size")
        num_kv = num_attention_heads if num_gqa_groups is None else num_gqa_groups
        num_kv = _core.check_positive_int(num_kv, "num_gqa_groups")
        if num_attention_heads % num_kv != 0:
            raise ValueError(
                f"num_gqa_groups={num_gqa_groups!r}: must be a positive int that divides "
                f"num_attention_heads={num_attention_heads}"
            )
        self.layer_type = layer_type
        self.hidden_size = hidden_size
        self.self_attn_mask_type = self_attn_mask_type
        self.window_size = window_size
        self.activation = activation

        self.input_layernorm = nn.LayerNorm(hidden_size, epsilon=layernorm_epsilon)
        self.self_attention = _Attention(
            hidden_size, num_attention_heads, num_kv, self_attn_mask_type, self.window_size,
            attention_dropout, "self", backend,
        )
        if layer_type == "decoder":
            self.enc_dec_attn_mask_type = enc_dec_attn_mask_type
            # Its own window, normalised for its own type: the self-attention window is not used.
            self.enc_dec_window_size = enc_dec_window_size
            self.inter_layernorm = nn.LayerNorm(hidden_size, epsilon=layernorm_epsilon)
            self.inter_attention = _Attention(
                hidden_size, num_attention_heads, num_kv, enc_dec_attn_mask_type,
                self.enc_dec_window_size, attention_dropout, "cross", backend,
            )
            self.inter_attention.core_attention._mask_name = "enc_dec_attn_mask"
        self.mlp_layernorm = nn.LayerNorm(hidden_size, epsilon=layernorm_epsilon)
        self.fc1 = nn.Linear(hidden_size, ffn_hidden_size)
        self.fc2 = nn.Linear(ffn_hidden_size, hidden_size)
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.set_context_parallel_group(cp_group, cp_global_ranks, cp_stream, cp_comm_type)

    @paddle.jit.not_to_static
    def _check_inputs(self, hidden_states, encoder_output):
        for name, t in (("hidden_states", hidden_states), ("encoder_output", encoder_output)):
            if name == "encoder_output" and not given(t):
                continue
            _core.check_tensor(t, name)
            if t.ndim != 3 or _core.static_dim(t, 2) not in (None, self.hidden_size):
                raise ValueError(
                    f"{name} has shape {list(t.shape)}: must be [b, s, hidden_size="
                    f"{self.hidden_size}]"
                )
            _core.check_input_dtype(t, name, self.fc1.weight.dtype)
        if given(encoder_output):
            b, b_enc = _core.static_dim(hidden_states, 0), _core.static_dim(encoder_output, 0)
            if b is not None and b_enc is not None and b != b_enc:
                raise ValueError(
                    f"encoder_output has shape {list(encoder_output.shape)}: batch {b_enc} must "
                    f"equal hidden_states' {b}"
                )

    def set_context_parallel_group(self, cp_group, cp_global_ranks=None, cp_stream=None,
                                   cp_comm_type="p2p"):
        """Context parallelism for the self-attention (SPEC §11): hidden_states is then this
        rank's shard of the sequence (paddle_te.distributed.get_batch_on_this_cp_rank) and the
        output is its shard. The layer norms and the MLP act per token, so only the attention
        core communicates. Cross-attention keeps the whole encoder output on every rank (its keys
        are not part of the sharded sequence)."""
        self.self_attention.core_attention.set_context_parallel_group(
            cp_group, cp_global_ranks, cp_stream, cp_comm_type)

    def forward(self, hidden_states, attention_mask=None, encoder_output=None,
                enc_dec_attn_mask=None):
        """hidden_states [b, s, hidden]; encoder_output [b, s_enc, hidden] (decoder only)."""
        self._check_inputs(hidden_states, encoder_output)
        x = hidden_states
        y = self.input_layernorm(x)
        x = x + self.hidden_dropout(self.self_attention(y, y, attention_mask))
        if self.layer_type == "decoder":
            if not given(encoder_output):
                raise ValueError("encoder_output is None: a decoder layer needs it")
            y = self.inter_layernorm(x)
            x = x + self.hidden_dropout(
                self.inter_attention(y, encoder_output, enc_dec_attn_mask)
            )
        elif given(encoder_output) or given(enc_dec_attn_mask):
            raise ValueError(
                "encoder_output/enc_dec_attn_mask given to an encoder layer: use "
                "layer_type='decoder'"
            )
        y = self.mlp_layernorm(x)
        y = self.fc2(_ACTIVATIONS[self.activation](self.fc1(y)))
        return x + self.hidden_dropout(y)
