"""Every paddle_te.ops function in dygraph, static mode (PIR: Program + Executor, static.gradients,
optimizer.minimize), paddle.jit.to_static (full graph and SOT), paddle.jit.save -> paddle.jit.load
and paddle.inference, against the dygraph result of the same op (SPEC §3). Also: paddle.no_grad()
builds no backward graph, and dropout draws from Paddle's generator.

Each case runs in subprocesses (this file is also the worker: `python test_static_mode.py CASE
STAGE DIR`), so a crash in Paddle or in an op fails the test instead of killing pytest. The
first process runs dygraph, static, training, to_static and jit.save; a fresh second process
imports paddle_te and loads the saved model (what users of a saved model do).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 300


# ------------------------------------------------------------------------------------------------
# cases: inputs (name, shape, dtype, saved-model spec shape, differentiable) and the call
# ------------------------------------------------------------------------------------------------
def _cases():
    import paddle_te.ops as ops

    f32, i32 = "float32", "int32"
    return {
        "scaled_softmax": dict(
            inputs=[("x", [2, 3, 5, 7], f32, [None, 3, 5, 7], True)],
            call=lambda t: [ops.scaled_softmax(t["x"], scale=0.7)],
        ),
        "scaled_masked_softmax": dict(
            inputs=[("x", [2, 3, 5, 7], f32, [None, 3, 5, 7], True),
                    ("mask", [2, 1, 5, 7], "bool", [None, 1, 5, 7], False)],
            call=lambda t: [ops.scaled_masked_softmax(t["x"], t["mask"], scale=0.5)],
        ),
        "scaled_upper_triang_masked_softmax": dict(
            inputs=[("x", [2, 3, 6, 6], f32, [None, 3, 6, 6], True)],
            call=lambda t: [ops.scaled_upper_triang_masked_softmax(t["x"], scale=1.3)],
        ),
        "scaled_aligned_causal_masked_softmax": dict(
            inputs=[("x", [2, 3, 4, 7], f32, [None, 3, 4, 7], True)],
            call=lambda t: [ops.scaled_aligned_causal_masked_softmax(t["x"], scale=0.9)],
        ),
        "fused_attn_causal_window": dict(
            inputs=[("q", [2, 5, 4, 8], f32, [None, 5, 4, 8], True),
                    ("k", [2, 6, 2, 8], f32, [None, 6, 2, 8], True),
                    ("v", [2, 6, 2, 8], f32, [None, 6, 2, 8], True)],
            call=lambda t: list(ops.fused_attn(t["q"], t["k"], t["v"], attn_mask_type="causal_bottom_right",
                                               window_size=(3, 0), return_softmax_lse=True)),
        ),
        "fused_attn_padding_sbhd": dict(
            inputs=[("q", [5, 2, 4, 8], f32, [5, None, 4, 8], True),
                    ("k", [6, 2, 4, 8], f32, [6, None, 4, 8], True),
                    ("v", [6, 2, 4, 8], f32, [6, None, 4, 8], True),
                    ("cu_q", "cu_q", i32, [None], False), ("cu_kv", "cu_kv", i32, [None], False)],
            call=lambda t: [ops.fused_attn(t["q"], t["k"], t["v"], cu_seqlens_q=t["cu_q"], cu_seqlens_kv=t["cu_kv"],
                                           max_seqlen_q=5, max_seqlen_kv=6, qkv_format="sbhd",
                                           attn_mask_type="padding_causal")],
        ),
        "fused_attn_thd": dict(
            inputs=[("q", [9, 4, 8], f32, [None, 4, 8], True),
                    ("k", [11, 2, 8], f32, [None, 2, 8], True),
                    ("v", [11, 2, 8], f32, [None, 2, 8], True),
                    ("cu_q", "cu_q_thd", i32, [None], False), ("cu_kv", "cu_kv_thd", i32, [None], False)],
            call=lambda t: list(ops.fused_attn(t["q"], t["k"], t["v"], cu_seqlens_q=t["cu_q"], cu_seqlens_kv=t["cu_kv"],
                                               max_seqlen_q=5, max_seqlen_kv=6, qkv_format="thd",
                                               attn_mask_type="causal", return_softmax_lse=True)),
        ),
        "fused_attn_unfused_backend": dict(
            inputs=[("q", [2, 5, 4, 8], f32, [None, 5, 4, 8], True),
                    ("k", [2, 6, 4, 8], f32, [None, 6, 4, 8], True),
                    ("v", [2, 6, 4, 8], f32, [None, 6, 4, 8], True),
                    ("cu_q", "cu_q", i32, [None], False), ("cu_kv", "cu_kv", i32, [None], False)],
            call=lambda t: list(ops.fused_attn(t["q"], t["k"], t["v"], cu_seqlens_q=t["cu_q"], cu_seqlens_kv=t["cu_kv"],
                                               attn_mask_type="padding", window_size=(2, 1), backend="unfused",
                                               return_softmax_lse=True)),
        ),
        "flashmask_attention": dict(
            inputs=[("q", [2, 6, 4, 8], f32, [None, 6, 4, 8], True),
                    ("k", [2, 6, 2, 8], f32, [None, 6, 2, 8], True),
                    ("v", [2, 6, 2, 8], f32, [None, 6, 2, 8], True),
                    ("se", "fm_se", i32, [None, 2, 6, 2], False)],
            call=lambda t: list(ops.flashmask_attention(t["q"], t["k"], t["v"], t["se"], causal=True,
                                                        return_softmax_lse=True)),
        ),
        "flashmask_attention_block_mask": dict(
            inputs=[("q", [2, 6, 4, 8], f32, [None, 6, 4, 8], True),
                    ("k", [2, 6, 2, 8], f32, [None, 6, 2, 8], True),
                    ("v", [2, 6, 2, 8], f32, [None, 6, 2, 8], True),
                    ("se", "fm_se", i32, [None, 2, 6, 2], False),
                    ("bm", "fm_bm", i32, [None, 2, 1, 1], False)],
            call=lambda t: list(ops.flashmask_attention(t["q"], t["k"], t["v"], t["se"], causal=True,
                                                        return_softmax_lse=True, block_mask=t["bm"])),
        ),
        "mask_to_cu_seqlens": dict(
            inputs=[("mask", "pad_mask", "bool", [None, 1, 1, 7], False)],
            call=lambda t: list(ops.mask_to_cu_seqlens(t["mask"])),
        ),
        "mask_to_cu_seqlens_cross": dict(
            inputs=[("mask", "pad_mask", "bool", [None, 1, 1, 7], False),
                    ("mask_kv", "pad_mask_kv", "bool", [None, 1, 1, 5], False)],
            call=lambda t: list(ops.mask_to_cu_seqlens(t["mask"], t["mask_kv"])),
        ),
    }


CASE_NAMES = [
    "scaled_softmax",
    "scaled_masked_softmax",
    "scaled_upper_triang_masked_softmax",
    "scaled_aligned_causal_masked_softmax",
    "fused_attn_causal_window",
    "fused_attn_padding_sbhd",
    "fused_attn_thd",
    "fused_attn_unfused_backend",
    "flashmask_attention",
    "flashmask_attention_block_mask",
    "mask_to_cu_seqlens",
    "mask_to_cu_seqlens_cross",
]

# Fixed integer/bool inputs (shape strings above name one of these).
_FIXED = {
    "cu_q": np.array([0, 3, 5], np.int32),  # lengths 3, 2
    "cu_kv": np.array([0, 6, 10], np.int32),  # lengths 6, 4
    "cu_q_thd": np.array([0, 4, 9], np.int32),  # lengths 4, 5
    "cu_kv_thd": np.array([0, 6, 11], np.int32),  # lengths 6, 5
    "pad_mask": np.array([[[[0, 0, 0, 1, 1, 1, 1]]], [[[0, 0, 0, 0, 0, 0, 1]]]], bool),
    "pad_mask_kv": np.array([[[[0, 0, 1, 1, 1]]], [[[0, 0, 0, 0, 0]]]], bool),
    # FlashMask, causal C=2, one mask per kv head: documents [0, 3) and [3, 6) (LTS = document
    # end, LTE = 6) on head 0; on head 1 rows [1, 3) masked in every column (rows that see nothing).
    "fm_se": np.array([[[[3, 6]] * 3 + [[6, 6]] * 3, [[1, 3]] * 6]] * 2, np.int32),
    # Paddle's block mask over those bounds: kv head 1 of sequence 0 masked whole (1 = keep).
    "fm_bm": np.array([[[[1]], [[0]]], [[[1]], [[1]]]], np.int32),
}


def _make_feed(case):
    rng = np.random.default_rng(sum(map(ord, case)))
    feed = {}
    for name, shape, dtype, _, _ in _cases()[case]["inputs"]:
        if isinstance(shape, str):
            feed[name] = _FIXED[shape]
        elif dtype == "bool":
            m = rng.random(shape) < 0.3
            m[-1, 0, 2, :] = True  # a fully masked row (output 0)
            m[0, 0, 1, :] = False  # a row that sees every key
            feed[name] = m
        else:
            feed[name] = rng.standard_normal(shape).astype(dtype)
    return feed


def _grad_weights(shape, seed=7):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _differentiable(case):
    return [name for name, _, _, _, g in _cases()[case]["inputs"] if g]


def _assert_close(actual, expected, what, tol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if expected.dtype.kind in "fc":
        both_inf = np.isinf(actual) & np.isinf(expected) & (np.sign(actual) == np.sign(expected))
        a = np.where(both_inf, 0, actual)
        e = np.where(both_inf, 0, expected)
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol, err_msg=what)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)


# ------------------------------------------------------------------------------------------------
# worker stages (run in a subprocess)
# ------------------------------------------------------------------------------------------------
def _net_classes():
    import paddle

    class _Base(paddle.nn.Layer):
        """A parameter in front of the first differentiable input, then the op."""

        def __init__(self, names, diff, call):
            super().__init__()
            self.names, self.diff, self.call = names, diff, call
            self.p = self.create_parameter([1], default_initializer=paddle.nn.initializer.Constant(1.0))

        def run(self, args):
            t = dict(zip(self.names, args))
            if self.diff:
                t[self.diff[0]] = t[self.diff[0]] * self.p
            return tuple(self.call(t))

    class Net1(_Base):
        def forward(self, a):
            return self.run([a])

    class Net2(_Base):
        def forward(self, a, b):
            return self.run([a, b])

    class Net3(_Base):
        def forward(self, a, b, c):
            return self.run([a, b, c])

    class Net4(_Base):
        def forward(self, a, b, c, d):
            return self.run([a, b, c, d])

    class Net5(_Base):
        def forward(self, a, b, c, d, e):
            return self.run([a, b, c, d, e])

    return {1: Net1, 2: Net2, 3: Net3, 4: Net4, 5: Net5}


def _stage_build(case, outdir):
    import paddle

    import paddle_te  # noqa: F401

    paddle.set_device("cpu")
    spec = _cases()[case]
    call = spec["call"]
    feed = _make_feed(case)
    diff = _differentiable(case)

    # -- dygraph: reference outputs and gradients of sum(out0 * W)
    def dygraph_run(fn):
        t = {}
        for name, arr in feed.items():
            t[name] = paddle.to_tensor(arr)
            t[name].stop_gradient = name not in diff
        outs = fn(t)
        grads = []
        if diff:
            w = paddle.to_tensor(_grad_weights(outs[0].shape))
            grads = paddle.grad([(outs[0] * w).sum()], [t[n] for n in diff])
        return [o.numpy() for o in outs], [g.numpy() for g in grads]

    ref_outs, ref_grads = dygraph_run(call)
    print("dygraph ok", flush=True)

    # -- no_grad: no backward graph
    with paddle.no_grad():
        t = {}
        for name, arr in feed.items():
            t[name] = paddle.to_tensor(arr)
            t[name].stop_gradient = name not in diff
        outs = call(t)
    assert all(o.stop_gradient for o in outs), "paddle.no_grad(): an output still requires grad"
    print("no_grad ok", flush=True)

    # -- static mode (PIR): outputs and static.gradients
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            t = {}
            for name, shape, dtype, _, g in spec["inputs"]:
                shp = list(feed[name].shape)
                t[name] = paddle.static.data(name, shp, dtype)
                t[name].stop_gradient = not g
            outs = call(t)
            fetch = list(outs)
            if diff:
                w = paddle.to_tensor(_grad_weights(ref_outs[0].shape))
                loss = (outs[0] * w).sum()
                fetch += paddle.static.gradients([loss], [t[n] for n in diff])
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        res = exe.run(main, feed=feed, fetch_list=fetch)
        for i, o in enumerate(ref_outs):
            _assert_close(res[i], o, f"static output {i}")
        for i, g in enumerate(ref_grads):
            _assert_close(res[len(ref_outs) + i], g, f"static grad of {diff[i]}")
        print("static ok", flush=True)

        # -- static training: a parameter in front of the op, optimizer.minimize
        if diff:
            main, startup = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(main, startup):
                t = {}
                for name, shape, dtype, _, g in spec["inputs"]:
                    t[name] = paddle.static.data(name, list(feed[name].shape), dtype)
                    t[name].stop_gradient = not g
                p = paddle.create_parameter([1], "float32", default_initializer=paddle.nn.initializer.Constant(1.0))
                t[diff[0]] = t[diff[0]] * p
                outs = call(t)
                loss = (outs[0] * paddle.to_tensor(_grad_weights(ref_outs[0].shape))).sum()
                paddle.optimizer.SGD(learning_rate=0.01).minimize(loss)
            exe = paddle.static.Executor(paddle.CPUPlace())
            exe.run(startup)
            losses, params = [], []
            for _ in range(3):
                lv, pv = exe.run(main, feed=feed, fetch_list=[loss, p])
                losses.append(float(lv))
                params.append(float(np.asarray(pv).reshape(-1)[0]))
            assert np.all(np.isfinite(losses)), f"static training: losses {losses}"
            assert params[0] != params[-1], f"static training: the parameter did not move: {params}"
            _assert_close(losses[0], float((ref_outs[0] * _grad_weights(ref_outs[0].shape)).sum()),
                          "static training: first loss", tol=1e-4)
            print("static_train ok", flush=True)
    finally:
        paddle.disable_static()

    # -- paddle.jit.to_static, full graph (AST) and SOT. to_static needs a forward with named
    # arguments and readable source: one small class per arity.
    names = [n for n, *_ in spec["inputs"]]
    Net = _net_classes()[len(names)]

    def make_net():
        return Net(names, diff, call)

    for full_graph in (True, False):
        net = paddle.jit.to_static(make_net(), full_graph=full_graph)
        t = {}
        for name, arr in feed.items():
            t[name] = paddle.to_tensor(arr)
            t[name].stop_gradient = name not in diff
        outs = net(*[t[n] for n in names])
        for i, o in enumerate(ref_outs):
            _assert_close(outs[i].numpy(), o, f"to_static(full_graph={full_graph}) output {i}")
        if diff:
            w = paddle.to_tensor(_grad_weights(ref_outs[0].shape))
            grads = paddle.grad([(outs[0] * w).sum()], [t[n] for n in diff])
            for i, g in enumerate(ref_grads):
                _assert_close(grads[i].numpy(), g, f"to_static(full_graph={full_graph}) grad of {diff[i]}")
        print(f"to_static full_graph={full_graph} ok", flush=True)

    # -- paddle.jit.save (dynamic batch/token dims in the input specs)
    from paddle.static import InputSpec

    net = make_net()
    net.eval()
    specs = [InputSpec(s, d, n) for n, _, d, s, _ in spec["inputs"]]
    prefix = os.path.join(outdir, "model")
    paddle.jit.save(net, prefix, input_spec=specs)
    np.savez(os.path.join(outdir, "io.npz"), **{f"in_{k}": v for k, v in feed.items()},
             **{f"out_{i}": o for i, o in enumerate(ref_outs)})
    with open(os.path.join(outdir, "names.json"), "w") as f:
        json.dump({"inputs": names, "n_out": len(ref_outs)}, f)
    print("jit.save ok", flush=True)


def _stage_load(case, outdir):
    import paddle

    import paddle_te  # noqa: F401  (registers the pte_* ops: saved models need it)

    paddle.set_device("cpu")
    data = np.load(os.path.join(outdir, "io.npz"))
    with open(os.path.join(outdir, "names.json")) as f:
        meta = json.load(f)
    names, n_out = meta["inputs"], meta["n_out"]
    prefix = os.path.join(outdir, "model")

    loaded = paddle.jit.load(prefix)
    outs = loaded(*[paddle.to_tensor(data[f"in_{n}"]) for n in names])
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    for i in range(n_out):
        _assert_close(outs[i].numpy(), data[f"out_{i}"], f"jit.load output {i}")
    print("jit.load ok", flush=True)

    from paddle import inference

    model_file = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
    config = inference.Config(model_file, prefix + ".pdiparams")
    config.disable_gpu()
    predictor = inference.create_predictor(config)
    in_names = predictor.get_input_names()
    assert sorted(in_names) == sorted(names), f"predictor inputs {in_names} != {names}"
    for n in in_names:
        predictor.get_input_handle(n).copy_from_cpu(data[f"in_{n}"])
    predictor.run()
    out_names = predictor.get_output_names()
    assert len(out_names) == n_out, f"predictor outputs {out_names}: expected {n_out}"
    for i, n in enumerate(out_names):
        _assert_close(predictor.get_output_handle(n).copy_to_cpu(), data[f"out_{i}"], f"inference output {i}")
    print("inference ok", flush=True)


def _stage_dropout(case, outdir):
    """Dropout draws from Paddle's generator: paddle.seed repeats, successive calls differ, the
    backward uses the forward's mask, and training=False turns it off; also in static mode."""
    import paddle

    import paddle_te

    paddle.set_device("cpu")
    rng = np.random.default_rng(3)
    arrs = [rng.standard_normal(s).astype("float32") for s in ([2, 6, 2, 8], [2, 6, 2, 8], [2, 6, 2, 8])]

    def run(**kw):
        q, k, v = (paddle.to_tensor(a) for a in arrs)
        for t in (q, k, v):
            t.stop_gradient = False
        out = paddle_te.fused_attn(q, k, v, dropout=0.5, **kw)
        (gv,) = paddle.grad([out.sum()], [v])
        return out.numpy(), gv.numpy()

    paddle.seed(11)
    a1, g1 = run()
    a2, g2 = run()
    paddle.seed(11)
    b1, h1 = run()
    np.testing.assert_array_equal(a1, b1, err_msg="paddle.seed(n) must repeat the dropout mask")
    np.testing.assert_array_equal(g1, h1, err_msg="paddle.seed(n) must repeat the backward")
    assert not np.array_equal(a1, a2), "successive calls must draw fresh dropout masks"
    off, _ = run(training=False)
    ref = paddle_te.fused_attn(*[paddle.to_tensor(a) for a in arrs]).numpy()
    np.testing.assert_allclose(off, ref, rtol=1e-6, atol=1e-6, err_msg="training=False must disable dropout")
    # d(sum out)/dv = sum over queries of the dropped, rescaled probabilities: the same mask as
    # the forward means out == P_drop @ v and dv == P_drop^T @ 1, so sum(dv * v) == sum(out).
    np.testing.assert_allclose((g1 * arrs[2]).sum(), a1.sum(), rtol=1e-4, err_msg="backward must reuse the forward's mask")
    print("dygraph dropout ok", flush=True)

    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            ins = [paddle.static.data(n, a.shape, "float32") for n, a in zip("qkv", arrs)]
            out = paddle_te.fused_attn(*ins, dropout=0.5)
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        feed = dict(zip("qkv", arrs))
        r1 = exe.run(main, feed=feed, fetch_list=[out])[0]
        r2 = exe.run(main, feed=feed, fetch_list=[out])[0]
        assert np.all(np.isfinite(r1)) and not np.array_equal(r1, r2), "static dropout: runs must differ"
    finally:
        paddle.disable_static()
    print("static dropout ok", flush=True)


STAGES = {"build": _stage_build, "load": _stage_load, "dropout": _stage_dropout}


# ------------------------------------------------------------------------------------------------
# pytest side
# ------------------------------------------------------------------------------------------------
def _run_worker(case, stage, outdir):
    import paddle_te

    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(paddle_te.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("GLOG_minloglevel", "2")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), case, stage, str(outdir)],
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{case}/{stage}: worker exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc.stdout


@pytest.mark.parametrize("case", CASE_NAMES)
def test_all_modes(case, tmp_path):
    out = _run_worker(case, "build", tmp_path)
    for stage in ("dygraph", "no_grad", "static", "to_static full_graph=True", "to_static full_graph=False", "jit.save"):
        assert f"{stage} ok" in out, f"{case}: stage {stage!r} did not report ok:\n{out}"
    out = _run_worker(case, "load", tmp_path)
    assert "jit.load ok" in out and "inference ok" in out, out


def test_dropout_generator_and_static(tmp_path):
    out = _run_worker("dropout", "dropout", tmp_path)
    assert "dygraph dropout ok" in out and "static dropout ok" in out, out


if __name__ == "__main__":
    _case, _stage, _outdir = sys.argv[1], sys.argv[2], sys.argv[3]
    STAGES[_stage](_case, _outdir)
    print("ALL OK", flush=True)
