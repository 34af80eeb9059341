"""paddle_te: fused attention and masked softmax for PaddlePaddle.

``import paddle_te`` loads the op library and registers the ``pte_*`` custom operators with
Paddle; saved models that contain them need this import before ``paddle.jit.load`` or
``paddle.inference.create_predictor``.

* ``paddle_te.ops``   functional API (fused_attn, mask_to_cu_seqlens, the masked softmax family)
* ``paddle_te.masks`` mask types and the window policy (check_set_window_size)
* ``paddle_te.nn``    layers (DotProductAttention, MultiHeadAttention, TransformerLayer, ...)
* ``paddle_te.integrations`` other model zoos (``integrations.paddleformers.register()``); it
  imports none of them until used
"""

import importlib.util as _importlib_util

from ._version import __version__  # noqa: E402  (the one place the version is written)

from . import _ops_lib  # noqa: E402  (registers the custom ops; must come first)
from . import masks, ops  # noqa: E402
from .masks import check_set_window_size  # noqa: E402
from .ops import (  # noqa: E402
    decode_attn,
    flashmask_attention,
    fused_attn,
    mask_to_cu_seqlens,
    scaled_aligned_causal_masked_softmax,
    scaled_masked_softmax,
    scaled_softmax,
    scaled_upper_triang_masked_softmax,
)

__all__ = [
    "__version__",
    "masks",
    "ops",
    "check_set_window_size",
    "fused_attn",
    "flashmask_attention",
    "decode_attn",
    "mask_to_cu_seqlens",
    "scaled_softmax",
    "scaled_masked_softmax",
    "scaled_upper_triang_masked_softmax",
    "scaled_aligned_causal_masked_softmax",
]

if _importlib_util.find_spec(__name__ + ".nn") is not None:
    from . import nn  # noqa: E402,F401

    __all__.append("nn")

if _importlib_util.find_spec(__name__ + "._check") is not None:
    from ._check import run_check  # noqa: E402,F401

    __all__.append("run_check")

from . import integrations  # noqa: E402,F401  (imports no other framework until it is used)

__all__.append("integrations")
