"""Finding the framework-free core module `paddle_te_core` (built by CMake): $PTE_CORE_DIR first,
then build/python (`cmake -S . -B build && cmake --build build`). Shared by the GPU tests, the
benchmarks and tools/gpu_sanitize.py so they all look in the same places."""

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
