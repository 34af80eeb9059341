"""`paddle_te.run_check()` and `python -m paddle_te`: what this build and this machine can run,
and a small forward/backward self-check of every usable backend against a float64 computation.

The float64 computation here is a deliberately tiny dense implementation of SPEC §2's
visibility rule (run_check ships in the wheel; the test suite's oracle, tests/reference.py, does
not). tests/test_check.py holds it to tests/reference.py, so there is still one oracle.
"""

import sys
import warnings

import numpy as np

import paddle

from ._vocab import PYTHON_BACKENDS
from .ops import BACKENDS as _ALL_BACKENDS
from .ops import CUDA_BACKENDS

#: Backends in the order they are reported (SPEC §3): every concrete one ("auto" picks among them).
BACKENDS = tuple(b for b in _ALL_BACKENDS if b != "auto")

# Self-check tolerances: max |error| relative to the largest |reference| value. float32 agrees
# with float64 up to accumulation error over a few dozen terms. float64 is limited by the softmax
# statistic, which is float32 for every dtype (SPEC §8: the backward rebuilds the probabilities
# from it), so ~1e-8 is expected there. float16 / bfloat16 outputs are rounded to their own
# precision (unit roundoff 4.9e-4 / 3.9e-3): ~20 ulps of slack for the low-precision
# probabilities and the backward's longer accumulation chains.
_TOLERANCE = {"float64": 1e-6, "float32": 1e-4, "float16": 1e-2, "bfloat16": 8e-2}


# ---- the float64 reference (SPEC §2) -----------------------------------------------------------
def _visible(L_q, L_k, mask_type, window):
    """[L_q, L_k] bool, True where query i sees key j."""
    left, right = window
    if "causal" in mask_type:
        right = 0
    delta = L_k - L_q if mask_type.endswith("bottom_right") else 0
    i = np.arange(L_q)[:, None] + delta
    j = np.arange(L_k)[None, :]
    vis = np.ones((L_q, L_k), bool)
    if left >= 0:
        vis &= j >= i - left
    if right >= 0:
        vis &= j <= i + right
    return vis


def reference_attention(q, k, v, d_out, lengths_q, lengths_kv, mask_type, window, scale):
    """Dense float64 attention forward and backward, bshd layout, right padding.

    q [b, s_q, h, d], k/v [b, s_kv, h_kv, d], d_out [b, s_q, h, d]; lengths per sequence.
    Returns out, d_q, d_k, d_v (float64, zeros at padded positions and in rows that see nothing).
    """
    q, k, v, d_out = (np.asarray(x, np.float64) for x in (q, k, v, d_out))
    b, _, h, _ = q.shape
    group = h // k.shape[2]
    out, d_q = np.zeros_like(q), np.zeros_like(q)
    d_k, d_v = np.zeros_like(k), np.zeros_like(v)
    for bi in range(b):
        L_q, L_k = int(lengths_q[bi]), int(lengths_kv[bi])
        vis = _visible(L_q, L_k, mask_type, window)
        for hi in range(h):
            kh = hi // group  # GQA: query head hi uses kv head hi // (h / h_kv)
            qi, ki, vi = q[bi, :L_q, hi], k[bi, :L_k, kh], v[bi, :L_k, kh]
            s = np.where(vis, scale * qi @ ki.T, -np.inf)
            row_max = s.max(axis=1, keepdims=True) if L_k else np.zeros((L_q, 1))
            row_max = np.where(np.isfinite(row_max), row_max, 0.0)
            e = np.exp(s - row_max)
            denom = e.sum(axis=1, keepdims=True)
            p = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)  # empty row -> 0
            o = p @ vi
            do = d_out[bi, :L_q, hi]
            dp = do @ vi.T
            ds = p * (dp - (do * o).sum(axis=1, keepdims=True))
            out[bi, :L_q, hi] = o
            d_q[bi, :L_q, hi] = scale * ds @ ki
            d_k[bi, :L_k, kh] += scale * ds.T @ qi
            d_v[bi, :L_k, kh] += p.T @ do
    return out, d_q, d_k, d_v


# ---- the self-check ----------------------------------------------------------------------------
#: (name, b, s_q, s_kv, h, h_kv, lengths_q, lengths_kv, mask_type, window): self-attention with
#: padding, causality and a left window; cross-attention with padding on both sides.
CASES = [
        ("self, padding_causal, window (3, 0), GQA", 2, 16, 16, 4, 2, [16, 9], [16, 9],
     "padding_causal", (3, 0)),
    ("cross, padding, s_q != s_kv", 2, 8, 24, 2, 2, [8, 5], [24, 13], "padding", (-1, -1)),
]


def _run_case(backend, place, dtype, case, head_dim, rng):
    """Max relative error of out, d_q, d_k, d_v against the reference, and whether every padded
    position came out exactly 0."""
    from . import ops

    _, b, s_q, s_kv, h, h_kv, len_q, len_kv, mask_type, window = case
    q = rng.standard_normal((b, s_q, h, head_dim))
    k = rng.standard_normal((b, s_kv, h_kv, head_dim))
    v = rng.standard_normal((b, s_kv, h_kv, head_dim))
    d_out = rng.standard_normal((b, s_q, h, head_dim))
    scale = 1.0 / np.sqrt(head_dim)

    # numpy has no bfloat16: low-precision tensors go through float32 on the way in and out.
    host = "float64" if dtype == "float64" else "float32"

    def tensor(x, grad=True):
        t = paddle.to_tensor(x.astype(host), place=place).astype(dtype)
        t.stop_gradient = not grad
        return t

    def to64(t):
        return t.astype(host).numpy().astype(np.float64)

    def cu(lengths):
        return paddle.to_tensor(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32),
                                place=place)

    tq, tk, tv = tensor(q), tensor(k), tensor(v)
    out = ops.fused_attn(tq, tk, tv, cu_seqlens_q=cu(len_q), cu_seqlens_kv=cu(len_kv),
                         max_seqlen_q=max(len_q), max_seqlen_kv=max(len_kv),
                         attn_mask_type=mask_type, window_size=window, backend=backend)
    out.backward(tensor(d_out, grad=False))

    # Compare against the reference run on the same (rounded) inputs.
    ref = reference_attention(to64(tq), to64(tk), to64(tv), to64(tensor(d_out, grad=False)),
                              len_q, len_kv, mask_type, window, scale)
    got = [out, tq.grad, tk.grad, tv.grad]
    errors, zeros_ok = {}, True
    for name, g, r in zip(("out", "d_q", "d_k", "d_v"), got, ref):
        if g is None:
            errors[name] = float("inf")
            continue
        g = to64(g)
        if not np.all(np.isfinite(g)):
            errors[name] = float("inf")
            continue
        errors[name] = float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-30))
        lengths = len_q if name in ("out", "d_q") else len_kv
        for bi, n in enumerate(lengths):
            zeros_ok &= bool(np.all(g[bi, n:] == 0))
    return errors, zeros_ok


def _gpu_available():
    try:
        return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    except Exception:  # noqa: BLE001 - any failure to query means "no usable GPU"
        return False


def _probe(backend, place, dtype, head_dim):
    """Can `backend` run a tiny call here? (ok, reason): the op's own ValueError text if not."""
    from . import ops

    x = paddle.to_tensor(np.zeros((1, 4, 1, head_dim), np.float32), place=place).astype(dtype)
    try:
        with paddle.no_grad():
            ops.fused_attn(x, x, x, attn_mask_type="causal", backend=backend)
    except ValueError as e:
        return False, str(e)
    return True, ""


def backend_status():
    """{name: {"available": bool, "reason": str, "place": str, "dtypes": [...]}} for this build
    and machine: the C core's own answer for its backends (pte_backend_available), then a tiny
    call on the place and dtype each backend is for (so "unfused" and any run-time limit count)."""
    from . import _ops_lib

    gpu = _gpu_available()
    status = {}
    for name in BACKENDS:
        on_gpu = name in CUDA_BACKENDS or (name in PYTHON_BACKENDS and gpu)
        place = paddle.CUDAPlace(0) if on_gpu and gpu else paddle.CPUPlace()
        dtypes = ["float16", "bfloat16"] if on_gpu else ["float32", "float64"]
        head_dim = 64 if on_gpu else 8  # 64: a head dim every GPU build compiles
        available, reason = True, ""
        if name not in PYTHON_BACKENDS:
            available, reason = _ops_lib.backend_available(name)
        if available and on_gpu and not gpu:
            available, reason = False, (
                f"no GPU usable by Paddle here (paddle.is_compiled_with_cuda()="
                f"{paddle.is_compiled_with_cuda()})")
        if available:
            available, reason = _probe(name, place, dtypes[0], head_dim)
        status[name] = {"available": available, "reason": reason, "gpu": bool(on_gpu and gpu),
                        "dtypes": dtypes, "head_dim": head_dim}
    return status


def run_check(verbose=True):
    """Report this build and machine, self-check every usable backend, and return the findings.

    Prints the Paddle version and place, each backend (available or not, and why not) and, for each
    available one, the forward/backward error against a float64 reference on small padded,
    causal, windowed, GQA and cross-attention problems. Returns a dict
    `{"paddle": ..., "paddle_te": ..., "backends": {name: {...}}, "ok": bool}`; `ok` is False when
    a self-check failed (no usable backend is a failure too).
    """
    import paddle_te

    from . import _build_info

    out = print if verbose else (lambda *a, **k: None)
    built_for = getattr(_build_info, "PADDLE_VERSION", "unknown")
    report = {"paddle": paddle.__version__, "paddle_te": paddle_te.__version__,
              "built_against_paddle": built_for, "device": paddle.get_device(),
              "backends": {}, "ok": True}
    out(f"paddle_te {paddle_te.__version__} (built against Paddle {built_for}; "
        f"CUDA kernels: {'yes' if getattr(_build_info, 'WITH_CUDA', False) else 'no'})")
    report["build"] = {k: getattr(_build_info, k, "")
                       for k in ("CUDA_ARCHS", "FLASH_HDIMS", "SOURCE_GROUPS")}
    if getattr(_build_info, "WITH_CUDA", False):
        out(f"built for archs {_build_info.CUDA_ARCHS or 'none'}; flash head dims "
            f"{getattr(_build_info, 'FLASH_HDIMS', '') or 'none'}; source groups "
            f"{', '.join(getattr(_build_info, 'SOURCE_GROUPS', []))}")
    out(f"Paddle {paddle.__version__}, device {paddle.get_device()}, compiled with CUDA: "
        f"{paddle.is_compiled_with_cuda()}")
    if built_for not in ("unknown", paddle.__version__):
        msg = (f"paddle_te was built against Paddle {built_for} but Paddle {paddle.__version__} "
               "is running: the op library is tied to the C++ ABI of one Paddle version; "
               "rebuild paddle_te (docs/build.md)")
        warnings.warn(msg, RuntimeWarning)
        out("WARNING: " + msg)

    rng = np.random.default_rng(0)
    status = backend_status()
    out("backends:")
    for name, st in status.items():
        entry = dict(st, checks=[])
        report["backends"][name] = entry
        if not st["available"]:
            out(f"  {name:<8} unavailable: {st['reason']}")
            continue
        place = paddle.CUDAPlace(0) if st["gpu"] else paddle.CPUPlace()
        out(f"  {name:<8} available on {'gpu:0' if st['gpu'] else 'cpu'}")
        for dtype in st["dtypes"]:
            for case in CASES:
                try:
                    errors, zeros_ok = _run_case(name, place, dtype, case, st["head_dim"], rng)
                    worst = max(errors.values())
                    passed = worst <= _TOLERANCE[dtype] and zeros_ok
                    detail = ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
                    if not zeros_ok:
                        detail += "; padded positions not zero"
                except Exception as e:  # noqa: BLE001 - a self-check reports, never crashes
                    passed, worst, detail = False, float("inf"), f"{type(e).__name__}: {e}"
                entry["checks"].append({"case": case[0], "dtype": dtype, "passed": passed,
                                        "max_rel_error": worst, "detail": detail})
                report["ok"] &= passed
                out(f"    {'ok  ' if passed else 'FAIL'} {dtype:<8} {case[0]:<42} "
                    f"max rel err {worst:.1e} (tol {_TOLERANCE[dtype]:.0e})"
                    + ("" if passed else f"  [{detail}]"))
    if not any(st["available"] for st in status.values()):
        report["ok"] = False
    out("paddle_te works on this machine." if report["ok"]
        else "paddle_te self-check FAILED (see above).")
    return report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m paddle_te\n\nReport the Paddle version and place, which paddle_te "
              "backends this build and machine can run (and why not), and self-check each.")
        return 0
    return 0 if run_check()["ok"] else 1
