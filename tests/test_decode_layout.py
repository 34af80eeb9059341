"""The tensor-core decode kernel's tile copy bookkeeping, checked on the CPU.

tests/cpp/decode_copy_layout.cu runs the kernel's host-device helpers on the host: the paged fast
path's page walk against a division per pass, and the bad-page flags built from per-pass ballots
against the resolving path's lane layout and compute_tile's per-row reading (d = 64, 128, 256).
Needs nvcc (CI has it); the kernels themselves run in tests/gpu/test_decode_gpu.py.
"""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _nvcc():
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    return nvcc if pathlib.Path(nvcc).exists() else None


def test_decode_copy_layout(tmp_path):
    if _nvcc() is None:
        pytest.skip("needs nvcc")
    exe = tmp_path / "decode_copy_layout"
    build = subprocess.run(
        [_nvcc(), "-std=c++17", "-O1", "--expt-relaxed-constexpr", "-w",
         f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}",
         str(ROOT / "tests" / "cpp" / "decode_copy_layout.cu"), "-o", str(exe)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("row flags checked") == 3 and "page walk" in run.stdout
