"""The architecture rule of STYLE.md habit 5, checked on every run: Paddle headers appear only in
csrc/paddle/, pybind11 only in csrc/pybind/, so the core stays framework-free."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def _includes(folder):
    for path in sorted((ROOT / "csrc" / folder).rglob("*")):
        if path.suffix in {".h", ".cuh", ".cc", ".cu", ".cpp"}:
            for inc in INCLUDE.findall(path.read_text(errors="replace")):
                yield path.relative_to(ROOT), inc


def test_core_has_no_framework_headers():
    for folder in ("include", "core", "cpu", "cuda", "common"):
        for path, inc in _includes(folder):
            assert not inc.startswith(("paddle/", "pybind11/")), f"{path} includes {inc}"


def test_paddle_and_pybind_stay_apart():
    for path, inc in _includes("paddle"):
        assert not inc.startswith("pybind11/"), f"{path} includes {inc}"
    for path, inc in _includes("pybind"):
        assert not inc.startswith("paddle/"), f"{path} includes {inc}"
