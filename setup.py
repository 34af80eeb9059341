"""Build and install paddle_te: the Python package `paddle_te` plus the Paddle custom-op library
`paddle_te/_paddle_te_ops.so`.

    pip install --no-build-isolation .            # install
    pip install --no-build-isolation -e .         # editable
    python setup.py build_ext --inplace           # in-tree build (what `make test` uses)

Two steps, one build description: the framework-free core (C API, CPU and CUDA kernels, every
source group with its own archs and defines) is built by CMakeLists.txt as the static library
pte_core (in build/paddle_core_{cuda,cpu}); this file then compiles only the Paddle glue
(csrc/paddle) with
Paddle's builder and links pte_core into it. Needs cmake (and ninja, else make) on PATH or next
to the running Python.

CPU or CUDA build (SPEC §6): CUDA when Paddle is compiled with CUDA and nvcc is found.
Environment:
    PADDLE_TE_WITH_CUDA=1|0   force the CUDA (1) or the CPU-only (0) build
    CUDA_HOME                 CUDA toolkit (default: from nvcc on PATH, else /usr/local/cuda)
    PTE_ARCHS                 GPU archs, ";"/","-separated, default "80;90" (e.g. "90a", "80")
    PTE_HDIMS                 head dims of the flash kernels compiled, default "64;128"; "all"
                              for every generated one (release wheels: `make wheel`)
    PTE_BUILD_FLASH=0, PTE_BUILD_CUDNN=0   leave the flash kernels / the cuDNN backend out
    CUDNN_INCLUDE_DIR, CUDNN_FRONTEND_INCLUDE_DIR, CUTLASS_INCLUDE_DIR   header locations
                              (else looked for under third_party/, see tools/fetch_deps.sh)
    MAX_JOBS                  parallel compile jobs (default: the number of CPUs)
docs/build.md has the details.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
EXT_NAME = "paddle_te._paddle_te_ops"  # not "paddle_te": Paddle's setup() would shadow the package


def _version():
    """The one version string, from paddle_te/_version.py (CMakeLists.txt reads it too)."""
    with open(os.path.join(ROOT, "paddle_te", "_version.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


VERSION = _version()


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _glob(*patterns):
    out = []
    for pat in patterns:
        out += glob.glob(os.path.join(ROOT, pat), recursive=True)
    return _rel(out)


def _env_flag(name):
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    if v.lower() in ("1", "on", "true", "yes"):
        return True
    if v.lower() in ("0", "off", "false", "no"):
        return False
    sys.exit(f"setup.py: {name}={v!r}: expected 1 or 0")


def _find_cuda_home():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        # nvcc on PATH may be a wrapper script (PADDLE_NOTES): trust it only if the folder
        # above it looks like a toolkit.
        cand = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if os.path.exists(os.path.join(cand, "include", "cuda_runtime.h")):
            return cand
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    return None


# CUDA_HOME must be in the environment before paddle is imported: paddle.utils.cpp_extension
# reads it once at import time.
CUDA_HOME = _find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME

try:
    import paddle  # noqa: E402
except ImportError:
    sys.exit(
        "setup.py: paddle is not importable. paddle_te must be built against the Paddle that will "
        "run it: install paddlepaddle (or paddlepaddle-gpu) first, then run "
        "`pip install --no-build-isolation .`"
    )
from paddle.utils.cpp_extension import BuildExtension, CppExtension  # noqa: E402

PADDLE_HAS_CUDA = paddle.is_compiled_with_cuda()
_forced = _env_flag("PADDLE_TE_WITH_CUDA")
if _forced is None:
    WITH_CUDA = PADDLE_HAS_CUDA and CUDA_HOME is not None
elif _forced:
    if CUDA_HOME is None:
        sys.exit("setup.py: PADDLE_TE_WITH_CUDA=1 but no CUDA toolkit (nvcc) was found; set CUDA_HOME")
    WITH_CUDA = True
else:
    WITH_CUDA = False


def _list_env(name, default):
    """A ";"- or ","-separated list from the environment, as CMake's list."""
    raw = os.environ.get(name) or default
    return ";".join(x.strip() for x in raw.replace(",", ";").split(";") if x.strip())


def _tool(name):
    """A build tool next to the running Python (the venv's pip-installed cmake/ninja) or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else shutil.which(name)


def build_core():
    """Configure and build pte_core with CMake; the build's description (pte_build.json).

    One build folder per flavour, so a CPU-only wheel built after a CUDA build (tests/test_wheel.py
    against a CPU Paddle) does not reconfigure and rebuild the other."""
    core_build = os.path.join(ROOT, "build", "paddle_core_" + ("cuda" if WITH_CUDA else "cpu"))
    cmake = _tool("cmake")
    if cmake is None:
        sys.exit("setup.py: cmake not found: `pip install cmake ninja` (docs/build.md)")
    args = [cmake, "-S", ROOT, "-B", core_build, "-DCMAKE_BUILD_TYPE=Release",
            f"-DPTE_WITH_CUDA={'ON' if WITH_CUDA else 'OFF'}", "-DPTE_BUILD_PYBIND=OFF",
            "-DPTE_BUILD_TESTS=OFF", f"-DPTE_PYTHON={sys.executable}",
            f"-DPTE_ARCHS={_list_env('PTE_ARCHS', '80;90')}",
            f"-DPTE_HDIMS={_list_env('PTE_HDIMS', '64;128')}"]
    for flag in ("PTE_BUILD_FLASH", "PTE_BUILD_CUDNN"):
        if _env_flag(flag) is not None:
            args.append(f"-D{flag}={'ON' if _env_flag(flag) else 'OFF'}")
    if WITH_CUDA:
        args.append(f"-DCMAKE_CUDA_COMPILER={os.path.join(CUDA_HOME, 'bin', 'nvcc')}")
    ninja = _tool("ninja")
    if ninja and not os.path.exists(os.path.join(core_build, "CMakeCache.txt")):
        args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
    subprocess.run(args, check=True)
    subprocess.run([cmake, "--build", core_build, "--target", "pte_core", "-j", jobs], check=True)
    with open(os.path.join(core_build, "pte_build.json")) as f:
        return json.load(f)


def build_config():
    """The Paddle glue: csrc/paddle/*.cc, linked with pte_core (added by build_ext)."""
    sources = _glob("csrc/paddle/*.cc")
    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]
    cxx = ["-O3", "-std=c++17"]
    if WITH_CUDA:
        # The glue's GPU paths (the tensor's stream, is_gpu) are compiled in a CUDA build even
        # against a CPU Paddle (our CI); there PADDLE_NO_PYTHON keeps Paddle's headers from pulling
        # in cuBLAS/Python pieces a CPU build does not ship (PADDLE_NOTES "CUDA builds").
        cxx += ["-DPADDLE_WITH_CUDA"] + ([] if PADDLE_HAS_CUDA else ["-DPADDLE_NO_PYTHON"])
        include_dirs.append(os.path.join(CUDA_HOME, "include"))
        cccl = os.path.join(CUDA_HOME, "include", "cccl")
        if os.path.isdir(cccl):  # CUDA 13 moved thrust/cub here
            include_dirs.append(cccl)
    ext = CppExtension(sources=sources, include_dirs=include_dirs,
                       depends=_glob("csrc/include/**/*.h", "csrc/paddle/*.h"),
                       extra_compile_args={"cxx": cxx})
    ext.name = EXT_NAME
    return ext


class build_ext(BuildExtension.with_options(no_python_abi_suffix=True)):
    """Paddle's builder, minus its package-stub machinery.

    Paddle's own run() writes a generated Python stub next to the library, renames the library
    for its stub, and deletes *.o files under the output folder (the source tree for --inplace).
    paddle_te loads the library itself (paddle_te/_ops_lib.py), so only the compile/link part
    is kept; we also write paddle_te/_build_info.py describing the build (from CMake's
    pte_build.json).
    """

    def build_extensions(self):
        global BUILD
        BUILD = build_core()
        ext = self.extensions[0]
        # Every object of the core, also those the glue does not call: the C API is reached
        # through ctypes too (paddle_te/_ops_lib.py).
        # (Appended: Paddle's builder put its own libraries there.)
        ext.extra_link_args = list(ext.extra_link_args) + [
            "-Wl,--whole-archive", BUILD["core_library"], "-Wl,--no-whole-archive", "-fopenmp",
            "-ldl"]
        ext.depends = list(ext.depends) + [BUILD["core_library"]]
        ext.define_macros = list(ext.define_macros) + [
            (d, None) for g in BUILD["groups"].values() for d in g["defines"]]
        if BUILD["with_cuda"]:
            lib = BUILD["cuda_library_dir"]
            # rpath to the toolkit so the .so loads (CPU kernels run) on a machine without a GPU.
            ext.extra_link_args += [f"-L{lib}", "-lcudart", f"-Wl,-rpath,{lib}"]
        super().build_extensions()

    def run(self):
        from setuptools.command.build_ext import build_ext as _setuptools_build_ext

        _setuptools_build_ext.run(self)
        self._remove_objects()
        self._write_build_info()

    def _remove_objects(self):
        # Paddle's builder puts the object files under build_lib (build_lib/build/temp.*), which
        # a wheel would ship: remove them (they are not reused by the next build anyway).
        obj_root = os.path.join(self.build_lib, "build")
        for dirpath, _, files in os.walk(obj_root):
            for name in files:
                if name.endswith(".o"):
                    os.remove(os.path.join(dirpath, name))

    def _write_build_info(self):
        groups = BUILD["groups"]
        text = (
            '"""Generated by setup.py: how this copy of paddle_te was built."""\n'
            f"VERSION = {VERSION!r}\n"
            f"WITH_CUDA = {BUILD['with_cuda']!r}\n"
            f"WITH_CUDNN = {'cudnn' in groups!r}\n"
            f"WITH_FLASH = {'flash' in groups!r}\n"
            f"WITH_FLASH_SM90 = {'flash_sm90' in groups!r}\n"
            f"CUDA_ARCHS = {BUILD['archs']!r}\n"
            f"FLASH_HDIMS = {BUILD['flash_hdims']!r}\n"
            f"SOURCE_GROUPS = {sorted(groups)!r}\n"
            f"PADDLE_VERSION = {paddle.__version__!r}\n"
        )
        base = ROOT if self.inplace else self.build_lib
        for path in [os.path.join(base, "paddle_te", "_build_info.py")]:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)


EXT = build_config()
BUILD = None  # pte_build.json of the core, once build_ext has built it

setup(
    name="paddle_te",
    version=VERSION,
    description="Fused attention and masked softmax for PaddlePaddle (custom operators)",
    packages=find_packages(include=["paddle_te", "paddle_te.*"]),
    python_requires=">=3.10",
    ext_modules=[EXT],
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
