"""Finding the framework-free core module `paddle_te_core` (built by CMake). import_core, for the
GPU tests, the benchmarks and tools/gpu_sanitize.py: $PTE_CORE_DIR first, then build/python
(`cmake -S . -B build && cmake --build build`). cpu_core, for the CPU suite: the one on the path
(`make test` puts build/core/python there), else build/core/python (`make core`) or build/python.
scoped_env: the core reads its PTE_* variables at every call, so a caller picks a kernel for a
block of calls by setting them around it."""

import contextlib
import glob
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_core():
    """Import paddle_te_core from the first folder that holds a build of it (ImportError if none)."""
    for d in (os.environ.get("PTE_CORE_DIR"), os.path.join(ROOT, "build", "python")):
        if d and glob.glob(os.path.join(d, "paddle_te_core*.so")):
            if d not in sys.path:
                sys.path.insert(0, d)
            break
    return importlib.import_module("paddle_te_core")


def cpu_core():
    """paddle_te_core for the CPU suite, or None when it is not built."""
    try:
        return importlib.import_module("paddle_te_core")
    except ImportError:
        pass
    for d in (os.path.join(ROOT, "build", "core", "python"), os.path.join(ROOT, "build", "python")):
        if glob.glob(os.path.join(d, "paddle_te_core*.so")):
            sys.path.insert(0, d)
            return importlib.import_module("paddle_te_core")
    return None


@contextlib.contextmanager
def scoped_env(values):
    """Sets the environment variables of the dict `values` for the block and restores what was
    there before (unset variables are unset again)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
