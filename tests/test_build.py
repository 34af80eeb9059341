"""The build's generated and arch-split sources, checked on every run (no compiler needed).

* tools/gen_flash_inst.py --check: the checked-in instantiation files are what the generator writes.
* csrc/cuda/attn/ is split by arch: the arch-neutral headers at its top include no arch folder,
  and no arch family includes another's headers (a family is compiled for its own archs only).
"""
import pathlib
import re
import subprocess
import sys

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
        assert not inc.startswith(tuple(f"cuda/attn/{a}/" for a in ARCH_DIRS)), f"{path} includes {inc}"


def test_arch_families_stay_apart():
    for arch in ARCH_DIRS:
        others = tuple(f"cuda/attn/{a}/" for a in ARCH_DIRS if a != arch)
        for sub in (ATTN / arch, ATTN / arch / "inst"):
            for path, inc in _attn_includes(sub):
                assert not inc.startswith(others), f"{path} includes {inc}"
