"""Each paddle_te.nn layer in static mode (optimizer.minimize), under paddle.jit.to_static, and
saved with paddle.jit.save then run by paddle.jit.load and paddle.inference in a fresh process.

Every mode runs in a subprocess (tests/nn_graph_worker.py): a crash there fails one test instead
of killing pytest.
"""

import os
import subprocess
import sys

import pytest

import paddle_te

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nn_graph_worker.py")
CASES = ["dpa", "dpa_arbitrary", "mha", "layer", "replaced"]


def _run(*args):
    env = dict(os.environ)
    # The child imports the same paddle_te as this process.
    root = os.path.dirname(os.path.abspath(list(paddle_te.__path__)[0]))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True,
                          timeout=300, env=env)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"worker {args} exited with {proc.returncode}:\n{tail}"
    assert f"OK {args[0]} {args[1]}" in proc.stdout, tail


@pytest.mark.parametrize("case", CASES)
def test_static_mode_minimize(case):
    _run("static", case)


@pytest.mark.parametrize("case", CASES)
def test_to_static_save_load_inference(case, tmp_path):
    _run("jit", case, str(tmp_path))
    _run("load", case, str(tmp_path))
