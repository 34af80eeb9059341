"""Attention over a sequence sharded across a context-parallel group (SPEC §11).

Every rank holds q, k, v of chunks (r, 2N-1-r) of a sequence cut into 2N chunks of length c.
Attention of the whole sequence is the lse merge of the attention of every (query chunk, key
chunk) pair whose visibility is not empty. A pair is one call of the fused attention op on the
two chunks: chunk-local positions i, j see each other iff the global rule of SPEC §2 holds,

    i + D - left <= j <= i + D + right,     D = (query chunk - key chunk) * c,

which the op expresses as a window (left - D, right + D) of a `no_mask` / `padding` call when
both bounds are >= 0 (-1 = unbounded). Where a bound would be negative, the pair is sliced
first: the first f queries (they see no key of the chunk) or the first e keys (no query sees
them) are dropped, which moves the bounds back to >= 0. Pairs that no query sees are skipped, so
a causal step does only the work it needs (the diagonal pairs causal, the others full blocks,
the invisible ones nothing); with a window, steps entirely outside it cost nothing.

`p2p`: K and V travel around the ring (rank r sends to r+1 and receives from r-1) while the
current step computes; the partial outputs merge in float32 through their lse (pte_attn_merge).
The backward recomputes each pair from the final output and lse (pte_attn_bwd_step), keeps dQ
locally and sends the dK/dV accumulators (float32) around the ring with K and V, so after N steps
each arrives at its owner. `all_gather`: K and V are gathered first; the dK/dV partials are summed
with one all_reduce and each rank keeps its own.

Static mode (PIR: paddle.enable_static, paddle.jit.to_static) runs the `all_gather` form (`p2p`
maps to it: same pairs, same fold order, same bits) as one `static_pylayer` whose forward block
holds the all_gather of K and V and the pair calls, and whose backward block gathers K and V
again, runs the pair backwards and sums dK/dV with one all_reduce. Paddle's static all_gather has
no gradient of its own (PIR drops it silently), which is why the backward is written out here.

Communication uses what Paddle offers on every backend: send/recv, all_gather and all_reduce. On
GPUs (NCCL) the transfers of the next step are issued asynchronously (sync_op=False) before the
current step's kernels, which run on the calculation stream, so transfer and compute overlap; any
N works by NCCL's matching (a send meets the peer's next receive from this rank; an odd N is not
yet run on GPUs). On CPUs (gloo, Paddle 3.3.1) every call of a group, send and recv included,
takes the next value of one counter of the group as its gloo tag (ProcessGroupGloo::next_tag), a
send completes only against a receive of the same tag on the peer, and isend/irecv/
batch_isend_irecv run as the blocking calls (no alltoall, no reduce_scatter). So the k-th call of
every rank must pair it with exactly one other rank: even ranks sending then receiving and odd
ones receiving then sending pairs the ring for an even N; for an odd N no order of sends and
receives can (the k-th calls would have to pair N ranks two by two), so `p2p` over gloo with an
odd N runs the `all_gather` form (_comm_form).

Dropout: each pair uses the (seed, offset) drawn once per call from Paddle's generator with the
offset advanced by the pair's index (query chunk * 2N + key chunk), and chunk-local indices: the
same mask in the forward and the backward, repeatable under paddle.seed, independent between
pairs.
"""

import math

import numpy as np
import paddle
import paddle.distributed as dist
from paddle import _C_ops
from paddle.autograd import PyLayer
from paddle.base.libpaddle.pir import get_used_external_value
from paddle.framework import in_pir_mode
from paddle.jit.dy2static.py_layer import StaticPyLayerContext
from paddle.jit.marker import unified

from .. import _ops_lib
from ..ops import _seed_offset
from ..masks import check_mask_type, check_set_window_size
from ._layout import chunk_ids, group_size_rank
from ._merge import attn_merge
from ._plan import pair_plan as _pair_plan

__all__ = ["CP_COMM_TYPES", "CP_MASK_TYPES", "check_cp_args", "context_parallel_attn"]

CP_COMM_TYPES = ("p2p", "all_gather")
CP_MASK_TYPES = ("no_mask", "causal", "padding", "padding_causal")
CP_FORMATS = ("bshd", "sbhd")


def check_cp_args(cp_group, cp_global_ranks=None, cp_comm_type="p2p", cp_stream=None):
    """Validate the context-parallel arguments of the layers; returns the global ranks (list)."""
    if cp_comm_type not in CP_COMM_TYPES:
        raise ValueError(f"cp_comm_type={cp_comm_type!r}: must be one of {', '.join(map(repr, CP_COMM_TYPES))}")
    if cp_group is None:
        if cp_global_ranks is not None:
            raise ValueError("cp_global_ranks was given without cp_group")
        return None
    for attr in ("nranks", "rank", "ranks"):
        if not hasattr(cp_group, attr):
            raise TypeError(
                f"cp_group={cp_group!r}: expected a paddle.distributed group (from "
                "paddle.distributed.new_group)"
            )
    n = int(cp_group.nranks)
    if n < 2:
        raise ValueError(f"cp_group has {n} rank(s): context parallelism needs N >= 2 (use cp_group=None)")
    ranks = list(cp_group.ranks)
    if cp_global_ranks is not None:
        given = [int(x) for x in cp_global_ranks]
        if given != ranks:
            raise ValueError(
                f"cp_global_ranks={list(cp_global_ranks)}: must list cp_group's global ranks {ranks} in order"
            )
    return ranks


def _is_tensor(x):
    """A dygraph tensor or a static (PIR) value."""
    return isinstance(x, (paddle.Tensor, paddle.pir.Value))


# ---- layout helpers -------------------------------------------------------------------------------
def _seq_axis(fmt):
    return 1 if fmt == "bshd" else 0


def _sl(x, fmt, start, stop):
    """x[start:stop] along the sequence axis."""
    return x[:, start:stop] if fmt == "bshd" else x[start:stop]


def _cat(xs, fmt):
    return xs[0] if len(xs) == 1 else paddle.concat(xs, axis=_seq_axis(fmt))


def _pad_front(x, n, fmt, value=0.0):
    """n rows of `value` in front of x along the sequence axis."""
    if n == 0:
        return x
    shape = list(x.shape)
    shape[_seq_axis(fmt)] = n
    return paddle.concat([paddle.full(shape, value, dtype=x.dtype), x], axis=_seq_axis(fmt))


def _pad_lse_front(lse, n):
    if n == 0:
        return lse
    shape = list(lse.shape)
    shape[-1] = n
    return paddle.concat([paddle.full(shape, -math.inf, dtype=lse.dtype), lse], axis=-1)


class _Cfg:
    """Everything a call needs besides the tensors."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def cu(self, lengths, start, n):
        """int32 cu_seqlens [b+1] of the slice [start, start+n) of the whole sequences."""
        if lengths is None:
            return None
        loc = paddle.clip(lengths - start, 0, n)
        return paddle.concat([paddle.zeros([1], dtype="int64"), paddle.cumsum(loc)]).astype("int32")

    def seed_offset(self, base, qc, kc):
        if self.dropout <= 0.0:
            return base
        pid = qc * 2 * self.n + kc
        step = np.array([0, pid], dtype=np.int64)
        if not paddle.in_dynamic_mode():
            return base + paddle.to_tensor(step)
        return base + paddle.to_tensor(step, place=base.place)


def _pair_fwd(cfg, q_chunk, k_chunk, v_chunk, qc, kc, base_so):
    """(out, lse) of chunk qc's queries over chunk kc's keys (out in q's dtype, q chunk length),
    or None when the pair is empty."""
    plan = _pair_plan(qc, kc, cfg.c, cfg.left, cfg.right)
    if plan is None:
        return None
    c, fmt = cfg.c, cfg.fmt
    q_ = _sl(q_chunk, fmt, plan.f, c)
    k_, v_ = _sl(k_chunk, fmt, plan.e, c), _sl(v_chunk, fmt, plan.e, c)
    out, lse = _ops_lib.run_op(
        "pte_fused_attn",
        [("q", q_), ("k", k_), ("v", v_),
         ("cu_seqlens_q", cfg.cu(cfg.len_q, qc * c + plan.f, c - plan.f)),
         ("cu_seqlens_kv", cfg.cu(cfg.len_kv, kc * c + plan.e, c - plan.e)),
         ("seed_offset", cfg.seed_offset(base_so, qc, kc)), ("startend_row_indices", None)],
        _attrs(cfg, plan),
        ["out", "lse"],
    )
    return _pad_front(out, plan.f, fmt), _pad_lse_front(lse, plan.f)


def _attrs(cfg, plan):
    return [("qkv_format", cfg.fmt), ("mask_type", "padding" if cfg.len_q is not None else "no_mask"),
            ("backend", cfg.backend), ("max_seqlen_q", cfg.c - plan.f), ("max_seqlen_kv", cfg.c - plan.e),
            ("window_left", int(plan.left)), ("window_right", int(plan.right)),
            ("softmax_scale", repr(float(cfg.scale))), ("dropout", float(cfg.dropout)),
            ("deterministic", bool(cfg.deterministic))]


def _pair_bwd(cfg, q_chunk, k_chunk, v_chunk, out_chunk, lse_chunk, dout_chunk, qc, kc, base_so):
    """(dq [q chunk], dk, dv [k chunk]) contributions of one pair, or None when it is empty."""
    plan = _pair_plan(qc, kc, cfg.c, cfg.left, cfg.right)
    if plan is None:
        return None
    c, fmt, f, e = cfg.c, cfg.fmt, plan.f, plan.e
    dq, dk, dv = _ops_lib.run_op(
        "pte_attn_bwd_step",
        [("q", _sl(q_chunk, fmt, f, c)), ("k", _sl(k_chunk, fmt, e, c)), ("v", _sl(v_chunk, fmt, e, c)),
         ("out", _sl(out_chunk, fmt, f, c)), ("lse", lse_chunk[:, :, f:]),
         ("d_out", _sl(dout_chunk, fmt, f, c)),
         ("cu_seqlens_q", cfg.cu(cfg.len_q, qc * c + f, c - f)),
         ("cu_seqlens_kv", cfg.cu(cfg.len_kv, kc * c + e, c - e)),
         ("seed_offset", cfg.seed_offset(base_so, qc, kc))],
        _attrs(cfg, plan),
        ["d_q", "d_k", "d_v"],
    )
    return _pad_front(dq, f, fmt), _pad_front(dk, e, fmt), _pad_front(dv, e, fmt)


# ---- communication ------------------------------------------------------------------------------
class _Ring:
    """Send to the next rank, receive from the previous one, over a group's global ranks."""

    def __init__(self, cfg):
        self.group, self.rank, self.n = cfg.group, cfg.rank, cfg.n
        self.next = cfg.ranks[(self.rank + 1) % self.n]
        self.prev = cfg.ranks[(self.rank - 1) % self.n]
        self.async_ = cfg.on_gpu

    def start(self, tensors):
        """Begin passing `tensors` on; returns a handle for finish()."""
        recv = [paddle.empty(t.shape, dtype=t.dtype) for t in tensors]
        if self.async_:
            # NCCL: asynchronous send/recv on the communication stream, overlapping the caller's
            # compute; ordered even/odd as the blocking form, so both forms agree on pairing. With
            # an odd N the last rank and rank 0 both send first: NCCL matches by peer, not by a
            # group-wide tag, so rank 0's receive (posted after its sends) completes that chain.
            tasks = []
            order = ("send", "recv") if self.rank % 2 == 0 else ("recv", "send")
            for what in order:
                for t, r in zip(tensors, recv):
                    if what == "send":
                        tasks.append(dist.isend(t, dst=self.next, group=self.group))
                    else:
                        tasks.append(dist.irecv(r, src=self.prev, group=self.group))
            return recv, tasks
        # gloo (even N only, see _comm_form): blocking send/recv, even ranks send first, odd ranks
        # receive first, so the k-th call of rank r (send to r+1) meets the k-th call of rank r+1
        # (receive from r): gloo matches them by the group's call counter (module docstring).
        if self.rank % 2 == 0:
            for t in tensors:
                dist.send(t, dst=self.next, group=self.group)
            for r in recv:
                dist.recv(r, src=self.prev, group=self.group)
        else:
            for r in recv:
                dist.recv(r, src=self.prev, group=self.group)
            for t in tensors:
                dist.send(t, dst=self.next, group=self.group)
        return recv, []

    @staticmethod
    def finish(handle):
        recv, tasks = handle
        for t in tasks:
            t.wait()
        return recv


def _gather(cfg, x):
    """Every rank's shard of x, indexed by rank in the group."""
    if cfg.static:
        # PIR: the all_gather op concatenates the shards along axis 0 (dist.all_gather refuses a
        # group in static mode; the op takes the group's ring id).
        return paddle.split(_C_ops.all_gather(x, cfg.group.id, cfg.n), cfg.n, axis=0)
    shards = []
    dist.all_gather(shards, x, group=cfg.group)
    return shards


def _all_reduce_sum(cfg, x):
    if cfg.static:
        return _C_ops.all_reduce_(x, cfg.group.id, dist.ReduceOp.SUM)
    dist.all_reduce(x, group=cfg.group)
    return x


def _comm_form(cp_group, n, static, cp_comm_type):
    """The form that runs: `all_gather` in static mode (module docstring) and for `p2p` over gloo
    with an odd N (no ring of gloo send/recv pairs an odd number of ranks: module docstring);
    else `cp_comm_type`. Both forms compute the same pairs and fold them in the same order."""
    if static:
        return "all_gather"
    gloo = str(getattr(cp_group, "backend", "")).lower() == "gloo"
    if cp_comm_type == "p2p" and gloo and n % 2 == 1:
        return "all_gather"
    return cp_comm_type


# ---- forward and backward -------------------------------------------------------------------------
def _split2(x, fmt):
    return paddle.split(x, 2, axis=_seq_axis(fmt))


def _fold(cfg, accs, q_chunks, kv, src, base_so):
    """Merge the pairs of this rank's query chunks with source rank src's key chunks into accs."""
    k_chunks, v_chunks = _split2(kv[0], cfg.fmt), _split2(kv[1], cfg.fmt)
    for a, qc in enumerate(chunk_ids(cfg.rank, cfg.n)):
        for b, kc in enumerate(chunk_ids(src, cfg.n)):
            part = _pair_fwd(cfg, q_chunks[a], k_chunks[b], v_chunks[b], qc, kc, base_so)
            if part is None:
                continue
            out, lse = part
            if accs[a] is None:
                accs[a] = (out.astype(cfg.acc_dtype), lse)
            else:
                accs[a] = attn_merge(accs[a][0], accs[a][1], out, lse, cfg.fmt)


def _forward(cfg, q, k, v, base_so):
    q_chunks = _split2(q, cfg.fmt)
    accs = [None, None]
    sources = [(cfg.rank - i) % cfg.n for i in range(cfg.n)]
    if cfg.comm == "all_gather":
        ks, vs = _gather(cfg, k), _gather(cfg, v)
        for src in sources:
            _fold(cfg, accs, q_chunks, (ks[src], vs[src]), src, base_so)
    else:
        ring = _Ring(cfg)
        kv = (k, v)
        for i, src in enumerate(sources):
            handle = ring.start(kv) if i < cfg.n - 1 else None
            _fold(cfg, accs, q_chunks, kv, src, base_so)
            if handle is not None:
                kv = tuple(ring.finish(handle))
    outs, lses = [], []
    for a in range(2):
        if accs[a] is None:  # no key visible to the whole chunk (not reachable with causal/diag)
            o = paddle.zeros(q_chunks[a].shape[:-1] + [v.shape[-1]], dtype=cfg.acc_dtype)
            lse_shape = [cfg.b, q.shape[-2], cfg.c]
            accs[a] = (o, paddle.full(lse_shape, -math.inf, dtype="float32"))
        outs.append(accs[a][0])
        lses.append(accs[a][1])
    return _cat(outs, cfg.fmt).astype(q.dtype), paddle.concat(lses, axis=-1)


def _bwd_source(cfg, q_chunks, out_chunks, lse_chunks, dout_chunks, dq, kv, src, base_so):
    """dK/dV contributions (float32, src's shard) of this rank's queries; dq accumulated in place."""
    fmt = cfg.fmt
    k_chunks, v_chunks = _split2(kv[0], fmt), _split2(kv[1], fmt)
    dks = [None, None]
    dvs = [None, None]
    for a, qc in enumerate(chunk_ids(cfg.rank, cfg.n)):
        for b, kc in enumerate(chunk_ids(src, cfg.n)):
            g = _pair_bwd(cfg, q_chunks[a], k_chunks[b], v_chunks[b], out_chunks[a], lse_chunks[a],
                          dout_chunks[a], qc, kc, base_so)
            if g is None:
                continue
            dq[a] = dq[a] + g[0].astype(cfg.acc_dtype)
            dks[b] = g[1].astype(cfg.acc_dtype) if dks[b] is None else dks[b] + g[1].astype(cfg.acc_dtype)
            dvs[b] = g[2].astype(cfg.acc_dtype) if dvs[b] is None else dvs[b] + g[2].astype(cfg.acc_dtype)
    for b in range(2):
        if dks[b] is None:
            dks[b] = paddle.zeros(k_chunks[b].shape, dtype=cfg.acc_dtype)
            dvs[b] = paddle.zeros(v_chunks[b].shape, dtype=cfg.acc_dtype)
    return _cat(dks, fmt), _cat(dvs, fmt)


def _backward(cfg, q, k, v, out, lse, d_out, base_so):
    fmt = cfg.fmt
    q_chunks, out_chunks, dout_chunks = _split2(q, fmt), _split2(out, fmt), _split2(d_out, fmt)
    lse_chunks = paddle.split(lse, 2, axis=-1)
    dq = [paddle.zeros(t.shape, dtype=cfg.acc_dtype) for t in q_chunks]
    sources = [(cfg.rank - i) % cfg.n for i in range(cfg.n)]
    if cfg.comm == "all_gather":
        ks, vs = _gather(cfg, k), _gather(cfg, v)
        dk_all, dv_all = [], []
        for src in range(cfg.n):
            dk_s, dv_s = _bwd_source(cfg, q_chunks, out_chunks, lse_chunks, dout_chunks, dq,
                                     (ks[src], vs[src]), src, base_so)
            dk_all.append(dk_s)
            dv_all.append(dv_s)
        # gloo has no reduce_scatter: sum every shard's partials on every rank, keep ours.
        dk_sum = _all_reduce_sum(cfg, paddle.stack(dk_all))
        dv_sum = _all_reduce_sum(cfg, paddle.stack(dv_all))
        dk, dv = dk_sum[cfg.rank], dv_sum[cfg.rank]
    else:
        ring = _Ring(cfg)
        kv = (k, v)
        dkv = None
        for i, src in enumerate(sources):
            handle = ring.start(kv) if i < cfg.n - 1 else None
            dk_s, dv_s = _bwd_source(cfg, q_chunks, out_chunks, lse_chunks, dout_chunks, dq, kv,
                                     src, base_so)
            if dkv is not None:  # the accumulators of src's shard, from the ranks before us
                dk_s, dv_s = dk_s + dkv[0], dv_s + dkv[1]
            # Pass src's accumulators on; after the N-th pass each has reached its owner.
            dkv = tuple(ring.finish(ring.start([dk_s, dv_s])))
            if handle is not None:
                kv = tuple(ring.finish(handle))
        dk, dv = dkv
    return _cat(dq, fmt).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


class _ContextParallelAttn(PyLayer):
    @staticmethod
    def forward(ctx, q, k, v, cfg):
        out, lse = _forward(cfg, q, k, v, cfg.base_so)
        ctx.cfg = cfg
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, d_out, d_lse=None):
        q, k, v, out, lse = ctx.saved_tensor()
        return _backward(ctx.cfg, q, k, v, out, lse, d_out, ctx.cfg.base_so)


def _static_cp_attn(cfg, q, k, v):
    """Static mode (PIR): the all_gather form as one static_pylayer (forward and backward blocks
    written out here: the static all_gather op has no gradient).

    Two rules of Paddle's pylayer: its backward yields one gradient per value from outside that
    the forward block reads (in the order of first use), not per listed input, so every such value
    is an input here (q, k, v, then the lengths and the seed/offset: the order the forward reads
    them in; checked below) and the backward returns a gradient or None for each; and the backward
    block may read nothing from outside but the output gradients (jit.to_static's split of the
    program cannot map them), so what it needs travels through the pylayer context's
    save_for_backward, as in Paddle's own converted PyLayer."""
    extra = [t for t in (cfg.len_q, cfg.len_kv) if t is not None] + [cfg.base_so]
    args = [q, k, v] + extra
    # The same value given twice (k is v) is one input of the block: its gradients add up.
    inputs, slot = [], []
    for t in args:
        j = next((i for i, u in enumerate(inputs) if u.is_same(t)), None)
        if j is None:
            j = len(inputs)
            inputs.append(t)
        slot.append(j)
    ctx = StaticPyLayerContext()

    def with_extra(values):
        """cfg with the lengths and seed/offset replaced by `values` (in `extra`'s order)."""
        c = _Cfg(**cfg.__dict__)
        values = list(values)
        if cfg.len_q is not None:
            c.len_q = values.pop(0)
        if cfg.len_kv is not None:
            c.len_kv = values.pop(0)
        c.base_so = values.pop(0)
        return c

    def forward(*block_inputs):
        q_, k_, v_, *extra_ = (block_inputs[j] for j in slot)
        out, lse = _forward(with_extra(extra_), q_, k_, v_, extra_[-1])
        ctx.save_for_backward(q_, k_, v_, out, lse, *extra_)
        return out, lse

    def backward(d_out, d_lse=None):
        q_, k_, v_, out, lse, *extra_ = ctx.saved_tensor()
        c = with_extra(extra_)
        grads = [None] * len(inputs)
        for j, g in zip(slot, _backward(c, q_, k_, v_, out, lse, d_out, c.base_so)):
            grads[j] = g if grads[j] is None else grads[j] + g
        return tuple(grads)

    out, lse = paddle.static.nn.static_pylayer(forward, inputs, backward)
    used = get_used_external_value(out.get_defining_op())
    if len(used) < len(inputs) or not all(a.is_same(b) for a, b in zip(used, inputs)):
        raise RuntimeError(  # a Paddle change in how pylayer gradients are matched to inputs
            f"context_parallel_attn (static): the pylayer's forward block reads {len(used)} outside "
            f"values, expected its {len(inputs)} inputs first, in order"
        )
    lse.stop_gradient = True
    return out, lse


@unified  # builds its own static graph: to_static calls it as it is (no AST rewrite, no SOT trace)
def context_parallel_attn(q, k, v, *, cp_group, cp_global_ranks=None, cp_comm_type="p2p",
                          cu_seqlens_q=None, cu_seqlens_kv=None, qkv_format="bshd",
                          attn_mask_type="causal", window_size=None, softmax_scale=None,
                          dropout=0.0, training=True, deterministic=False,
                          return_softmax_lse=False, backend="auto"):
    """Attention of the whole sequence from this rank's shards of q, k, v (SPEC §11).

    q ``[b, 2c, h, d]`` (bshd) or ``[2c, b, h, d]`` (sbhd): chunks r and 2N-1-r of the sequence
    (get_batch_on_this_cp_rank); k, v the same with h_kv heads. cu_seqlens (padding types) are
    those of the whole sequences, the same on every rank. Returns this rank's shard of the output
    (and of the lse, float32 ``[b, h, 2c]``, with ``return_softmax_lse=True``).

    Static mode (PIR, ``paddle.enable_static`` / ``paddle.jit.to_static``) runs
    ``cp_comm_type="all_gather"``; ``"p2p"`` is mapped to it there (the same pairs merged in the
    same order: the same result; K and V of the whole sequence on every rank). Static mode needs
    the shapes of q, k, v known when the program is built. ``"p2p"`` over gloo with an odd N is
    mapped to ``"all_gather"`` too (gloo's send/recv cannot form an odd ring; module docstring).
    """
    static = not paddle.in_dynamic_mode()
    if static and not in_pir_mode():
        raise ValueError(
            "context parallelism in static mode needs the PIR program (FLAGS_enable_pir_api=1, "
            "Paddle's default); the legacy static program is not supported"
        )
    ranks = check_cp_args(cp_group, cp_global_ranks, cp_comm_type)
    if cp_group is None:
        raise ValueError("cp_group=None: context_parallel_attn needs a paddle.distributed group")
    n, rank = group_size_rank(cp_group)
    if qkv_format not in CP_FORMATS:
        raise ValueError(f"qkv_format={qkv_format!r}: context parallelism supports 'bshd' and 'sbhd'")
    check_mask_type(attn_mask_type)
    if attn_mask_type not in CP_MASK_TYPES:
        raise ValueError(
            f"attn_mask_type={attn_mask_type!r}: context parallelism supports "
            f"{', '.join(map(repr, CP_MASK_TYPES))}"
        )
    if backend == "unfused":
        raise ValueError("backend='unfused': context parallelism runs on the fused op (auto, flash, cudnn, cpu)")
    left, right = check_set_window_size(attn_mask_type, window_size)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not _is_tensor(t) or len(t.shape) != 4:
            raise ValueError(f"{name}: expected a rank-4 paddle.Tensor ({qkv_format})")
        if static and any(int(x) < 0 for x in t.shape):
            raise ValueError(
                f"{name} has shape {list(t.shape)}: context parallelism in static mode needs every "
                "dimension known when the program is built (no -1 / None dimensions)"
            )
    ax = _seq_axis(qkv_format)
    s_loc = int(q.shape[ax])
    for name, t in (("k", k), ("v", v)):
        if int(t.shape[ax]) != s_loc:
            raise ValueError(
                f"{name} has shape {list(t.shape)}: its shard length must equal q's {s_loc} "
                "(context parallelism is self-attention over one sequence)"
            )
    if s_loc % 2 != 0 or s_loc == 0:
        raise ValueError(
            f"q has shape {list(q.shape)}: the global sequence length {s_loc * n} must be divisible "
            f"by 2N = {2 * n} (this rank's shard holds two equal chunks)"
        )
    padding = attn_mask_type.startswith("padding")
    if padding and (cu_seqlens_q is None and cu_seqlens_kv is None):
        raise ValueError(f"attn_mask_type={attn_mask_type!r} needs cu_seqlens_q/cu_seqlens_kv of the whole sequences")
    if not padding and (cu_seqlens_q is not None or cu_seqlens_kv is not None):
        raise ValueError(f"cu_seqlens_q/cu_seqlens_kv with attn_mask_type={attn_mask_type!r}: only padding types take them")
    if padding:
        cu_seqlens_kv = cu_seqlens_q if cu_seqlens_kv is None else cu_seqlens_kv
        cu_seqlens_q = cu_seqlens_kv if cu_seqlens_q is None else cu_seqlens_q
    b = int(q.shape[0 if qkv_format == "bshd" else 1])
    d = int(q.shape[-1])
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)
    p = float(dropout) if training else 0.0

    def lengths(cu):
        if cu is None:
            return None
        cu = cu.astype("int64")
        if int(cu.shape[0]) != b + 1:
            raise ValueError(f"cu_seqlens has shape {list(cu.shape)}: must be [{b + 1}] (batch {b} + 1)")
        return cu[1:] - cu[:-1]

    on_gpu = not static and "gpu" in str(q.place).lower()
    comm = _comm_form(cp_group, n, static, cp_comm_type)
    cfg = _Cfg(group=cp_group, ranks=ranks, n=n, rank=rank, comm=comm, static=static, fmt=qkv_format,
               c=s_loc // 2, b=b, left=left, right=right, scale=scale, dropout=p,
               deterministic=bool(deterministic), backend=backend, len_q=lengths(cu_seqlens_q),
               len_kv=lengths(cu_seqlens_kv), acc_dtype=paddle.float32, on_gpu=on_gpu)
    # One (seed, offset) per call from Paddle's generator (as fused_attn draws it); each pair
    # advances the offset by its index.
    cfg.base_so = _seed_offset(p, q)
    # float64 runs its steps in float32: the lse that carries every merge is float32 (SPEC §8),
    # so float64 steps would buy no accuracy; and the CPU float64 backward recomputes its row
    # statistics over the keys of the call (docs/context_parallel.md), not the ring's final lse.
    wide = q.dtype == paddle.float64
    if wide:
        q, k, v = q.astype("float32"), k.astype("float32"), v.astype("float32")
    if static:
        out, lse = _static_cp_attn(cfg, q, k, v)
    else:
        out, lse = _ContextParallelAttn.apply(q, k, v, cfg)
    if wide:
        out = out.astype("float64")
    return (out, lse) if return_softmax_lse else out
