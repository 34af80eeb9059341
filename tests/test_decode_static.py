"""decode_attn (SPEC §10) in static mode (PIR Program + Executor, with the cache as a persistable
variable updated in place across runs), under paddle.jit.to_static, and in a model saved with
paddle.jit.save, loaded in a fresh process with paddle.jit.load and paddle.inference.

Like tests/test_static_mode.py, each stage runs in a subprocess (this file is the worker:
`python test_decode_static.py STAGE DIR`), so a crash fails the test instead of killing pytest.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 300
B, S_Q, H, H_KV, D, S_MAX, PAGE = 2, 2, 4, 2, 8, 12, 4
LENS = np.array([3, 6], dtype=np.int32)


def _inputs(seed, paged=False):
    rng = np.random.default_rng(seed)
    data = {
        "q": rng.standard_normal((B, S_Q, H, D)).astype(np.float32),
        "k_new": rng.standard_normal((B, S_Q, H_KV, D)).astype(np.float32),
        "v_new": rng.standard_normal((B, S_Q, H_KV, D)).astype(np.float32),
        "cache_seqlens": LENS.copy(),
    }
    if paged:
        pages = S_MAX // PAGE
        data["block_table"] = rng.permutation(B * pages).reshape(B, pages).astype(np.int32)
        shape = (B * pages, PAGE, H_KV, D)
    else:
        shape = (B, S_MAX, H_KV, D)
    data["k_cache"] = rng.standard_normal(shape).astype(np.float32)
    data["v_cache"] = rng.standard_normal(shape).astype(np.float32)
    return data


def _reference(data):
    import reference as ref

    f64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in data.items()}
    out, _, kc, vc = ref.decode_attn(f64["q"], f64["k_cache"], f64["v_cache"], f64["cache_seqlens"],
                                     k_new=f64["k_new"], v_new=f64["v_new"],
                                     block_table=f64.get("block_table"), window_size=(4, 0))
    return out, kc, vc


def _close(actual, expected, what):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=1e-5, atol=1e-5,
                               err_msg=what)


def _stage_static(outdir):
    import paddle

    import paddle_te

    paddle.enable_static()
    for paged in (False, True):
        data = _inputs(1, paged)
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            feeds = {n: paddle.static.data(n, list(v.shape), str(v.dtype))
                     for n, v in data.items() if n not in ("k_cache", "v_cache")}
            # The cache lives in persistable variables: the op writes into them in place.
            kc = paddle.static.create_parameter(list(data["k_cache"].shape), "float32",
                                                name="k_cache_var")
            vc = paddle.static.create_parameter(list(data["v_cache"].shape), "float32",
                                                name="v_cache_var")
            out = paddle_te.ops.decode_attn(feeds["q"], kc, vc, feeds["cache_seqlens"],
                                            k_new=feeds["k_new"], v_new=feeds["v_new"],
                                            block_table=feeds.get("block_table"),
                                            window_size=(4, 0))
        exe = paddle.static.Executor(paddle.CPUPlace())
        exe.run(startup)
        scope = paddle.static.global_scope()
        scope.find_var("k_cache_var").get_tensor().set(data["k_cache"], paddle.CPUPlace())
        scope.find_var("v_cache_var").get_tensor().set(data["v_cache"], paddle.CPUPlace())
        feed = {n: v for n, v in data.items() if n not in ("k_cache", "v_cache")}
        (res,) = exe.run(main, feed=feed, fetch_list=[out])
        out_r, kc_r, vc_r = _reference(data)
        _close(res, out_r, f"static out (paged={paged})")
        _close(np.array(scope.find_var("k_cache_var").get_tensor()), kc_r, "static k_cache in place")
        _close(np.array(scope.find_var("v_cache_var").get_tensor()), vc_r, "static v_cache in place")
    paddle.disable_static()
    print("static ok", flush=True)

    # paddle.jit.to_static of a decoding step, then jit.save.
    from paddle.static import InputSpec

    class Step(paddle.nn.Layer):
        def forward(self, q, k_cache, v_cache, cache_seqlens, k_new, v_new):
            return paddle_te.ops.decode_attn(q, k_cache, v_cache, cache_seqlens, k_new=k_new,
                                             v_new=v_new, window_size=(4, 0))

    data = _inputs(2)
    names = ["q", "k_cache", "v_cache", "cache_seqlens", "k_new", "v_new"]
    out_r, kc_r, _ = _reference(data)
    for full_graph in (True, False):
        step = paddle.jit.to_static(Step(), full_graph=full_graph)
        t = {n: paddle.to_tensor(data[n]) for n in names}
        out = step(*[t[n] for n in names])
        _close(out.numpy(), out_r, f"to_static(full_graph={full_graph}) out")
        _close(t["k_cache"].numpy(), kc_r, f"to_static(full_graph={full_graph}) k_cache in place")
    print("to_static ok", flush=True)

    specs = [InputSpec([None] + list(data[n].shape[1:]), str(data[n].dtype), n) for n in names]
    specs[names.index("cache_seqlens")] = InputSpec([None], "int32", "cache_seqlens")
    net = Step()
    net.eval()
    paddle.jit.save(net, os.path.join(outdir, "step"), input_spec=specs)
    np.savez(os.path.join(outdir, "io.npz"), **data, out=out_r)
    print("jit.save ok", flush=True)


def _stage_load(outdir):
    import paddle

    import paddle_te  # noqa: F401  (registers the pte_* ops: saved models need it)

    data = dict(np.load(os.path.join(outdir, "io.npz")))
    names = ["q", "k_cache", "v_cache", "cache_seqlens", "k_new", "v_new"]
    prefix = os.path.join(outdir, "step")
    loaded = paddle.jit.load(prefix)
    out = loaded(*[paddle.to_tensor(data[n]) for n in names])
    _close(out.numpy(), data["out"], "jit.load out")
    print("jit.load ok", flush=True)

    from paddle import inference

    model_file = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
    config = inference.Config(model_file, prefix + ".pdiparams")
    config.disable_gpu()
    predictor = inference.create_predictor(config)
    for n in predictor.get_input_names():
        predictor.get_input_handle(n).copy_from_cpu(data[n])
    predictor.run()
    (out_name,) = predictor.get_output_names()
    _close(predictor.get_output_handle(out_name).copy_to_cpu(), data["out"], "inference out")
    print("inference ok", flush=True)


def _stage_layers(outdir):
    """Static graphs of the layers' cache steps and of flashmask_attention's window, with the
    batch and sequence dims left dynamic (None): the MultiHeadAttention drop-in's steps on Paddle's
    Cache / StaticCache (decode_attn takes its caches in place: no views), an InplaceCache step's
    advanced lengths, and the window's column bounds built from the run-time sizes."""
    del outdir
    import paddle
    from paddle.static import InputSpec

    import paddle_te

    E, H, D = 32, 4, 8
    rng = np.random.default_rng(3)
    f32 = lambda *s: rng.standard_normal(s).astype("float32")  # noqa: E731
    mha = paddle_te.nn.MultiHeadAttention(E, H, attn_mask_type="causal")
    mha.eval()

    class CacheStep(paddle.nn.Layer):
        def __init__(self, kind):
            super().__init__()
            self.mha, self.kind = mha, kind

        def forward(self, x, kc, vc):
            cache = self.mha.StaticCache(kc, vc) if self.kind else self.mha.Cache(kc, vc)
            return self.mha(x, x, x, None, cache)[0]

    for kind in (0, 1):
        spec = [InputSpec([None, 1, E], "float32", "x"), InputSpec([None, H, None, D], "float32", "kc"),
                InputSpec([None, H, None, D], "float32", "vc")]
        step = paddle.jit.to_static(CacheStep(kind), input_spec=spec, full_graph=True)
        for b, s in ((2, 5), (3, 7)):
            args = [paddle.to_tensor(a) for a in (f32(b, 1, E), f32(b, H, s, D), f32(b, H, s, D))]
            _close(step(*args).numpy(), CacheStep(kind)(*args).numpy(), f"cache step {kind} b={b}")
    print("cache steps ok", flush=True)

    lens = np.array([3, 5], "int32")
    x = f32(2, 2, E)
    _, c = mha(paddle.to_tensor(x), cache=mha.InplaceCache(paddle.zeros([2, 8, H, D]),
                                                          paddle.zeros([2, 8, H, D]),
                                                          paddle.to_tensor(lens)))
    assert c.seqlens.numpy().tolist() == [5, 7]
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        xs = paddle.static.data("x", [None, None, E], "float32")
        kc, vc = (paddle.static.data(n, [None, 8, H, D], "float32") for n in ("kc", "vc"))
        ls = paddle.static.data("lens", [None], "int32")
        smha = paddle_te.nn.MultiHeadAttention(E, H, attn_mask_type="causal")
        smha.eval()
        _, c2 = smha(xs, cache=smha.InplaceCache(kc, vc, ls))
    exe = paddle.static.Executor(paddle.CPUPlace())
    exe.run(startup)
    z = np.zeros([2, 8, H, D], "float32")
    (seqlens,) = exe.run(main, feed={"x": x, "kc": z, "vc": z.copy(), "lens": lens},
                         fetch_list=[c2.seqlens])
    assert seqlens.tolist() == [5, 7], seqlens
    paddle.disable_static()
    print("inplace lengths ok", flush=True)

    def windowed(q, k, v):
        return paddle_te.flashmask_attention(q, k, v, causal=True, window_size=2)

    spec = [InputSpec([None, None, H, D], "float32", n) for n in "qkv"]
    fn = paddle.jit.to_static(windowed, input_spec=spec, full_graph=True)
    for b, s in ((2, 6), (3, 9)):
        args = [paddle.to_tensor(f32(b, s, H, D)) for _ in range(3)]
        _close(fn(*args).numpy(), windowed(*args).numpy(), f"flashmask window b={b} s={s}")
    print("flashmask window ok", flush=True)


def _run_worker(stage, outdir):
    import paddle_te

    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(paddle_te.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("GLOG_minloglevel", "2")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), stage, str(outdir)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"{stage}: worker exited with {proc.returncode}\n--- stdout ---\n"
                    f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc.stdout


def test_decode_static_to_static_save_load_inference(tmp_path):
    out = _run_worker("build", tmp_path)
    for stage in ("static", "to_static", "jit.save"):
        assert f"{stage} ok" in out, out
    out = _run_worker("load", tmp_path)
    assert "jit.load ok" in out and "inference ok" in out, out


def test_layer_steps_and_windows_in_static_graphs(tmp_path):
    out = _run_worker("layers", tmp_path)
    for stage in ("cache steps", "inplace lengths", "flashmask window"):
        assert f"{stage} ok" in out, out


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    {"build": _stage_static, "load": _stage_load, "layers": _stage_layers}[sys.argv[1]](sys.argv[2])
