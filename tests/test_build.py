"""The build's generated and arch-split sources, checked on every run (no compiler needed).

* tools/gen_flash_inst.py --check: the checked-in instantiation files are what the generator writes.
* csrc/cuda/attn/ is split by arch: the arch-neutral headers at its top include no arch folder,
  and no arch family includes another's headers (a family is compiled for its own archs only).
* The last `make build`'s log (build/build.log) holds no ptxas C7512: wgmma instructions
  serialized for want of registers, a silent loss of much of a Hopper kernel's speed.
"""
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ATTN = ROOT / "csrc" / "cuda" / "attn"
INCLUDE = re.compile(r'^\s*#\s*include\s*"(cuda/attn/[^"]+)"', re.M)
ARCH_DIRS = ("sm80", "sm90")


def test_flash_instantiations_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_flash_inst.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_generator_check_fails_on_a_stale_file(tmp_path):
    gen = [sys.executable, str(ROOT / "tools" / "gen_flash_inst.py"), "--root", str(tmp_path)]
    subprocess.run(gen, check=True)
    (one,) = sorted((tmp_path / "sm80" / "inst").glob("flash_fwd_sm80_hdim64_fp16.cu"))
    one.write_text(one.read_text() + "// edited\n")
    proc = subprocess.run(gen + ["--check"], capture_output=True, text=True)
    assert proc.returncode == 1 and one.name in proc.stderr


def test_generator_arch_axis():
    """A second family (as the Hopper one would be added) gets its own folder, file names with
    its arch, its own launcher header, macro and namespace."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_flash_inst as gen
    finally:
        sys.path.pop(0)
    sm90 = gen.Family("sm90", "cuda/attn/sm90/launch_fwd.h", "PTE_FLASH_SM90_INSTANTIATE", "sm90",
                      ("fwd",), (64, 128))
    files = dict(gen.files(sm90))
    assert sorted(files) == [f"flash_fwd_sm90_hdim{d}_{t}.cu" for d in (128, 64)
                             for t in ("bf16", "fp16")]
    text = files["flash_fwd_sm90_hdim64_fp16.cu"]
    assert '#include "cuda/attn/sm90/launch_fwd.h"' in text
    assert "namespace sm90 {\nPTE_FLASH_SM90_INSTANTIATE_FWD(64, __half)\n}  // namespace sm90" in text
    assert [f.arch for f in gen.FAMILIES][0] == "sm80"


def _attn_includes(folder):
    for path in sorted(folder.glob("*.h")) + sorted(folder.glob("*.cu")):
        for inc in INCLUDE.findall(path.read_text(errors="replace")):
            yield path.relative_to(ROOT), inc


def test_arch_neutral_headers_include_no_arch_family():
    for path, inc in _attn_includes(ATTN):
        if path.suffix == ".cu":
            continue  # flash_api.cu dispatches to the families through their launch.h
        arch_dirs = tuple(f"cuda/attn/{a}/" for a in ARCH_DIRS)
        assert not inc.startswith(arch_dirs), f"{path} includes {inc}"


def test_arch_families_stay_apart():
    for arch in ARCH_DIRS:
        others = tuple(f"cuda/attn/{a}/" for a in ARCH_DIRS if a != arch)
        for sub in (ATTN / arch, ATTN / arch / "inst"):
            for path, inc in _attn_includes(sub):
                assert not inc.startswith(others), f"{path} includes {inc}"


# ---- the build description (CMakeLists.txt source groups, setup.py, _build_info) -------------

def test_version_is_written_once():
    import paddle_te
    from paddle_te import _build_info, _ops_lib
    from paddle_te._version import __version__

    assert paddle_te.__version__ == __version__ == _build_info.VERSION == _ops_lib.core_version()
    for path in ("setup.py", "CMakeLists.txt", "csrc/core/api_common.cc", "paddle_te/__init__.py"):
        assert f'"{__version__}"' not in (ROOT / path).read_text(), f"{path} repeats the version"


def test_build_info_reports_archs_hdims_and_groups():
    from paddle_te import _build_info as b

    assert "core" in b.SOURCE_GROUPS
    assert b.WITH_FLASH == ("flash" in b.SOURCE_GROUPS)
    assert b.WITH_FLASH_SM90 == ("flash_sm90" in b.SOURCE_GROUPS)
    assert b.WITH_CUDNN == ("cudnn" in b.SOURCE_GROUPS)
    if b.WITH_FLASH:
        assert b.CUDA_ARCHS and b.FLASH_HDIMS
        assert all(h.isdigit() for h in b.FLASH_HDIMS.split(","))


def _cmake():
    import shutil

    here = pathlib.Path(sys.executable).parent
    cmake = here / "cmake"
    if cmake.exists():
        return str(cmake), str(here / "ninja")
    return shutil.which("cmake"), shutil.which("ninja")


def _configure(src, build, *args):
    cmake, ninja = _cmake()
    gen = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    proc = subprocess.run([cmake, "-S", str(src), "-B", str(build), *gen, "-DPTE_BUILD_PYBIND=OFF",
                           "-DPTE_BUILD_TESTS=OFF", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    return json.loads((build / "pte_build.json").read_text()), (build / "build.ninja").read_text()


def _nvcc():
    import shutil

    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    return nvcc if pathlib.Path(nvcc).exists() else None


def test_cpu_build_is_the_core_group_alone(tmp_path):
    if _cmake()[0] is None:
        import pytest
        pytest.skip("no cmake")
    info, _ = _configure(ROOT, tmp_path / "b", "-DPTE_WITH_CUDA=OFF")
    assert list(info["groups"]) == ["core"] and info["with_cuda"] is False


def test_flash_sm90_group_is_compiled_for_sm90a_alone(tmp_path):
    """A copy of the tree with one sm90 instantiation per head dim: the group is built for sm_90a
    only, with the PTE_HDIMS filter, and announces PTE_FLASH_SM90 to the rest of pte_core; with
    PTE_ARCHS=80 it is left out."""
    import shutil

    import pytest

    cutlass = ROOT / "third_party" / "cutlass" / "include"
    if _cmake()[0] is None or _nvcc() is None or not (cutlass / "cute" / "tensor.hpp").exists():
        pytest.skip("needs cmake, nvcc and the CUTLASS headers (tools/fetch_deps.sh)")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "csrc", src / "csrc", ignore=shutil.ignore_patterns("sm90"))
    (src / "paddle_te").mkdir()
    shutil.copy(ROOT / "paddle_te" / "_version.py", src / "paddle_te")
    shutil.copy(ROOT / "CMakeLists.txt", src)
    inst = src / "csrc" / "cuda" / "attn" / "sm90" / "inst"
    inst.mkdir(parents=True)
    for hd in (64, 256):
        (inst / f"flash_fwd_sm90_hdim{hd}_fp16.cu").write_text("// placeholder\n")
    cuda = [f"-DCMAKE_CUDA_COMPILER={_nvcc()}", "-DPTE_WITH_CUDA=ON", "-DPTE_BUILD_CUDNN=OFF",
            f"-DPTE_CUTLASS_INCLUDE_DIR={cutlass}", "-DPTE_HDIMS=64;128"]
    info, ninja = _configure(src, tmp_path / "b90", *cuda, "-DPTE_ARCHS=80;90")
    assert info["groups"]["flash_sm90"] == {
        "sources": 1, "archs": ["90a"], "defines": ["PTE_FLASH_SM90"]}
    rule = ninja[ninja.index("flash_fwd_sm90_hdim64_fp16.cu.o:"):][:3000].split("\nbuild ")[0]
    assert "compute_90a,code=sm_90a" in rule and "compute_80" not in rule
    assert "-DPTE_FLASH_SM90" in rule
    assert "hdim256" not in ninja
    api = ninja[ninja.index("flash_api.cu.o:"):][:3000].split("\nbuild ")[0]
    assert "-DPTE_FLASH_SM90" in api and "compute_80,code=sm_80" in api
    info, _ = _configure(src, tmp_path / "b80", *cuda, "-DPTE_ARCHS=80")
    assert "flash_sm90" not in info["groups"] and "flash" in info["groups"]


def test_no_serialized_wgmma_in_the_build_log():
    """ptxas reports a kernel whose wgmma it had to serialize (too few registers for the
    asynchronous accumulators) only as an info line, C7512; the build still succeeds. Caught
    here from the log `make build` keeps (a register split change did it once: docs/performance.md,
    session 7)."""
    log = ROOT / "build" / "build.log"
    if not log.exists():
        pytest.skip("no build/build.log (the package was not built by `make build`)")
    bad = sorted({m.group(1) for m in re.finditer(r"C7512\).*?function '([^']+)'", log.read_text(
        errors="replace"))})
    assert not bad, "wgmma serialized in:\n" + "\n".join(bad)
