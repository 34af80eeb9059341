"""Dense attention masks -> the cheapest paddle_te path that applies them exactly.

Frameworks that were written for an unfused attention hand over one dense mask per batch,
``[b, 1, s_q, s_k]``, that *adds* to the scores (0 = keep, a huge negative number = masked out).
Most such masks are one of a few shapes: key padding, causal with a KV cache, sliding windows,
documents packed back to back, left padding in batched generation. Running them as a dense mask
costs a full ``[b, h, s_q, s_k]`` score tensor; this module finds, for a given mask, a form the
fused kernels take and checks that it is the same mask, element for element:

1. ``fused``: sequence lengths (``cu_seqlens``, right padding) plus a ``(left, right)`` window
   with top-left or bottom-right alignment -- the rule of SPEC §2 -- run by ``fused_attn``;
2. ``flashmask``: column bounds (FlashMask, SPEC §9): the visible rows of every key column are one
   interval, ``[UTE, LTS)`` (``causal=False``, C = 2), run by ``flashmask_attention``;
3. ``masked``: anything else (or a mask whose values are not just "keep" and "masked out": a bias),
   run by the unfused path with the boolean mask and the bias.

Candidates are never assumed: each is derived from the mask by a few reductions over it and then
verified by counting -- a candidate always contains every visible element by construction, so it
*is* the mask when it has as many visible elements. All of it runs on the mask's device; the
verdicts come back to the host in one small copy (in dygraph the path has to be chosen there).
"""

from typing import NamedTuple, Optional

import paddle

#: An additive mask element at or below this value masks its key out. PaddleFormers writes
#: ``finfo(dtype).min`` (and ``-1e6`` from FlashMask indices); anything this negative makes the
#: key's softmax weight underflow to exactly 0 in float32 for any row that sees another key.
MASKED_AT_OR_BELOW = -1.0e4


class Plan(NamedTuple):
    """How to run one attention call (see the module docstring)."""

    kind: str  # "fused", "flashmask" or "masked"
    mask_type: str = "no_mask"  # fused
    window: tuple = (-1, -1)  # fused: (left, right), -1 = unbounded
    cu_seqlens_q: Optional[paddle.Tensor] = None  # fused: int32 [b+1] (None: no padding)
    cu_seqlens_kv: Optional[paddle.Tensor] = None
    startend_row_indices: Optional[paddle.Tensor] = None  # flashmask: int32 [b, m, s_k, 2]
    masked: Optional[paddle.Tensor] = None  # masked: bool [b|1, m, s_q, s_k], True = masked out
    bias: Optional[paddle.Tensor] = None  # masked: float [b|1, m, s_q, s_k], added to the scores


def additive_parts(mask, s_k):
    """(masked, values) of an attention mask: ``masked`` bool, True = masked out; ``values`` the
    float mask (None for a boolean mask, read in Paddle's convention: True = takes part).

    mask: [b|1, m, s_q, >= s_k]; keys past s_k are dropped (as PaddleFormers' eager path does).
    Works in static graphs too (nothing is read)."""
    if mask.shape[-1] != s_k:
        mask = mask[:, :, :, :s_k]
    if mask.dtype == paddle.bool:
        return paddle.logical_not(mask), None
    return mask <= MASKED_AT_OR_BELOW, mask  # also -inf


def bias_of(masked, values):
    """The additive part of a float mask: its values with masked-out elements set to 0."""
    return paddle.where(masked, paddle.zeros([1], values.dtype), values)


def _cu(lengths):
    """int [b] -> int32 cumulative [b+1] starting at 0."""
    zero = paddle.zeros([1], dtype="int64")
    return paddle.concat([zero, paddle.cumsum(lengths.astype("int64"))]).astype("int32")


def _first_true(x, axis):
    """Index of the first True of bool `x` along `axis`; meaningless where there is none.
    (argmax has no bool kernel, flip no uint8 one.)"""
    return paddle.argmax(x.astype("uint8"), axis=axis)


def _last_true(x, axis):
    """Index of the last True of bool `x` along `axis`; meaningless where there is none."""
    return x.shape[axis] - 1 - _first_true(paddle.flip(x, [axis]), axis)


def _length(any_along):
    """[mb, 1, n] bool -> [mb, 1, 1] int64: index of the last True + 1 (0 when none)."""
    last = _last_true(any_along, -1).unsqueeze(-1)
    return paddle.where(any_along.any(-1, keepdim=True), last + 1, paddle.zeros_like(last))


def _window_stats(row_any, first, last, len_q, len_k, delta, s_q):
    """For one alignment (`delta`: [mb, 1, 1] offset of the diagonal), the tightest window
    (left, right) containing every visible element, whether each side is unbounded, and the number
    of elements that window (with lengths len_q, len_k) makes visible.

    row_any, first, last: [mb, 1, s_q] (rows that see a key, their first and last visible key)."""
    i = paddle.arange(s_q, dtype="int64").reshape([1, 1, s_q])
    center = i + delta  # [mb, 1, s_q]
    neg = paddle.full([1], -(2**40), dtype="int64")
    left = paddle.where(row_any, center - first, neg).max()
    right = paddle.where(row_any, last - center, neg).max()
    left_open = paddle.logical_or(first == 0, paddle.logical_not(row_any)).all()
    right_open = paddle.logical_or(last == len_k - 1, paddle.logical_not(row_any)).all()
    lo = paddle.where(left_open, paddle.zeros_like(center), paddle.clip(center - left, min=0))
    hi = paddle.where(right_open, len_k - 1 + paddle.zeros_like(center),
                      paddle.minimum(len_k - 1, center + right))
    count = paddle.where(i < len_q, paddle.clip(hi - lo + 1, min=0), paddle.zeros_like(center)).sum()
    return left, right, left_open, right_open, count


def plan_for_mask(masked, batch, column_heads=(1,), values=None):
    """The Plan that applies `masked` (bool [b|1, m, s_q, s_k], True = masked out) exactly.
    `batch`: the attention's batch size b; `column_heads`: the mask head counts m that
    flashmask_attention takes for this call (1, h_kv, h). `values`: the float mask `masked` came
    from, if any; unless every element is 0 or masked out it is a bias (Plan "masked" with it).
    Dygraph only: the verdicts are read on the host (one small copy)."""
    mb, m, s_q, s_k = (int(x) for x in masked.shape)
    vis = paddle.logical_not(masked)  # [mb, m, s_q, s_k]
    row_any = paddle.any(vis, axis=-1)  # [mb, m, s_q]
    col_any = paddle.any(vis, axis=-2)  # [mb, m, s_k]
    total = vis.astype("int64").sum()

    # ---- 2. column bounds: the visible rows of column j are [UTE, LTS) -------------------------
    col_first = _first_true(vis, -2)  # [mb, m, s_k]
    col_last = _last_true(vis, -2)
    full = paddle.full([1], s_q, dtype="int64")
    ute = paddle.where(col_any, col_first, full)
    lts = paddle.where(col_any, col_last + 1, full)
    ok_columns = (lts - ute).sum() == total

    # ---- 1. lengths + window, for one mask shared by the heads ----------------------------------
    pure = paddle.ones([], dtype="bool")
    if values is not None:
        pure = paddle.logical_or(masked, values == 0).all()
    stats = [pure.astype("int64"), ok_columns.astype("int64")]
    if m == 1:
        # Lengths: up to the last row (column) that sees (is seen by) anything. Rows and columns
        # before it that take no part must be explained by the window, which the count checks.
        len_q = _length(row_any)  # [mb, 1, 1]
        len_k = _length(col_any)
        first = _first_true(vis, -1)  # [mb, 1, s_q]
        last = _last_true(vis, -1)
        no_padding = paddle.logical_and((len_q == s_q).all(), (len_k == s_k).all())
        stats += [no_padding.astype("int64")]
        for delta in (paddle.zeros_like(len_q), len_k - len_q):  # top-left, bottom-right
            left, right, left_open, right_open, count = _window_stats(
                row_any, first, last, len_q, len_k, delta, s_q)
            stats += [left, right, left_open.astype("int64"), right_open.astype("int64"),
                      (count == total).astype("int64")]
    verdict = paddle.stack([x.reshape([]).astype("int64") for x in stats]).numpy().tolist()

    if not verdict[0]:
        return Plan("masked", masked=masked, bias=bias_of(masked, values))
    if m == 1:
        no_padding = bool(verdict[2])
        # stats: [pure, ok_columns, no_padding, top-left window (5), bottom-right window (5)]
        for alignment, base in (("bottom_right", 8), ("top_left", 3)):
            left, right, left_open, right_open, ok = verdict[base:base + 5]
            if not ok:
                continue
            left = -1 if left_open else left
            right = -1 if right_open else right
            if left < -1 or right < -1 or (left_open and right_open and alignment == "bottom_right"):
                continue  # a window the rule cannot write; an unwindowed mask: top-left below
            if right == 0:
                mask_type = "causal_bottom_right" if alignment == "bottom_right" else "causal"
            elif alignment == "bottom_right":
                continue  # non-causal types are top-left
            else:
                mask_type = "no_mask"
            cu_q = cu_kv = None
            if not no_padding:
                mask_type = {"no_mask": "padding", "causal": "padding_causal",
                             "causal_bottom_right": "padding_causal_bottom_right"}[mask_type]
                cu_q = _cu(paddle.expand(len_q.reshape([-1]), [batch]))
                cu_kv = _cu(paddle.expand(len_k.reshape([-1]), [batch]))
            return Plan("fused", mask_type=mask_type, window=(left, right), cu_seqlens_q=cu_q,
                        cu_seqlens_kv=cu_kv)
    if verdict[1] and m in column_heads:
        se = paddle.stack([lts, ute], axis=-1).astype("int32")  # [mb, m, s_k, 2]
        if mb != batch:
            se = paddle.expand(se, [batch, m, s_k, 2])
        return Plan("flashmask", startend_row_indices=se)
    return Plan("masked", masked=masked)
