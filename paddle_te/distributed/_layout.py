"""The load-balanced chunk layout of context parallelism: 2N chunks, rank r holds r and 2N-1-r."""

import paddle
import paddle.distributed as dist

__all__ = ["chunk_ids", "group_size_rank", "get_batch_on_this_cp_rank", "gather_from_cp_ranks"]


def chunk_ids(rank, n):
    """The two global chunk indices rank ``rank`` of ``n`` holds, in shard order."""
    return rank, 2 * n - 1 - rank


def group_size_rank(cp_group):
    """(N, this process's index in the group) of a ``paddle.distributed`` group."""
    if cp_group is None:
        raise ValueError("cp_group=None: a paddle.distributed group of N >= 2 ranks is required")
    n, r = int(cp_group.nranks), int(cp_group.rank)
    if r < 0:
        raise ValueError(f"cp_group={cp_group}: this process (global rank {dist.get_rank()}) is not in it")
    return n, r


def _check_seq_dim(x, seq_dim, n):
    if not isinstance(x, paddle.Tensor):
        raise TypeError(f"x: expected a paddle.Tensor, got {type(x).__name__}")
    nd = len(x.shape)
    if not isinstance(seq_dim, int) or isinstance(seq_dim, bool) or not -nd <= seq_dim < nd:
        raise ValueError(f"seq_dim={seq_dim!r}: must be an int in [{-nd}, {nd}) for x of shape {list(x.shape)}")
    seq_dim %= nd
    return seq_dim


def get_batch_on_this_cp_rank(x, seq_dim, cp_group):
    """This rank's shard of a full tensor ``x``: chunks r and 2N-1-r of ``seq_dim`` (cut into 2N
    equal chunks), concatenated in that order."""
    n, r = group_size_rank(cp_group)
    seq_dim = _check_seq_dim(x, seq_dim, n)
    s = int(x.shape[seq_dim])
    if s % (2 * n) != 0:
        raise ValueError(
            f"x has shape {list(x.shape)}: its sequence length {s} (dim {seq_dim}) must be divisible "
            f"by 2 * N = {2 * n} (context parallelism over N = {n} ranks)"
        )
    parts = paddle.split(x, 2 * n, axis=seq_dim)
    a, b = chunk_ids(r, n)
    return paddle.concat([parts[a], parts[b]], axis=seq_dim)


def gather_from_cp_ranks(x, seq_dim, cp_group):
    """The full tensor from every rank's shard ``x`` (the inverse of get_batch_on_this_cp_rank),
    on every rank. Runs one all_gather over ``cp_group``."""
    n, _ = group_size_rank(cp_group)
    seq_dim = _check_seq_dim(x, seq_dim, n)
    if int(x.shape[seq_dim]) % 2 != 0:
        raise ValueError(
            f"x has shape {list(x.shape)}: a shard holds two equal chunks along dim {seq_dim}, so its "
            "length must be even"
        )
    shards = []
    dist.all_gather(shards, x.contiguous() if hasattr(x, "contiguous") else x, group=cp_group)
    chunks = [None] * (2 * n)
    for rank, shard in enumerate(shards):
        a, b = chunk_ids(rank, n)
        chunks[a], chunks[b] = paddle.split(shard, 2, axis=seq_dim)
    return paddle.concat(chunks, axis=seq_dim)
