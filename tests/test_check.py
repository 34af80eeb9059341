"""paddle_te.run_check / python -m paddle_te: the report, and the small float64 reference that
ships with it, held to the test oracle (tests/reference.py)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import reference

paddle_te = pytest.importorskip("paddle_te")
from paddle_te import _check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("case", _check.CASES, ids=[c[0] for c in _check.CASES])
def test_shipped_reference_matches_oracle(case, rng):
    _, b, s_q, s_kv, h, h_kv, len_q, len_kv, mask_type, window = case
    d = 8
    q = rng.standard_normal((b, s_q, h, d))
    k = rng.standard_normal((b, s_kv, h_kv, d))
    v = rng.standard_normal((b, s_kv, h_kv, d))
    g = rng.standard_normal((b, s_q, h, d))
    scale = 1 / np.sqrt(d)
    got = _check.reference_attention(q, k, v, g, len_q, len_kv, mask_type, window, scale)
    kw = dict(cu_seqlens_q=reference.cu_seqlens(len_q), cu_seqlens_kv=reference.cu_seqlens(len_kv),
              attn_mask_type=mask_type, window_size=window, softmax_scale=scale)
    out, _ = reference.attention_fwd(q, k, v, **kw)
    want = (out,) + tuple(reference.attention_bwd(q, k, v, g, **kw))
    for name, a, w in zip(("out", "d_q", "d_k", "d_v"), got, want):
        np.testing.assert_allclose(a, w, atol=1e-12, err_msg=name)


def test_run_check_passes_on_cpu(capsys):
    report = paddle_te.run_check()
    text = capsys.readouterr().out
    assert report["ok"], text
    assert report["backends"]["cpu"]["available"]
    assert report["backends"]["cpu"]["checks"] and all(
        c["passed"] for c in report["backends"]["cpu"]["checks"])
    for name, st in report["backends"].items():
        assert name in text
        if not st["available"]:
            assert st["reason"], f"{name} is unavailable without a reason"
    assert "Paddle" in text and "paddle_te works on this machine" in text


def test_run_check_quiet():
    report = paddle_te.run_check(verbose=False)
    assert set(report["backends"]) == set(_check.BACKENDS)


def test_python_m_paddle_te():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-m", "paddle_te"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backends:" in proc.stdout
