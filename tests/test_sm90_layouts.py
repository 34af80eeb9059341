"""The Hopper backward's register-to-shared-memory addressing, checked on the CPU.

tests/cpp/sm90_bwd_layouts.cu evaluates the kernel's CuTe layouts on the host for every consumer
thread (d = 64 and 128, fp16 and bf16): the offset-swizzled stores of dS and dQ land where the
address-swizzled ones did, as whole aligned pairs, and the S^T fragment's query order is the one
the kernel's float2 loads of lse and Dsum assume. Needs nvcc and the CUTLASS headers (CI has both).
"""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUTLASS = ROOT / "third_party" / "cutlass" / "include"


def _nvcc():
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    return nvcc if pathlib.Path(nvcc).exists() else None


def test_sm90_backward_store_addresses(tmp_path):
    if _nvcc() is None or not (CUTLASS / "cute" / "tensor.hpp").exists():
        pytest.skip("needs nvcc and the CUTLASS headers (tools/fetch_deps.sh)")
    exe = tmp_path / "sm90_bwd_layouts"
    build = subprocess.run(
        [_nvcc(), "-std=c++17", "-O1", "--expt-relaxed-constexpr", "-w",
         f"-I{ROOT / 'csrc' / 'include'}", f"-I{ROOT / 'csrc'}", f"-I{CUTLASS}",
         str(ROOT / "tests" / "cpp" / "sm90_bwd_layouts.cu"), "-o", str(exe)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("element addresses checked") == 4
