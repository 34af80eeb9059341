"""Mask types and the window policy (SPEC §1, §2).

Every mask in paddle_te is a ``(left, right)`` window plus per-sequence lengths: for a sequence
with ``L_q`` queries and ``L_k`` keys, query ``i`` sees key ``j`` iff
``i + delta - left <= j <= i + delta + right`` (``-1`` = unbounded), with ``delta = 0`` (top-left)
or ``L_k - L_q`` (bottom-right, the ``*_bottom_right`` types). Causal types have ``right = 0``.
Boolean masks follow the canonical convention: ``True`` = masked out.
"""

import numbers
import os
import sys
import warnings

from ._vocab import MASK_TYPES  # the one table of mask types

__all__ = [
    "MASK_TYPES",
    "CAUSAL_MASK_TYPES",
    "PADDING_MASK_TYPES",
    "BOTTOM_RIGHT_MASK_TYPES",
    "check_mask_type",
    "check_set_window_size",
    "check_window_for",
    "is_causal",
    "is_padding",
    "is_bottom_right",
    "with_padding",
    "without_padding",
    "MASK_CHECK_MODES",
    "set_mask_check",
    "get_mask_check",
]

#: Types whose window has ``right = 0``.
CAUSAL_MASK_TYPES = (
    "causal",
    "padding_causal",
    "causal_bottom_right",
    "padding_causal_bottom_right",
)

#: Types that take per-sequence lengths (cu_seqlens, or a padding mask in the layers).
PADDING_MASK_TYPES = ("padding", "padding_causal", "padding_causal_bottom_right")

#: Types aligned to the bottom-right corner (``delta = L_k - L_q``).
BOTTOM_RIGHT_MASK_TYPES = ("causal_bottom_right", "padding_causal_bottom_right")

# padding counterpart <-> plain type
_WITH_PADDING = {
    "no_mask": "padding",
    "padding": "padding",
    "causal": "padding_causal",
    "padding_causal": "padding_causal",
    "causal_bottom_right": "padding_causal_bottom_right",
    "padding_causal_bottom_right": "padding_causal_bottom_right",
    "arbitrary": "arbitrary",
}
_WITHOUT_PADDING = {
    "no_mask": "no_mask",
    "padding": "no_mask",
    "causal": "causal",
    "padding_causal": "causal",
    "causal_bottom_right": "causal_bottom_right",
    "padding_causal_bottom_right": "causal_bottom_right",
    "arbitrary": "arbitrary",
}


def check_mask_type(attn_mask_type, name="attn_mask_type"):
    """Return ``attn_mask_type`` if it is one of :data:`MASK_TYPES`, else raise ``ValueError``."""
    if not isinstance(attn_mask_type, str) or attn_mask_type not in MASK_TYPES:
        raise ValueError(f"{name}={attn_mask_type!r}: must be one of {', '.join(map(repr, MASK_TYPES))}")
    return attn_mask_type


def is_causal(attn_mask_type):
    """True for the four causal types (window ``right == 0``)."""
    return check_mask_type(attn_mask_type) in CAUSAL_MASK_TYPES


def is_padding(attn_mask_type):
    """True for the types that take sequence lengths (``padding*``)."""
    return check_mask_type(attn_mask_type) in PADDING_MASK_TYPES


def is_bottom_right(attn_mask_type):
    """True when the window is aligned to the bottom-right corner (``delta = L_k - L_q``)."""
    return check_mask_type(attn_mask_type) in BOTTOM_RIGHT_MASK_TYPES


def with_padding(attn_mask_type):
    """The ``padding`` counterpart: ``no_mask`` -> ``padding``, ``causal`` -> ``padding_causal``,
    ``causal_bottom_right`` -> ``padding_causal_bottom_right``; padding types and ``arbitrary``
    map to themselves. (thd reads every type this way, SPEC §8.)"""
    return _WITH_PADDING[check_mask_type(attn_mask_type)]


def without_padding(attn_mask_type):
    """The inverse of :func:`with_padding`: ``padding`` -> ``no_mask`` and so on."""
    return _WITHOUT_PADDING[check_mask_type(attn_mask_type)]


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_set_window_size(attn_mask_type, window_size):
    """Validate ``window_size`` for ``attn_mask_type`` and return the ``(left, right)`` to use.

    * causal types: ``None`` or ``(-1, -1)`` -> ``(-1, 0)``; ``(l, r)`` with ``r != 0`` -> a
      ``UserWarning`` and ``(l, 0)``;
    * other types: ``None`` -> ``(-1, -1)``; any ``(l, r)`` with ``l, r >= -1`` is kept;
    * anything else (``l`` or ``r`` < -1, not a pair of ints, unknown mask type) ->
      ``ValueError``.
    """
    return check_window_for(attn_mask_type, window_size)


def _user_stacklevel():
    """The warnings.warn stacklevel of the first frame outside paddle_te: the user's call, whether
    it reached the check directly or through fused_attn or a layer (and Paddle's layer call)."""
    inside = [os.path.dirname(os.path.abspath(__file__)) + os.sep]
    if "paddle" in sys.modules:
        inside.append(os.path.dirname(os.path.abspath(sys.modules["paddle"].__file__)) + os.sep)
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(tuple(inside)):
        frame, level = frame.f_back, level + 1
    return level


def check_window_for(attn_mask_type, window_size, *, type_arg="attn_mask_type",
                     window_arg="window_size"):
    """:func:`check_set_window_size` whose messages name the caller's arguments (e.g.
    TransformerLayer's ``enc_dec_attn_mask_type`` / ``enc_dec_window_size``)."""
    check_mask_type(attn_mask_type, type_arg)
    if window_size is None:
        return (-1, 0) if attn_mask_type in CAUSAL_MASK_TYPES else (-1, -1)
    if (
        not isinstance(window_size, (tuple, list))
        or len(window_size) != 2
        or not all(_is_int(w) for w in window_size)
    ):
        raise ValueError(f"{window_arg}={window_size!r}: must be None or a pair of ints (left, right), each >= -1")
    left, right = int(window_size[0]), int(window_size[1])
    if left < -1 or right < -1:
        raise ValueError(
            f"{window_arg}={window_size!r}: left and right must be >= -1 (-1 = unbounded on that side)"
        )
    if attn_mask_type in CAUSAL_MASK_TYPES:
        if (left, right) == (-1, -1):
            return (-1, 0)
        if right != 0:
            warnings.warn(
                f"{window_arg}={window_size!r} with {type_arg}={attn_mask_type!r}: causal masks "
                f"have right = 0; using {window_arg}=({left}, 0)",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )
        return (left, 0)
    return (left, right)


# ---- when the layers check padding masks (docs/masks.md, "What is checked when") -----------------
#: Values of :func:`set_mask_check`.
MASK_CHECK_MODES = ("no_sync", "always", "never")
_ENV_MASK_CHECK = "PTE_CHECK_MASKS"


def _initial_mask_check():
    mode = os.environ.get(_ENV_MASK_CHECK, "no_sync") or "no_sync"
    if mode not in MASK_CHECK_MODES:
        raise ValueError(
            f"{_ENV_MASK_CHECK}={mode!r}: must be one of {', '.join(map(repr, MASK_CHECK_MODES))}"
        )
    return mode


# Process-wide setting of the Python layers (read on the host, never by a kernel).
_mask_check = [_initial_mask_check()]


def set_mask_check(mode):
    """When the layers (``DotProductAttention``, ``MultiHeadAttention``, ``TransformerLayer``)
    check in dygraph that a padding mask is right padding before turning it into ``cu_seqlens``:

    * ``"no_sync"`` (default): where the check is free -- masks on the CPU. A mask on a GPU is
      not checked, so a training step with padding masks makes no device->host copy;
    * ``"always"``: GPU masks too, at the cost of one device->host copy (a sync) per mask;
    * ``"never"``: not even on the CPU.

    The environment variable ``PTE_CHECK_MASKS`` sets the initial mode. Returns the previous
    mode. ``paddle_te.ops.mask_to_cu_seqlens`` itself always checks in dygraph unless called
    with ``check=False``; static graphs are never checked (values are unknown while a program is
    built)."""
    if not isinstance(mode, str) or mode not in MASK_CHECK_MODES:
        raise ValueError(f"mode={mode!r}: must be one of {', '.join(map(repr, MASK_CHECK_MODES))}")
    previous = _mask_check[0]
    _mask_check[0] = mode
    return previous


def get_mask_check():
    """The current :func:`set_mask_check` mode."""
    return _mask_check[0]


def layer_checks_mask(on_gpu):
    """Whether a layer checks a padding mask that lives on the GPU (``on_gpu``) or the CPU."""
    mode = _mask_check[0]
    return mode == "always" or (mode == "no_sync" and not on_gpu)


# FlashMask column bounds (SPEC §9): conversions and builders (paddle_te/_flashmask.py).
from . import _flashmask  # noqa: E402
from ._flashmask import (  # noqa: E402
    causal_document_mask,
    dense_to_startend_row_indices,
    document_mask,
    prefix_lm_document_mask,
    share_question_mask,
    sliding_window_mask,
    startend_row_indices_to_dense,
)

__all__ += _flashmask.__all__
