"""paddle_te inside other frameworks' model zoos.

* ``paddle_te.integrations.paddleformers``: the ``"paddle_te"`` attention implementation of
  PaddleFormers models (``register()``, then ``config._attn_implementation = "paddle_te"``).

Importing this package imports none of those frameworks: each integration imports its framework
when it is first used.
"""

from . import paddleformers  # noqa: F401  (imports paddleformers only inside register())

__all__ = ["paddleformers"]
