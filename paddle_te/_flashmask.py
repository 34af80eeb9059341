"""FlashMask column bounds (SPEC §9): conversions to and from dense masks and builders for the
common patterns, re-exported by ``paddle_te.masks``.

``startend_row_indices`` is int32 ``[b, m, s_kv, C]``: for key column ``j`` the query rows of
these half-open intervals are masked out (True = masked out, as everywhere in paddle_te):

====== === ===================== ==========================================
causal C   columns               rows masked in column j
====== === ===================== ==========================================
True   1   LTS                   rows >= LTS[j]
True   2   LTS, LTE              LTS[j] <= rows < LTE[j]
False  2   LTS, UTE              rows >= LTS[j], and rows < UTE[j]
False  4   LTS, LTE, UTS, UTE    [LTS[j], LTE[j]) and [UTS[j], UTE[j])
====== === ===================== ==========================================

With ``causal=True`` the causal rule (row i sees key j <= i) applies as well.
"""

import numbers

import numpy as np
import paddle

__all__ = [
    "startend_row_indices_to_dense",
    "dense_to_startend_row_indices",
    "document_mask",
    "causal_document_mask",
    "prefix_lm_document_mask",
    "share_question_mask",
    "sliding_window_mask",
]

_VALID_C = {True: (1, 2), False: (2, 4)}


def check_c(C, causal, name="startend_row_indices", shape=None):
    """ValueError unless (causal, C) is a row of the table."""
    if C not in _VALID_C[bool(causal)]:
        allowed = " or ".join(str(c) for c in _VALID_C[bool(causal)])
        where = f" has shape {shape}:" if shape is not None else ":"
        raise ValueError(f"{name}{where} C = {C} with causal={bool(causal)} must be {allowed} (SPEC §9)")


def _check_causal(causal):
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal={causal!r}: must be a bool")
    return bool(causal)


def _seq_len(seq_len, rows):
    """seq_len of a builder: an int >= the tokens of every cu_seqlens row (None: those tokens);
    fewer would give column bounds past the sequence."""
    need = max(int(r[-1]) for r in rows)
    if seq_len is None:
        return need
    if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or seq_len < need:
        raise ValueError(f"seq_len={seq_len!r}: must be an int >= cu_seqlens[-1] = {need}")
    return int(seq_len)


def _masked_rows(se, s_q, causal):
    """bool [b, m, s_q, s_kv] from int tensor se [b, m, s_kv, C] (paddle ops: dygraph and static)."""
    C = int(se.shape[-1])
    check_c(C, causal, shape=list(se.shape))
    se = se.astype("int32")
    rows = paddle.arange(s_q, dtype="int32").reshape([1, 1, s_q, 1])

    def col(k):
        return se[:, :, :, k].unsqueeze(2)  # [b, m, 1, s_kv]

    if causal and C == 1:
        return rows >= col(0)
    if causal:
        return paddle.logical_and(rows >= col(0), rows < col(1))
    if C == 2:
        return paddle.logical_or(rows >= col(0), rows < col(1))
    return paddle.logical_or(paddle.logical_and(rows >= col(0), rows < col(1)),
                             paddle.logical_and(rows >= col(2), rows < col(3)))


def startend_row_indices_to_dense(startend_row_indices, s_q, causal):
    """bool ``[b, m, s_q, s_kv]``, True = masked out: the exact mask ``flashmask_attention``
    applies, including the causal rule when ``causal`` (for debugging and tests)."""
    causal = _check_causal(causal)
    se = startend_row_indices
    if not isinstance(se, paddle.Tensor):
        arr = np.asarray(se)
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"startend_row_indices: expected int32 [b, m, s_kv, C] values, got {arr.dtype}")
        se = paddle.to_tensor(arr.astype(np.int32))
    elif se.dtype not in (paddle.int32, paddle.int64):
        raise TypeError(f"startend_row_indices has dtype {se.dtype}: must be int32")
    if len(se.shape) != 4:
        raise ValueError(f"startend_row_indices has shape {list(se.shape)}: expected [b, m, s_kv, C]")
    if isinstance(s_q, bool) or not isinstance(s_q, numbers.Integral) or s_q < 0:
        raise ValueError(f"s_q={s_q!r}: must be an int >= 0")
    masked = _masked_rows(se, int(s_q), causal)
    if causal:
        s_kv = int(se.shape[2])
        upper = paddle.arange(s_kv, dtype="int32").reshape([1, s_kv]) > \
            paddle.arange(int(s_q), dtype="int32").reshape([int(s_q), 1])
        masked = paddle.logical_or(masked, upper.reshape([1, 1, int(s_q), s_kv]))
    return masked


def _runs(col):
    """[(start, end)] of the True runs of a 1-D bool array."""
    x = np.concatenate([[False], col, [False]]).astype(np.int8)
    d = np.diff(x)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def dense_to_startend_row_indices(mask, causal):
    """The ``startend_row_indices`` (int32 ``[b, m, s_kv, C]``, the smallest C that expresses it)
    of a bool mask ``[b, m, s_q, s_kv]`` (True = masked out). With ``causal=True`` the table
    describes the rows at and below the diagonal (the op masks those above it by the causal rule
    anyway), so the elements above it are not read: a mask with or without them masked gives the
    same indices. A mask whose masked rows in some column are not what the table expresses raises
    ``ValueError`` naming ``attn_mask_type="arbitrary"`` (run such masks through ``fused_attn`` /
    the layers with an arbitrary mask). Dygraph only (reads the mask)."""
    causal = _check_causal(causal)
    m = mask.numpy() if isinstance(mask, paddle.Tensor) else np.asarray(mask)
    if m.ndim != 4 or m.dtype != np.bool_:
        raise ValueError(f"mask: expected a bool [b, m, s_q, s_kv] array, got {m.dtype} of shape {list(m.shape)}")
    b, heads, s_q, s_kv = m.shape

    def fail(why):
        raise ValueError(
            f"mask: cannot be expressed as startend_row_indices with causal={bool(causal)} ({why}); "
            "use attn_mask_type=\"arbitrary\" with the dense mask instead"
        )

    if causal:
        # Rows above the diagonal (i < j) are masked by the causal rule anyway: only rows >= j
        # count, and their masked rows must form one interval.
        out = np.zeros((b, heads, s_kv, 2), np.int32)
        for bi in range(b):
            for h in range(heads):
                for j in range(s_kv):
                    j0 = min(j, s_q)
                    runs = [(a + j0, e + j0) for a, e in _runs(m[bi, h, j0:, j])]
                    if len(runs) > 1:
                        fail(f"column {j} has two separate masked intervals below the diagonal")
                    out[bi, h, j] = runs[0] if runs else (s_q, s_q)
        if np.all(out[..., 1] == s_q):
            out = np.ascontiguousarray(out[..., :1])
        return paddle.to_tensor(out)
    flat = [_runs(m[bi, h, :, j]) for bi in range(b) for h in range(heads) for j in range(s_kv)]
    if any(len(r) > 2 for r in flat):
        fail("a column has more than two masked intervals")
    # C = 2 when every column is (a run touching the top) + (a run touching the bottom).
    def as_c2(runs):
        ute, lts = 0, s_q
        for a, e in runs:
            if a == 0:
                ute = e
            elif e == s_q:
                lts = a
            else:
                return None
        if len(runs) == 1 and runs[0] == (0, s_q):
            return (s_q, s_q)  # whole column: as the upper run
        return (lts, ute)

    c2 = [as_c2(r) for r in flat]
    if all(x is not None for x in c2):
        out = np.asarray(c2, np.int32).reshape(b, heads, s_kv, 2)
        return paddle.to_tensor(out)
    out = np.zeros((len(flat), 4), np.int32)
    for n, runs in enumerate(flat):
        for k, (a, e) in enumerate(runs):
            out[n, 2 * k], out[n, 2 * k + 1] = a, e
    return paddle.to_tensor(out.reshape(b, heads, s_kv, 4))


# ---- builders from cu_seqlens ------------------------------------------------------------------

def _batch_of(cu_seqlens, name="cu_seqlens"):
    """A list of int64 arrays (one cu_seqlens per batch row) from one 1-D sequence or a list/2-D."""
    if isinstance(cu_seqlens, paddle.Tensor):
        cu_seqlens = cu_seqlens.numpy()
    if not isinstance(cu_seqlens, (list, tuple, np.ndarray)):
        raise TypeError(f"{name} is a {type(cu_seqlens).__name__}: must be a list, numpy array or "
                        "paddle.Tensor of ints")
    arr = cu_seqlens
    if isinstance(arr, np.ndarray) and arr.ndim == 2:
        rows = [np.asarray(r) for r in arr]
    elif len(arr) > 0 and not isinstance(arr[0], numbers.Integral) and np.ndim(arr[0]) == 1:
        rows = [np.asarray(r) for r in arr]
    else:
        rows = [np.asarray(arr)]
    for r in rows:
        if r.size and not np.issubdtype(r.dtype, np.integer):
            raise TypeError(f"{name}={r.tolist()}: must hold ints")
    rows = [r.astype(np.int64) for r in rows]
    for r in rows:
        if r.ndim != 1 or len(r) < 2 or r[0] != 0 or np.any(np.diff(r) < 0):
            raise ValueError(f"{name}={r.tolist()}: must start at 0 and be non-decreasing, >= 2 entries")
    if len({int(r[-1]) for r in rows}) != 1:
        raise ValueError(f"{name}: every batch row must cover the same sequence length, got "
                         f"{[int(r[-1]) for r in rows]}")
    return rows


def _doc_extents(cu, s):
    """(start, end) of the document of every position [s] (positions past cu[-1]: their own)."""
    pos = np.arange(s)
    idx = np.clip(np.searchsorted(cu, pos, side="right") - 1, 0, len(cu) - 2)
    start, end = cu[idx], cu[idx + 1]
    tail = pos >= cu[-1]
    return np.where(tail, pos, start), np.where(tail, pos + 1, end)


def _out(rows):
    return paddle.to_tensor(np.ascontiguousarray(np.stack(rows)[:, None]).astype(np.int32))


def causal_document_mask(cu_seqlens, seq_len=None):
    """Causal attention within documents packed back to back (``cu_seqlens`` of one batch row, or
    a list of them): int32 ``[b, 1, s, 1]`` for ``causal=True`` (LTS = the document's end)."""
    rows = _batch_of(cu_seqlens)
    s = _seq_len(seq_len, rows)
    return _out([_doc_extents(cu, s)[1][:, None] for cu in rows])


def document_mask(cu_seqlens, seq_len=None):
    """Bidirectional attention within documents: int32 ``[b, 1, s, 2]`` for ``causal=False``
    (LTS = the document's end, UTE = its start)."""
    rows = _batch_of(cu_seqlens)
    s = _seq_len(seq_len, rows)
    return _out([np.stack(_doc_extents(cu, s)[::-1], axis=1) for cu in rows])


def prefix_lm_document_mask(cu_seqlens, prefix_lengths, seq_len=None):
    """Prefix-LM within documents: the first ``prefix_lengths[k]`` tokens of document k attend
    bidirectionally (and are seen by the whole document), the rest causally. int32
    ``[b, 1, s, 2]`` for ``causal=False``. ``prefix_lengths``: one int per document (per batch
    row: a list of lists)."""
    rows = _batch_of(cu_seqlens)
    s = _seq_len(seq_len, rows)
    prefix = prefix_lengths if len(rows) > 1 else [prefix_lengths]
    if len(prefix) != len(rows):
        raise ValueError(f"prefix_lengths: {len(prefix)} rows for {len(rows)} cu_seqlens rows")
    out = []
    for cu, pl in zip(rows, prefix):
        pl = np.asarray(pl).reshape(-1)
        if pl.size and not np.issubdtype(pl.dtype, np.integer):
            raise TypeError(f"prefix_lengths={pl.tolist()}: must hold ints")
        if len(pl) != len(cu) - 1 or np.any(pl < 0) or np.any(pl > np.diff(cu)):
            raise ValueError(f"prefix_lengths={pl.tolist()}: one value in [0, document length] per "
                             f"document of cu_seqlens={cu.tolist()}")
        start, end = _doc_extents(cu, s)
        pfx = np.zeros(s, np.int64)
        for k in range(len(cu) - 1):
            pfx[cu[k]:cu[k + 1]] = pl[k]
        j = np.arange(s)
        out.append(np.stack([end, np.where(j < start + pfx, start, j)], axis=1))
    return _out(out)


def share_question_mask(segments, seq_len=None):
    """Share-question (one question, several answers that must not see each other), for
    ``causal=True``: int32 ``[b, 1, s, 2]`` (answer k's columns mask [its end, s), the question's
    [the document's end, s)). ``segments``: per document a list of lengths
    ``[question, answer_1, answer_2, ...]`` (per batch row: a list of those lists)."""
    def is_doc(doc):
        return isinstance(doc, (list, tuple)) and len(doc) >= 1 and all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 for n in doc)

    nested = isinstance(segments, (list, tuple)) and segments and isinstance(segments[0], (list, tuple)) \
        and segments[0] and isinstance(segments[0][0], (list, tuple))
    batch = segments if nested else [segments]
    if not all(isinstance(row, (list, tuple)) and row and all(is_doc(d) for d in row) for row in batch):
        raise ValueError(
            f"segments={segments!r}: must be a list of documents, each [question, answer_1, ...] "
            "lengths (ints >= 0); per batch row a list of those lists"
        )
    totals = [sum(sum(doc) for doc in row) for row in batch]
    s = int(seq_len if seq_len is not None else max(totals))
    out = []
    for row, total in zip(batch, totals):
        if total > s:
            raise ValueError(f"segments: a row of {total} tokens exceeds seq_len={s}")
        x = np.zeros((s, 2), np.int64)
        x[:, 0] = np.arange(s) + 1  # padding tokens: themselves only
        x[:, 1] = s
        pos = 0
        for doc in row:
            if len(doc) < 1 or any(int(n) < 0 for n in doc):
                raise ValueError(f"segments: each document is [question, answers...] lengths >= 0, got {doc}")
            end = pos + sum(int(n) for n in doc)
            q = int(doc[0])
            x[pos:pos + q] = (end, s)
            a = pos + q
            for n in doc[1:]:
                x[a:a + int(n)] = (a + int(n), s)  # later answers and documents
                a += int(n)
            pos = end
        out.append(x)
    return _out(out)


def sliding_window_mask(seq_len, window_size, causal=True, cu_seqlens=None, batch_size=1):
    """Sliding window (within documents when ``cu_seqlens`` is given). ``window_size``: an int w
    (``(w, w)``) or ``(left, right)``; query i sees key j iff i - left <= j <= i + right (right = 0
    with ``causal=True``). int32 ``[b, 1, s, 1]`` (causal) or ``[b, 1, s, 2]``."""
    left, right = _window_pair(window_size)
    causal = _check_causal(causal)
    for arg, value, low in (("seq_len", seq_len, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{arg}={value!r}: must be an int >= {low}")
    s = int(seq_len)
    rows = _batch_of(cu_seqlens) if cu_seqlens is not None else [np.asarray([0, s], np.int64)] * batch_size
    out = []
    j = np.arange(s)
    for cu in rows:
        start, end = _doc_extents(cu, s)
        lts = np.minimum(j + left + 1, end) if left >= 0 else end
        if causal:
            out.append(lts[:, None])
        else:
            ute = np.maximum(j - right, start) if right >= 0 else start
            out.append(np.stack([lts, ute], axis=1))
    return _out(out)


def _window_pair(window_size):
    if isinstance(window_size, numbers.Integral) and not isinstance(window_size, bool):
        pair = (int(window_size), int(window_size))
    elif isinstance(window_size, (tuple, list)) and len(window_size) == 2 and all(
            isinstance(w, numbers.Integral) and not isinstance(w, bool) for w in window_size):
        pair = (int(window_size[0]), int(window_size[1]))
    else:
        raise ValueError(f"window_size={window_size!r}: must be an int or a pair (left, right) of ints")
    if pair[0] < -1 or pair[1] < -1:
        raise ValueError(f"window_size={window_size!r}: each side must be >= -1 (-1 = unbounded)")
    return pair
