"""The work of one (query chunk, key chunk) pair of context parallelism (docs/context_parallel.md).

Plain Python, no Paddle: bench/bench_cp.py loads this file by path to simulate the ring on one GPU
through paddle_te_core, where Paddle is not installed.
"""

__all__ = ["Plan", "pair_plan"]


class Plan:
    """The work of one (query chunk, key chunk) pair: drop the first f queries and the first e keys,
    then run the op with window (left, right) (-1 = unbounded)."""

    __slots__ = ("f", "e", "left", "right")

    def __init__(self, f, e, left, right):
        self.f, self.e, self.left, self.right = f, e, left, right


def pair_plan(qc, kc, c, left, right):
    """None when no query of chunk qc sees a key of chunk kc, else the Plan."""
    d = (qc - kc) * c
    lo = None if left < 0 else d - left  # j >= i + lo
    hi = None if right < 0 else d + right  # j <= i + hi
    if hi is not None and hi + (c - 1) < 0:
        return None
    if lo is not None and lo > c - 1:
        return None
    f = -hi if hi is not None and hi < 0 else 0
    e = lo + f if lo is not None and lo + f > 0 else 0
    nq, nk = c - f, c - e
    lo2 = None if lo is None else lo + f - e
    hi2 = None if hi is None else hi + f - e
    # A bound that no (query, key) of the pair reaches is no bound at all.
    if lo2 is not None and lo2 <= -(nq - 1):
        lo2 = None
    if hi2 is not None and hi2 >= nk - 1:
        hi2 = None
    return Plan(f, e, -1 if lo2 is None else -lo2, -1 if hi2 is None else hi2)
