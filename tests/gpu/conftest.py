"""GPU tests of the CUDA kernels through the framework-free core (`paddle_te_core`, DLPack).

They run where a CUDA device, torch and a CUDA build of the module are present, and skip cleanly
everywhere else (CI has no GPU). The module is looked up in $PTE_CORE_DIR, then build/python
(`cmake -S . -B build && cmake --build build`). tools/gpu_check.sh runs them on the GPU machine.

Habits (STYLE 1-2): compare with tests/reference.py (float64), fresh random unit-scale inputs,
outputs poisoned with NaN before each call, FlashAttention's tolerance rule.
"""

import os
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_TESTS = os.path.dirname(_HERE)
_ROOT = os.path.dirname(_TESTS)
for p in (_TESTS,):
    if p not in sys.path:
        sys.path.insert(0, p)
from core_import import import_core  # noqa: E402


def _load_core():
    """The CUDA build of paddle_te_core, or the reason it cannot be used."""
    try:
        core = import_core()
    except ImportError as e:
        return None, f"paddle_te_core not importable ({e}); build it with cmake"
    if not getattr(core, "with_cuda", False):
        return None, "paddle_te_core was built without CUDA"
    return core, ""


def _gpu_reason():
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return ""


_REASON = _gpu_reason()
_CORE, _CORE_REASON = (None, _REASON) if _REASON else _load_core()


def pytest_collection_modifyitems(config, items):
    if _CORE is not None:
        return
    skip = pytest.mark.skip(reason=_CORE_REASON)
    for item in items:
        if os.path.dirname(str(item.fspath)) == _HERE:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def core():
    return _CORE


@pytest.fixture(scope="session")
def torch():
    import torch as _torch

    return _torch
