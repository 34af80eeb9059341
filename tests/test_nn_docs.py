"""Every ```python block of docs/layers.md runs (each in a fresh namespace)."""

import os
import re

import paddle
import pytest

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "layers.md")


def _blocks():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_docs_have_examples():
    assert len(_blocks()) >= 5


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_layers_md_example_runs(index):
    old = paddle.get_default_dtype()
    try:
        exec(compile(_blocks()[index], f"{DOC}:block{index}", "exec"), {"__name__": "__doc__"})
    finally:
        paddle.set_default_dtype(old)
