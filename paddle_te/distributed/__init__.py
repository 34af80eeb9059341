"""Context parallelism: one sequence over several processes (SPEC §11, docs/context_parallel.md).

The sequence is cut into 2N equal chunks and rank r of the N ranks of a ``paddle.distributed``
group holds chunks r and 2N-1-r (in that order), so causal work is equal on every rank.
``get_batch_on_this_cp_rank`` cuts a full tensor into this rank's shard and
``gather_from_cp_ranks`` restores it; ``context_parallel_attn`` is the attention over the whole
sequence computed from the shards (the layers call it when given ``cp_group``), and
``attn_merge`` is its lse merge (a custom op with CPU and CUDA kernels).
"""

from ._layout import chunk_ids, gather_from_cp_ranks, get_batch_on_this_cp_rank
from ._merge import attn_merge
from ._ring import CP_COMM_TYPES, check_cp_args, context_parallel_attn

__all__ = [
    "CP_COMM_TYPES",
    "attn_merge",
    "check_cp_args",
    "chunk_ids",
    "context_parallel_attn",
    "gather_from_cp_ranks",
    "get_batch_on_this_cp_rank",
]
