"""Build and install paddle_te: the Python package `paddle_te` plus the Paddle custom-op library
`paddle_te/_paddle_te_ops.so` (built with paddle.utils.cpp_extension).

    pip install --no-build-isolation .            # install
    pip install --no-build-isolation -e .         # editable
    python setup.py build_ext --inplace           # in-tree build (what `make test` uses)

CPU or CUDA build (SPEC §6): CUDA when Paddle is compiled with CUDA and nvcc is found.
Environment:
    PADDLE_TE_WITH_CUDA=1|0   force the CUDA (1) or the CPU-only (0) build
    CUDA_HOME                 CUDA toolkit (default: from nvcc on PATH, else /usr/local/cuda)
    PTE_ARCHS                 GPU archs, ";"/","-separated, default "80;90" (e.g. "90a", "80")
    PTE_HDIMS                 head dims of the flash kernels compiled, default "64;128"
    PTE_BUILD_FLASH=0, PTE_BUILD_CUDNN=0   leave the flash kernels / the cuDNN backend out
    CUDNN_INCLUDE_DIR, CUDNN_FRONTEND_INCLUDE_DIR, CUTLASS_INCLUDE_DIR   header locations
                              (else looked for under third_party/, see tools/fetch_deps.sh)
    MAX_JOBS                  parallel compile jobs (Paddle's builder; default: CPU count)
docs/build.md has the details.
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"
EXT_NAME = "paddle_te._paddle_te_ops"  # not "paddle_te": Paddle's setup() would shadow the package


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
from paddle.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

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


def _archs():
    raw = os.environ.get("PTE_ARCHS", "80;90")
    archs = [a.strip() for a in raw.replace(",", ";").split(";") if a.strip()]
    if not archs:
        sys.exit(f"setup.py: PTE_ARCHS={raw!r}: no architecture given")
    flags = []
    for a in archs:
        if not (a[:-1] if a.endswith("a") else a).isdigit():
            sys.exit(f"setup.py: PTE_ARCHS entry {a!r}: expected a number such as 80, 90 or 90a")
        flags.append(f"-gencode=arch=compute_{a},code=sm_{a}")
    return flags


def _first_dir_with(filename, candidates):
    for d in candidates:
        if d and os.path.isfile(os.path.join(d, filename)):
            return os.path.abspath(d)
    return None


def _find_cudnn():
    """Include dirs of cuDNN and cudnn-frontend when both sets of headers are found, else None."""
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    third = os.path.join(ROOT, "third_party")
    cudnn_inc = _first_dir_with(
        "cudnn.h",
        [os.environ.get("CUDNN_INCLUDE_DIR"), os.path.join(third, "cudnn", "include"),
         os.path.join(site, "nvidia", "cudnn", "include"), os.path.join(CUDA_HOME or "", "include"), "/usr/include"],
    )
    fe_inc = _first_dir_with(
        "cudnn_frontend.h",
        [os.environ.get("CUDNN_FRONTEND_INCLUDE_DIR"), os.path.join(third, "cudnn_frontend", "include"),
         os.path.join(site, "include")],
    )
    if not cudnn_inc or not fe_inc:
        return None
    return [cudnn_inc, fe_inc] if cudnn_inc != fe_inc else [cudnn_inc]


def _cuda_lib_dir():
    for sub in ("lib64", os.path.join("targets", "x86_64-linux", "lib"), "lib"):
        d = os.path.join(CUDA_HOME, sub)
        if os.path.exists(os.path.join(d, "libcudart.so")):
            return d
    return os.path.join(CUDA_HOME, "lib64")


# C++ sources compiled with hidden visibility (per-source flags; setuptools has none).
HIDDEN_VISIBILITY_SOURCES = set()
HIDDEN_VISIBILITY_FLAGS = ["-fvisibility=hidden", "-fvisibility-inlines-hidden"]


def build_config():
    sources = _glob("csrc/paddle/*.cc", "csrc/core/*.cc", "csrc/cpu/*.cc")
    depends = _glob("csrc/**/*.h", "csrc/**/*.cuh")
    include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    nvcc = ["-O3", "-std=c++17"]
    link = ["-fopenmp"]
    summary = {"cuda": WITH_CUDA, "cudnn": False, "flash": False, "archs": "", "hdims": ""}

    if WITH_CUDA:
        # Same source selection as CMakeLists.txt (the framework-free core build).
        sources += _glob("csrc/cuda/*.cu", "csrc/cuda/*.cc", "csrc/cuda/softmax/*.cu", "csrc/cuda/softmax/*.cc")
        defines = ["-DPTE_WITH_CUDA"]
        if not PADDLE_HAS_CUDA:
            # CUDA sources against a CPU Paddle (our CI): keep Paddle's headers from pulling in
            # cuBLAS/Python pieces a CPU build does not ship (PADDLE_NOTES "CUDA builds").
            defines.append("-DPADDLE_NO_PYTHON")
        cccl = os.path.join(CUDA_HOME, "include", "cccl")
        if os.path.isdir(cccl):  # CUDA 13 moved thrust/cub here
            include_dirs.append(cccl)
        flash = _glob("csrc/cuda/attn/*.cu")
        if flash and _env_flag("PTE_BUILD_FLASH") is not False:
            # Generated instantiations, one per file; PTE_HDIMS picks the head dims compiled, one
            # PTE_FLASH_HDIM_<d> macro each (as CMakeLists.txt does).
            hdims = [h.strip() for h in os.environ.get("PTE_HDIMS", "64;128").replace(",", ";").split(";") if h.strip()]
            for hd in hdims:
                if not hd.isdigit():
                    sys.exit(f"setup.py: PTE_HDIMS entry {hd!r}: expected a head dim such as 64")
                flash += _glob(f"csrc/cuda/attn/sm80/inst/*_hdim{hd}_*.cu")
            sources += flash
            defines += ["-DPTE_WITH_FLASH"] + [f"-DPTE_FLASH_HDIM_{hd}" for hd in hdims]
            cutlass = os.environ.get("CUTLASS_INCLUDE_DIR") or os.path.join(ROOT, "third_party", "cutlass", "include")
            if os.path.isdir(cutlass):
                include_dirs.append(cutlass)
            summary["flash"] = True
            summary["hdims"] = ",".join(hdims)
        cudnn = _find_cudnn()
        cudnn_sources = _glob("csrc/cuda/cudnn/*.cu", "csrc/cuda/cudnn/*.cc")
        if cudnn is not None and cudnn_sources and _env_flag("PTE_BUILD_CUDNN") is not False:
            # cudnn-frontend is header-only and libcudnn is loaded at run time (dlopen), so the
            # library loads on machines without cuDNN; the backend then reports itself unavailable.
            sources += cudnn_sources
            include_dirs += cudnn
            defines.append("-DPTE_WITH_CUDNN")
            summary["cudnn"] = True
            # Keep cudnn-frontend's inline functions out of the dynamic symbol table so they never
            # interpose with another copy in the process (Paddle's own); see build_ext below.
            HIDDEN_VISIBILITY_SOURCES.update(os.path.join(ROOT, p) for p in cudnn_sources if p.endswith(".cc"))
        link.append("-ldl")
        arch_flags = _archs()
        summary["archs"] = os.environ.get("PTE_ARCHS", "80;90")
        cxx += defines
        nvcc += defines + arch_flags + ["--expt-relaxed-constexpr", "-lineinfo"]
        cuda_lib = _cuda_lib_dir()
        # rpath to the toolkit so the .so loads (CPU kernels run) on a machine without a GPU.
        link += [f"-L{cuda_lib}", f"-Wl,-rpath,{cuda_lib}"]
        ext = CUDAExtension(
            sources=sources,
            include_dirs=include_dirs,
            depends=depends,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
        )
    else:
        ext = CppExtension(
            sources=sources,
            include_dirs=include_dirs,
            depends=depends,
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
        )
    ext.name = EXT_NAME
    return ext, summary


class build_ext(BuildExtension.with_options(no_python_abi_suffix=True)):
    """Paddle's builder, minus its package-stub machinery.

    Paddle's own run() writes a generated Python stub next to the library, renames the library
    for its stub, and deletes *.o files under the output folder (the source tree for --inplace).
    paddle_te loads the library itself (paddle_te/_ops_lib.py), so only the compile/link part
    is kept; we also write paddle_te/_build_info.py describing the build.
    """

    def build_extensions(self):
        # Per-source flags: wrap the compiler class's _compile (Paddle's builder calls it for
        # every object, on copies of the compiler) for the duration of this build.
        cls = self.compiler.__class__
        original = cls._compile

        def _compile(comp, obj, src, ext, cc_args, extra_postargs, pp_opts):
            if os.path.abspath(src) in HIDDEN_VISIBILITY_SOURCES:
                extra_postargs = list(extra_postargs) + HIDDEN_VISIBILITY_FLAGS
            return original(comp, obj, src, ext, cc_args, extra_postargs, pp_opts)

        cls._compile = _compile
        try:
            super().build_extensions()
        finally:
            cls._compile = original

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
        text = (
            '"""Generated by setup.py: how this copy of paddle_te was built."""\n'
            f"VERSION = {VERSION!r}\n"
            f"WITH_CUDA = {SUMMARY['cuda']!r}\n"
            f"WITH_CUDNN = {SUMMARY['cudnn']!r}\n"
            f"WITH_FLASH = {SUMMARY['flash']!r}\n"
            f"CUDA_ARCHS = {SUMMARY['archs']!r}\n"
            f"FLASH_HDIMS = {SUMMARY['hdims']!r}\n"
            f"PADDLE_VERSION = {paddle.__version__!r}\n"
        )
        base = ROOT if self.inplace else self.build_lib
        for path in [os.path.join(base, "paddle_te", "_build_info.py")]:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)


EXT, SUMMARY = build_config()

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
