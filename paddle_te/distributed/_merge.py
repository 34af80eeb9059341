"""Python face of the lse merge op (pte_attn_merge; paddle_te/merge.h)."""

from .. import _ops_lib

__all__ = ["attn_merge"]

_FORMATS = ("bshd", "sbhd", "thd")


def attn_merge(out_a, lse_a, out_b, lse_b, qkv_format="bshd"):
    """Merge two partial attention results over disjoint key sets through their lse.

    ``out_*`` ``[b, s, h, d]`` (bshd), ``[s, b, h, d]`` (sbhd) or ``[t, h, d]`` (thd); ``lse_*``
    float32 ``[b, h, s]`` (``[h, t]``). Returns ``(out, lse)`` over both key sets, out in
    out_a's dtype (out_b may have another), computed in float32. A part with lse ``-inf``
    contributes nothing; a row where both are ``-inf`` gives 0 and ``-inf``. No gradient (the
    context-parallel backward recomputes from the final lse instead).
    """
    if qkv_format not in _FORMATS:
        raise ValueError(f"qkv_format={qkv_format!r}: must be one of {', '.join(map(repr, _FORMATS))}")
    out, lse = _ops_lib.run_op(
        "pte_attn_merge",
        [("out_a", out_a), ("lse_a", lse_a), ("out_b", out_b), ("lse_b", lse_b)],
        [("qkv_format", qkv_format)],
        ["out", "lse"],
    )
    return out, lse
