"""Build a paddle_te wheel and prove that it installs and works in a fresh virtual environment.

    python tools/build_wheel.py                 # what `make wheel` runs
    python tools/build_wheel.py --skip-build    # re-test the newest wheel in dist/
    python tools/build_wheel.py --keep-venv build/wheel-venv

Steps:
  1. `pip wheel --no-build-isolation --no-deps . -w dist/` with the running Python, so the op
     library is compiled against the Paddle installed here (an isolated build would fetch another
     copy of Paddle; the library is tied to one Paddle version's C++ ABI);
  2. read the Paddle version the wheel was built against (paddle_te/_build_info.py inside it);
  3. create a fresh virtual environment (no system site-packages), install exactly that Paddle
     version from the package index, numpy, and the wheel;
  4. run a smoke test there, outside the source tree: import paddle_te from the venv,
     fused_attn forward/backward against numpy, a TransformerLayer step, run_check().

Exit status 0 when every step passed. docs/build.md ("Wheels") says which Paddle a wheel matches.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE_TEST = textwrap.dedent('''
    import os, sys
    import numpy as np
    import paddle
    import paddle_te
    from paddle_te.nn import TransformerLayer

    site = os.path.realpath(sys.prefix)
    where = os.path.realpath(paddle_te.__file__)
    assert where.startswith(site), f"paddle_te imported from {where}, not from the venv {site}"
    print(f"paddle {paddle.__version__}, paddle_te {paddle_te.__version__} from {where}")

    # fused_attn forward/backward on a tiny causal problem against a numpy float64 computation.
    rng = np.random.default_rng(0)
    b, s, h, d = 2, 5, 2, 8
    q, k, v, g = (rng.standard_normal((b, s, h, d)) for _ in range(4))
    tq, tk, tv = (paddle.to_tensor(x.astype("float32"), stop_gradient=False) for x in (q, k, v))
    out = paddle_te.fused_attn(tq, tk, tv, attn_mask_type="causal")
    out.backward(paddle.to_tensor(g.astype("float32")))

    scale = 1 / np.sqrt(d)
    sc = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    sc = np.where(np.triu(np.ones((s, s), bool), 1), -np.inf, sc)  # True = masked out
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ref = np.einsum("bhqk,bkhd->bqhd", p, v)
    dv = np.einsum("bhqk,bqhd->bkhd", p, g)
    err = max(np.abs(out.numpy() - ref).max(), np.abs(tv.grad.numpy() - dv).max())
    assert err < 1e-4, f"fused_attn differs from numpy by {err}"
    print(f"fused_attn fwd/bwd max error vs numpy: {err:.1e}")

    # A layer, forward and backward, with a padding mask.
    layer = TransformerLayer(32, 64, 4, self_attn_mask_type="padding", hidden_dropout=0.0,
                             attention_dropout=0.0)
    x = paddle.randn([2, 6, 32])
    mask = paddle.to_tensor((np.arange(6)[None, :] >= np.array([[6], [3]]))[:, None, None, :])
    y = layer(x, attention_mask=mask)
    y.mean().backward()
    assert np.isfinite(y.numpy()).all()
    print("TransformerLayer fwd/bwd ok")

    report = paddle_te.run_check()
    assert report["ok"], "run_check failed"
    print("SMOKE TEST PASSED")
''')


def log(msg):
    print(f"[build_wheel] {msg}", flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


def clean_env():
    """The environment for child processes, without anything that points at the source tree or
    at another Python environment."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(var, None)
    return env


def build_wheel(dist):
    os.makedirs(dist, exist_ok=True)
    before = set(glob.glob(os.path.join(dist, "paddle_te-*.whl")))
    env = clean_env()
    env.setdefault("MAX_JOBS", "2")
    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", ROOT,
         "-w", dist], env=env, cwd=ROOT)
    wheels = sorted(glob.glob(os.path.join(dist, "paddle_te-*.whl")), key=os.path.getmtime)
    if not wheels:
        sys.exit(f"[build_wheel] no paddle_te wheel in {dist}")
    new = [w for w in wheels if w not in before]
    return new[-1] if new else wheels[-1]


def wheel_build_info(wheel):
    """The generated paddle_te/_build_info.py inside the wheel, as a dict."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        if "paddle_te/_build_info.py" not in names:
            sys.exit(f"[build_wheel] {wheel} has no paddle_te/_build_info.py")
        libs = [n for n in names if re.match(r"paddle_te/.*\.so$", n)]
        if not libs:
            sys.exit(f"[build_wheel] {wheel} has no compiled op library (paddle_te/*.so)")
        info = {}
        exec(z.read("paddle_te/_build_info.py").decode(), info)  # noqa: S102 - our own file
    return {k: v for k, v in info.items() if k.isupper()}


def paddle_distribution():
    """Name of the installed Paddle distribution: paddlepaddle or paddlepaddle-gpu."""
    from importlib import metadata

    for name in ("paddlepaddle", "paddlepaddle-gpu"):
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return "paddlepaddle"


def smoke_test(wheel, venv, paddle_req, pip_args):
    if os.path.exists(venv):
        shutil.rmtree(venv)
    run([sys.executable, "-m", "venv", venv])  # no --system-site-packages: really fresh
    py = os.path.join(venv, "bin", "python")
    env = clean_env()
    run([py, "-m", "pip", "install", "-q", *pip_args, paddle_req, "numpy"], env=env)
    run([py, "-m", "pip", "install", "-q", "--no-deps", wheel], env=env)
    with tempfile.TemporaryDirectory() as cwd:  # not the source tree: import the installed copy
        script = os.path.join(cwd, "smoke_test.py")
        with open(script, "w") as f:
            f.write(SMOKE_TEST)
        run([py, script], env=env, cwd=cwd)
        run([py, "-m", "paddle_te"], env=env, cwd=cwd)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dist", default=os.path.join(ROOT, "dist"), help="wheel folder (dist/)")
    p.add_argument("--skip-build", action="store_true", help="test the newest wheel in --dist")
    p.add_argument("--no-smoke", action="store_true", help="build only")
    p.add_argument("--keep-venv", metavar="DIR",
                   help="create the test venv in DIR and keep it (default: a temporary folder)")
    p.add_argument("--paddle", metavar="REQUIREMENT",
                   help="what to install in the venv (default: <the installed Paddle "
                        "distribution>==<the version the wheel was built against>)")
    p.add_argument("--pip-arg", action="append", default=[],
                   help="extra argument for `pip install` in the venv (repeatable), e.g. "
                        "--pip-arg=--index-url=https://mirror/simple")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    if args.skip_build:
        wheels = sorted(glob.glob(os.path.join(args.dist, "paddle_te-*.whl")),
                        key=os.path.getmtime)
        if not wheels:
            sys.exit(f"[build_wheel] --skip-build: no paddle_te wheel in {args.dist}")
        wheel = wheels[-1]
    else:
        wheel = build_wheel(args.dist)
    info = wheel_build_info(wheel)
    paddle_version = info.get("PADDLE_VERSION", "unknown")
    log(f"wheel: {wheel}")
    log(f"built against Paddle {paddle_version} (CUDA kernels: {info.get('WITH_CUDA')}); "
        "it works only with that Paddle version")
    if args.no_smoke:
        return 0

    paddle_req = args.paddle or f"{paddle_distribution()}=={paddle_version}"
    if args.keep_venv:
        smoke_test(wheel, os.path.abspath(args.keep_venv), paddle_req, args.pip_arg)
    else:
        with tempfile.TemporaryDirectory(prefix="paddle_te_wheel_") as tmp:
            smoke_test(wheel, os.path.join(tmp, "venv"), paddle_req, args.pip_arg)
    log(f"OK: {os.path.basename(wheel)} installs into a fresh venv with {paddle_req} and passes "
        f"the smoke test ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
