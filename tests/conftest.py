"""Shared pytest setup: `import reference` works from every test module, whatever pytest's import
mode, and the random generators start from a fixed state in every test."""

import os
import sys

import numpy as np
import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture
def rng(request):
    """A numpy generator seeded from the test's id, so each test (and each parameter set) draws
    different but repeatable inputs."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
