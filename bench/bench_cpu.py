"""CPU benchmark: paddle_te fused attention vs the same computation in Paddle's own CPU ops.

The peer is what a Paddle user writes without paddle_te: matmul -> softmax -> matmul (with a
causal mask added as -inf where needed), forward and backward through Paddle's autograd. Both run
on the same inputs in the same process; the table reports medians and the ratio.

    python bench/bench_cpu.py [--b 2 --h 8 --s 1024 --d 64] [--repeats 5] [--csv out.csv]
"""
import argparse
import csv
import pathlib
import statistics
import sys
import time

import numpy as np
import paddle

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout
import paddle_te  # noqa: E402


def paddle_attention(q, k, v, causal):
    """Unfused attention written with Paddle ops; q, k, v [b, s, h, d]."""
    d = q.shape[-1]
    qt, kt, vt = (x.transpose([0, 2, 1, 3]) for x in (q, k, v))
    scores = paddle.matmul(qt, kt, transpose_y=True) * (1.0 / d**0.5)
    if causal:
        s_q, s_kv = scores.shape[-2:]
        mask = paddle.triu(paddle.full([s_q, s_kv], float("-inf"), dtype=scores.dtype), 1)
        scores = scores + mask
    probs = paddle.nn.functional.softmax(scores, axis=-1)
    return paddle.matmul(probs, vt).transpose([0, 2, 1, 3])


def paddle_te_attention(q, k, v, causal):
    return paddle_te.ops.fused_attn(q, k, v, attn_mask_type="causal" if causal else "no_mask",
                                    backend="cpu")


def time_fwd_bwd(fn, q, k, v, causal, repeats):
    """Median seconds of the forward alone and of forward + backward."""
    grad = paddle.to_tensor(np.random.standard_normal(q.shape).astype("float32"))
    fwd, total = [], []
    for _ in range(repeats + 1):  # the first run warms up
        t0 = time.perf_counter()
        out = fn(q, k, v, causal)
        t1 = time.perf_counter()
        paddle.autograd.backward([out], [grad])
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        total.append(t2 - t0)
        for x in (q, k, v):
            x.clear_gradient()
    return statistics.median(fwd[1:]), statistics.median(total[1:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--b", type=int, default=2)
    ap.add_argument("--h", type=int, default=8)
    ap.add_argument("--s", type=int, default=1024)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args(argv)

    paddle.set_device("cpu")
    rng = np.random.default_rng(0)
    shape = [args.b, args.s, args.h, args.d]
    rows = []
    for causal in (False, True):
        q, k, v = (paddle.to_tensor(rng.standard_normal(shape).astype("float32"),
                                    stop_gradient=False) for _ in range(3))
        ours_f, ours_t = time_fwd_bwd(paddle_te_attention, q, k, v, causal, args.repeats)
        peer_f, peer_t = time_fwd_bwd(paddle_attention, q, k, v, causal, args.repeats)
        rows.append({
            "case": f"b={args.b} h={args.h} s={args.s} d={args.d} {'causal' if causal else 'full'}",
            "paddle_te_fwd_ms": ours_f * 1e3, "paddle_fwd_ms": peer_f * 1e3,
            "paddle_te_fwd_bwd_ms": ours_t * 1e3, "paddle_fwd_bwd_ms": peer_t * 1e3,
            "ratio_fwd_bwd": ours_t / peer_t,
        })

    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(f"{'case':40s} {'pte fwd':>9s} {'paddle fwd':>11s} {'pte f+b':>9s} "
          f"{'paddle f+b':>11s} {'pte/paddle':>10s}")
    for r in rows:
        print(f"{r['case']:40s} {r['paddle_te_fwd_ms']:8.1f}ms {r['paddle_fwd_ms']:10.1f}ms "
              f"{r['paddle_te_fwd_bwd_ms']:8.1f}ms {r['paddle_fwd_bwd_ms']:10.1f}ms "
              f"{r['ratio_fwd_bwd']:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
