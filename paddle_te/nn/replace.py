"""replace_multihead_attention: swap Paddle's MultiHeadAttention for paddle_te's drop-in."""

import paddle

from .multihead import MultiHeadAttention


def _swap(mha, backend):
    """A paddle_te MultiHeadAttention that shares `mha`'s projection sublayers (and so its
    Parameter objects: optimizers and other references stay valid)."""
    new = MultiHeadAttention(
        mha.embed_dim,
        mha.num_heads,
        dropout=mha.dropout,
        kdim=mha.kdim,
        vdim=mha.vdim,
        need_weights=mha.need_weights,
        backend=backend,
    )
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        setattr(new, name, getattr(mha, name))
    if not mha.training:
        new.eval()
    return new


def replace_multihead_attention(model, *, backend="auto"):
    """Replace every `paddle.nn.MultiHeadAttention` inside `model` (including those of
    `paddle.nn.Transformer`, `TransformerEncoderLayer` and `TransformerDecoderLayer`) by
    `paddle_te.nn.MultiHeadAttention`, in place, keeping the weights.

    Returns the number of layers replaced. `model` itself cannot be replaced in place: if it is a
    `paddle.nn.MultiHeadAttention`, wrap it in a container first.
    """
    if not isinstance(model, paddle.nn.Layer):
        raise TypeError(f"model is a {type(model).__name__}: must be a paddle.nn.Layer")
    count = 0
    for name, child in list(model._sub_layers.items()):
        if child is None:
            continue
        if isinstance(child, paddle.nn.MultiHeadAttention) and not isinstance(
            child, MultiHeadAttention
        ):
            setattr(model, name, _swap(child, backend))
            count += 1
        else:
            count += replace_multihead_attention(child, backend=backend)
    return count
