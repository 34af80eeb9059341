"""One rank of the context-parallel tests (tests/test_cp.py launches N of these with Paddle's
gloo backend on the CPU). Every rank runs every case of CASES on its shard, compares its output
and gradient shards with the float64 oracle (tests/reference.py) over the whole sequence, and
writes one JSON line per case to $CP_OUT/rank<r>.jsonl. Not a test module itself.

Run by hand: see launch() in tests/test_cp.py (environment PADDLE_TRAINER_ID, ...).
"""

import json
import os
import sys
import traceback
import zlib

import numpy as np

# (name, options). Every case: b=2, h=4 query heads, head dim 16, chunk length 4 (S = 8N).
CASES = []
for _fmt in ("bshd", "sbhd"):
    for _mask, _win in (("no_mask", None), ("causal", None), ("causal", (5, 0)), ("padding", None),
                        ("padding_causal", None), ("padding_causal", (6, 0))):
        for _comm in ("p2p", "all_gather"):
            _w = "" if _win is None else f"-w{_win[0]}"
            CASES.append((f"{_fmt}-{_mask}{_w}-{_comm}",
                          dict(fmt=_fmt, mask=_mask, window=_win, comm=_comm, h_kv=2)))
CASES += [
    ("bshd-no_mask-win3_2-p2p", dict(fmt="bshd", mask="no_mask", window=(3, 2), comm="p2p", h_kv=2)),
    ("bshd-causal-mqa-p2p", dict(fmt="bshd", mask="causal", window=None, comm="p2p", h_kv=1)),
    ("sbhd-causal-mha-all_gather", dict(fmt="sbhd", mask="causal", window=None, comm="all_gather", h_kv=4)),
    ("bshd-causal-dropout-p2p", dict(fmt="bshd", mask="causal", window=None, comm="p2p", h_kv=2, dropout=0.25)),
    ("sbhd-no_mask-dropout-all_gather", dict(fmt="sbhd", mask="no_mask", window=None, comm="all_gather", h_kv=2, dropout=0.25)),
    ("bshd-causal-deterministic-p2p", dict(fmt="bshd", mask="causal", window=None, comm="p2p", h_kv=2, deterministic=True)),
    ("bshd-causal-float64-p2p", dict(fmt="bshd", mask="causal", window=None, comm="p2p", h_kv=2, dtype="float64")),
    ("layer-dpa-padding_causal-p2p", dict(fmt="bshd", mask="padding_causal", window=None, comm="p2p", h_kv=2, layer="dpa")),
    ("layer-transformer-causal-p2p", dict(fmt="bshd", mask="causal", window=None, comm="p2p", layer="transformer")),
    # Static mode (PIR): a Program run by an Executor with static.gradients, and jit.to_static of
    # the layer; p2p maps to all_gather there. Also compared bit for bit with the dygraph
    # all_gather result of the same shards ("dygraph_bitwise").
    ("static-bshd-causal-w5-all_gather", dict(fmt="bshd", mask="causal", window=(5, 0), comm="all_gather", h_kv=2, static="program")),
    ("static-sbhd-padding_causal-p2p", dict(fmt="sbhd", mask="padding_causal", window=None, comm="p2p", h_kv=2, static="program")),
    ("static-bshd-no_mask-mqa-float64-p2p", dict(fmt="bshd", mask="no_mask", window=None, comm="p2p", h_kv=1, dtype="float64", static="program")),
    ("static-jit-dpa-padding_causal-p2p", dict(fmt="bshd", mask="padding_causal", window=None, comm="p2p", h_kv=2, layer="dpa", static="jit")),
    ("static-sot-transformer-causal-all_gather", dict(fmt="bshd", mask="causal", window=None, comm="all_gather", layer="transformer", static="sot")),
]
CASE_NAMES = [name for name, _ in CASES]
B, H, D, CHUNK = 2, 4, 16, 4
# SPEC §11: float32 on the CPU within 1e-5 relative (to the largest magnitude of the reference).
RTOL = 1e-5


def _rel_err(actual, ref):
    actual = np.asarray(actual, dtype=np.float64)
    return float(np.abs(actual - ref).max() / max(1.0, float(np.abs(ref).max())))


def run_case(name, o, g, rank, n):
    import paddle

    import reference
    from paddle_te import distributed as ptd
    from paddle_te import ops

    fmt, mask = o["fmt"], o["mask"]
    s = 2 * n * CHUNK
    sd = 1 if fmt == "bshd" else 0
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # the same inputs on every rank

    def shape(h):
        return [B, s, h, D] if fmt == "bshd" else [s, B, h, D]

    if o.get("layer") == "transformer":
        return run_transformer(o, g, rank, n, rng)
    h_kv = o["h_kv"]
    q, k, v = (rng.standard_normal(shape(h)) for h in (H, h_kv, h_kv))
    d_out = rng.standard_normal(shape(H))
    lengths = [s - 3, s - 11] if mask.startswith("padding") else None
    cu = None if lengths is None else np.array([0, lengths[0], lengths[0] + lengths[1]], dtype=np.int32)
    dtype = o.get("dtype", "float32")
    p = o.get("dropout", 0.0)

    def shard(x):
        t = paddle.to_tensor(x).astype(dtype) if isinstance(x, np.ndarray) else x
        return ptd.get_batch_on_this_cp_rank(t, sd, g)

    def run_cp(seed):
        if o.get("static") == "program":
            return run_static_program(o, g, [shard(x).numpy() for x in (q, k, v, d_out)], cu, dtype)
        qs, ks, vs = shard(q), shard(k), shard(v)
        for t in (qs, ks, vs):
            t.stop_gradient = False
        paddle.seed(seed)
        kw = dict(qkv_format=fmt, attn_mask_type=mask, window_size=o["window"])
        if o.get("layer") == "dpa":
            layer = paddle_te_nn().DotProductAttention(
                H, D, num_gqa_groups=h_kv, attn_mask_type=mask, window_size=o["window"],
                qkv_format=fmt, attention_dropout=p, cp_group=g, cp_comm_type=o["comm"])
            full_mask = np.arange(s)[None, :] >= np.array(lengths)[:, None]  # True = padding
            fn = paddle.jit.to_static(layer, full_graph=True) if o.get("static") == "jit" else layer
            out = fn(qs, ks, vs, paddle.to_tensor(full_mask[:, None, None, :]))
        else:
            out = ptd.context_parallel_attn(
                qs, ks, vs, cp_group=g, cp_comm_type=o["comm"],
                cu_seqlens_q=None if cu is None else paddle.to_tensor(cu), dropout=p,
                deterministic=o.get("deterministic", False), **kw)
        (out * shard(d_out)).sum().backward()
        return [x.numpy() for x in (out, qs.grad, ks.grad, vs.grad)]

    seed = 1234 + rank
    got = run_cp(seed)
    result = {}
    if o.get("static"):
        # The dygraph all_gather path on the same shards: static mode runs the same kernels in the
        # same order, so the results agree bit for bit.
        dyn = run_cp_dygraph(o, g, [shard(x) for x in (q, k, v, d_out)], cu, fmt, mask)
        result["dygraph_bitwise"] = all(np.array_equal(x, y) for x, y in zip(got, dyn))

    keep = None
    if p > 0.0:
        # The ring's dropout mask: pair (query chunk a, key chunk kc) uses the (seed, offset) the
        # owner of chunk a drew, offset advanced by a * 2N + kc, chunk-local indices.
        paddle.seed(seed)
        so = ops._seed_offset(p, paddle.zeros([1])).numpy()
        all_so = []
        import paddle.distributed as dist
        dist.all_gather(all_so, paddle.to_tensor(so), group=g)
        keep = np.zeros((B, H, s, s), dtype=bool)
        for r2 in range(n):
            sd2, off2 = (int(x) for x in all_so[r2].numpy())
            for a in ptd.chunk_ids(r2, n):
                for kc in range(2 * n):
                    keep[:, :, a * CHUNK:(a + 1) * CHUNK, kc * CHUNK:(kc + 1) * CHUNK] = \
                        reference.dropout_keep_mask(sd2, off2 + a * 2 * n + kc, p, B, H, CHUNK, CHUNK)
        again = run_cp(seed)  # repeatable under paddle.seed
        result["repeat_bitwise"] = all(np.array_equal(x, y) for x, y in zip(got, again))
    if o.get("deterministic"):
        again = run_cp(seed)
        result["repeat_bitwise"] = all(np.array_equal(x, y) for x, y in zip(got, again))

    kw = dict(qkv_format=fmt, cu_seqlens_q=cu, cu_seqlens_kv=cu, attn_mask_type=mask,
              window_size=o["window"], dropout_p=p, dropout_keep=keep)
    ref_out, _ = reference.attention_fwd(q, k, v, **kw)
    ref_grads = reference.attention_bwd(q, k, v, d_out, **kw)

    def ref_shard(x):
        return shard(paddle.to_tensor(x)).numpy()

    for label, a, r in zip(("out", "dq", "dk", "dv"), got, (ref_out, *ref_grads)):
        result[label] = _rel_err(a, ref_shard(r))
    # gather_from_cp_ranks restores the whole output on every rank.
    full = ptd.gather_from_cp_ranks(paddle.to_tensor(got[0]), sd, g).numpy()
    result["gathered_out"] = _rel_err(full, ref_out)
    return result


def run_cp_dygraph(o, g, shards, cu, fmt, mask):
    """Output and gradients of context_parallel_attn (all_gather) in dygraph, for the static cases."""
    import paddle

    from paddle_te import distributed as ptd

    qs, ks, vs = (x.detach() for x in shards[:3])
    for t in (qs, ks, vs):
        t.stop_gradient = False
    out = ptd.context_parallel_attn(
        qs, ks, vs, cp_group=g, cp_comm_type="all_gather", qkv_format=fmt, attn_mask_type=mask,
        window_size=o["window"], cu_seqlens_q=None if cu is None else paddle.to_tensor(cu))
    (out * shards[3]).sum().backward()
    return [x.numpy() for x in (out, qs.grad, ks.grad, vs.grad)]


def run_static_program(o, g, shards, cu, dtype):
    """context_parallel_attn in a static (PIR) Program: output and static.gradients of q, k, v."""
    import paddle

    from paddle_te import distributed as ptd

    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            names = ("q", "k", "v", "d_out")
            q, k, v, d_out = (paddle.static.data(nm, list(x.shape), dtype) for nm, x in zip(names, shards))
            for t in (q, k, v):
                t.stop_gradient = False
            cu_t = None if cu is None else paddle.static.data("cu", [len(cu)], "int32")
            out = ptd.context_parallel_attn(
                q, k, v, cp_group=g, cp_comm_type=o["comm"], qkv_format=o["fmt"],
                attn_mask_type=o["mask"], window_size=o["window"], cu_seqlens_q=cu_t)
            grads = paddle.static.gradients([(out * d_out).sum()], [q, k, v])
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        feed = {nm: x.astype(dtype) for nm, x in zip(names, shards)}
        if cu is not None:
            feed["cu"] = cu
        return [np.asarray(x) for x in exe.run(main, feed=feed, fetch_list=[out] + grads)]
    finally:
        paddle.disable_static()


def paddle_te_nn():
    import paddle_te.nn

    return paddle_te.nn


def run_transformer(o, g, rank, n, rng):
    """TransformerLayer with set_context_parallel_group on shards vs the same layer on the whole
    sequence in one process (Paddle float32 both; the oracle covers the attention core)."""
    import paddle

    from paddle_te import distributed as ptd

    s = 2 * n * CHUNK
    hidden = H * D
    paddle.seed(7)  # same weights on every rank
    layer = paddle_te_nn().TransformerLayer(hidden, 2 * hidden, H, num_gqa_groups=2,
                                            hidden_dropout=0.0, attention_dropout=0.0)
    x = paddle.to_tensor(rng.standard_normal([B, s, hidden]).astype("float32"))
    x.stop_gradient = False
    ref = layer(x)
    ref.sum().backward()
    ref_dx = x.grad.numpy()
    layer.set_context_parallel_group(g, cp_comm_type=o["comm"])
    xs = ptd.get_batch_on_this_cp_rank(x.detach(), 1, g)
    xs.stop_gradient = False
    # static="sot": paddle.jit.to_static's default (SOT) mode over the whole layer.
    out = (paddle.jit.to_static(layer) if o.get("static") == "sot" else layer)(xs)
    out.sum().backward()
    shard = lambda a: ptd.get_batch_on_this_cp_rank(paddle.to_tensor(a), 1, g).numpy()  # noqa: E731
    return {"out": _rel_err(out.numpy(), shard(ref.numpy())), "dx": _rel_err(xs.grad.numpy(), shard(ref_dx))}


def main():
    import paddle
    import paddle.distributed as dist

    paddle.set_device("cpu")
    dist.init_parallel_env()
    rank, n = dist.get_rank(), dist.get_world_size()
    # The world group: with gloo, new_group over 4 ranks fails to connect here (Paddle 3.3.1).
    g = dist.get_group(0)
    only = os.environ.get("CP_CASES")
    out_path = os.path.join(os.environ["CP_OUT"], f"rank{rank}.jsonl")
    with open(out_path, "w") as f:
        for name, o in CASES:
            if only and name not in only.split(","):
                continue
            try:
                res = run_case(name, o, g, rank, n)
            except Exception:  # noqa: BLE001 - reported to the test, which fails the case
                res = {"error": traceback.format_exc()}
            f.write(json.dumps({"case": name, **res}) + "\n")
            f.flush()
    dist.barrier(group=g)


if __name__ == "__main__":
    sys.exit(main())
