"""paddle_te.nn: attention layers on paddle_te's fused kernels (SPEC §4)."""

from ..masks import check_set_window_size
from .attention import DotProductAttention
from .multihead import MultiHeadAttention
from .replace import replace_multihead_attention
from .transformer import TransformerLayer

__all__ = [
    "DotProductAttention",
    "MultiHeadAttention",
    "TransformerLayer",
    "replace_multihead_attention",
    "check_set_window_size",
]
