"""The FlashMask mask zoo for tests and benchmarks (SPEC §9): numpy int32 startend_row_indices
[b, 1, s_kv, C] for the patterns Paddle's FlashMask describes, written here from their
definitions (not from paddle_te.masks, whose builders the tests check against these).

Each entry is (name, causal, builder) where builder(rng, b, s_q, s_kv) -> int32 array. Sequences
hold documents back to back (lengths from rng); per column j of a document [a, e):
"""

import numpy as np


def doc_bounds(rng, s, min_docs=1, max_docs=4):
    """Random document boundaries [0, ..., s] (strictly increasing)."""
    n = int(rng.integers(min_docs, max_docs + 1))
    n = max(1, min(n, s))
    cuts = np.sort(rng.choice(np.arange(1, s), size=n - 1, replace=False)) if n > 1 and s > 1 else []
    return np.concatenate([[0], np.asarray(cuts, dtype=np.int64), [s]]).astype(np.int64)


def _doc_of(bounds, s):
    """(start, end) of the document of every column [s]."""
    idx = np.searchsorted(bounds, np.arange(s), side="right") - 1
    return bounds[idx], bounds[idx + 1]


def full(rng, b, s_q, s_kv):  # nothing masked (causal=False, C=2: LTS = s_q, UTE = 0)
    x = np.zeros((b, 1, s_kv, 2), np.int32)
    x[..., 0] = s_q
    return x


def causal_document(rng, b, s_q, s_kv):  # causal, C=1: LTS = document end
    x = np.zeros((b, 1, s_kv, 1), np.int32)
    for bi in range(b):
        _, e = _doc_of(doc_bounds(rng, s_kv), s_kv)
        x[bi, 0, :, 0] = np.minimum(e, s_q)
    return x


def document(rng, b, s_q, s_kv):  # bidirectional documents, causal=False, C=2: LTS = end, UTE = start
    x = np.zeros((b, 1, s_kv, 2), np.int32)
    for bi in range(b):
        a, e = _doc_of(doc_bounds(rng, s_kv), s_kv)
        x[bi, 0, :, 0] = np.minimum(e, s_q)
        x[bi, 0, :, 1] = np.minimum(a, s_q)
    return x


def sliding_window(rng, b, s_q, s_kv, w=None):  # causal, C=1: LTS = j + w
    w = w or int(rng.integers(1, max(2, s_kv // 2) + 1))
    x = np.zeros((b, 1, s_kv, 1), np.int32)
    x[..., 0] = np.minimum(np.arange(s_kv) + w, s_q)[None, None, :]
    return x


def prefix_lm_document(rng, b, s_q, s_kv):  # causal=False, C=2: LTS = end, UTE = start (prefix) or j
    x = np.zeros((b, 1, s_kv, 2), np.int32)
    for bi in range(b):
        bounds = doc_bounds(rng, s_kv)
        a, e = _doc_of(bounds, s_kv)
        prefix = np.zeros(s_kv, np.int64)
        for k in range(len(bounds) - 1):
            lo, hi = bounds[k], bounds[k + 1]
            prefix[lo:hi] = int(rng.integers(0, hi - lo + 1))
        j = np.arange(s_kv)
        x[bi, 0, :, 0] = np.minimum(e, s_q)
        x[bi, 0, :, 1] = np.minimum(np.where(j < a + prefix, a, j), s_q)
    return x


def share_question(rng, b, s_q, s_kv):  # causal, C=2: question cols mask [end, s); answer k masks [end_k, s)
    x = np.zeros((b, 1, s_kv, 2), np.int32)
    for bi in range(b):
        bounds = doc_bounds(rng, s_kv)
        for k in range(len(bounds) - 1):
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            qlen = int(rng.integers(1, hi - lo + 1))
            x[bi, 0, lo:lo + qlen, 0] = hi
            x[bi, 0, lo:lo + qlen, 1] = s_q
            ans = doc_bounds(rng, hi - lo - qlen) + lo + qlen if hi - lo - qlen > 0 else []
            for t in range(len(ans) - 1):
                x[bi, 0, ans[t]:ans[t + 1], 0] = ans[t + 1]
                x[bi, 0, ans[t]:ans[t + 1], 1] = s_q
    return np.minimum(x, s_q).astype(np.int32)


def global_sliding(rng, b, s_q, s_kv):  # causal=False, C=4: g global tokens, window w both ways
    g = int(rng.integers(0, max(1, s_kv // 8) + 1))
    w = int(rng.integers(1, max(2, s_kv // 4) + 1))
    j = np.arange(s_kv)
    x = np.zeros((b, 1, s_kv, 4), np.int32)
    lts = np.where(j < g, s_q, np.maximum(j + w + 1, g))   # rows below the window (global rows stay)
    uts = np.where(j < g, 0, g)
    ute = np.where(j < g, 0, np.maximum(j - w, g))        # rows above the window, after the global rows
    x[..., 0] = np.minimum(lts, s_q)
    x[..., 1] = s_q
    x[..., 2] = np.minimum(uts, s_q)
    x[..., 3] = np.minimum(np.maximum(ute, uts), s_q)
    return x


def random_eviction(rng, b, s_q, s_kv):  # causal, C=1: each key evicted after a random row
    x = np.zeros((b, 1, s_kv, 1), np.int32)
    for bi in range(b):
        x[bi, 0, :, 0] = [int(rng.integers(min(j + 1, s_q), s_q + 1)) for j in range(s_kv)]
    return x


def random_c2_causal(rng, b, s_q, s_kv):  # causal, C=2: random [LTS, LTE) (empty/inverted too)
    return rng.integers(0, s_q + 1, size=(b, 1, s_kv, 2)).astype(np.int32)


def random_c4(rng, b, s_q, s_kv):  # causal=False, C=4: random intervals (may overlap/invert)
    return rng.integers(0, s_q + 1, size=(b, 1, s_kv, 4)).astype(np.int32)


def random_c2(rng, b, s_q, s_kv):  # causal=False, C=2: random LTS / UTE
    return rng.integers(0, s_q + 1, size=(b, 1, s_kv, 2)).astype(np.int32)


def dead_rows(rng, b, s_q, s_kv):  # causal, C=2: rows [r0, r1) see nothing (every column masks them)
    r0 = int(rng.integers(0, s_q))
    r1 = int(rng.integers(r0 + 1, s_q + 1))
    x = np.zeros((b, 1, s_kv, 2), np.int32)
    x[..., 0] = r0
    x[..., 1] = r1
    return x


ZOO = [
    ("full", False, full),
    ("causal_document", True, causal_document),
    ("document", False, document),
    ("sliding_window", True, sliding_window),
    ("prefix_lm_document", False, prefix_lm_document),
    ("share_question", True, share_question),
    ("global_sliding", False, global_sliding),
    ("random_eviction", True, random_eviction),
    ("random_c2_causal", True, random_c2_causal),
    ("random_c4", False, random_c4),
    ("random_c2", False, random_c2),
    ("dead_rows", True, dead_rows),
]
ZOO_BY_NAME = {name: (causal, fn) for name, causal, fn in ZOO}


def with_heads(x, rng, m):
    """x [b, 1, s_kv, C] -> [b, m, s_kv, C]: head 0 keeps x, the others get shifted copies (so
    heads really differ); values stay in [0, s_q] because the shift is a roll over columns."""
    if m == 1:
        return x
    out = np.concatenate([np.roll(x, shift=int(rng.integers(0, x.shape[2])), axis=2)
                          for _ in range(m)], axis=1)
    out[:, 0] = x[:, 0]
    return np.ascontiguousarray(out)
