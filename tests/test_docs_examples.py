"""Every ```python code block in README.md and docs/*.md runs, so the documentation cannot drift
from the code.

Conventions for writing documentation examples:
* A block fenced with ```python is executed; use ```text, ```bash or ```console for anything
  that is not meant to run (output, shell commands, other frameworks' code).
* Each block is self-contained: it runs in a fresh namespace (its own imports), one block after
  the other, in one Python subprocess per file whose working directory is an empty temporary
  folder. `paddle_te` is imported from this source tree.
* A block that cannot run everywhere says so in a comment line of its own:
      # requires: gpu                 a CUDA build of Paddle with a visible GPU
      # requires: <module>            an importable Python module, e.g. `# requires: torch`
  Such a block is skipped (and reported) where the requirement is not met.
* A block fails the test by raising (an `assert` is the usual way to state what it shows).
"""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300  # per file; the slowest file today takes a few seconds

_FENCE = re.compile(r"^(\s*)```python\s*$")
_REQUIRES = re.compile(r"^\s*#\s*requires:\s*([\w.\-]+)\s*$", re.MULTILINE)

# Runs in the subprocess: execute each block in a fresh namespace; report per block.
_RUNNER = r"""
import importlib.util, json, sys, traceback
blocks = json.load(open(sys.argv[1]))

def gpu():
    try:
        import paddle
        return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    except Exception:
        return False

results = []
for b in blocks:
    missing = [r for r in b["requires"]
               if not (gpu() if r == "gpu" else importlib.util.find_spec(r) is not None)]
    if missing:
        results.append({"line": b["line"], "status": "skipped", "why": ", ".join(missing)})
        continue
    try:
        exec(compile(b["code"], f"{b['file']}:{b['line']}", "exec"), {"__name__": "__main__"})
        results.append({"line": b["line"], "status": "passed"})
    except BaseException:
        results.append({"line": b["line"], "status": "failed", "why": traceback.format_exc()})
print("@@RESULTS@@" + json.dumps(results))
"""


def doc_files():
    files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return [f for f in files if os.path.exists(f)]


def python_blocks(path):
    """[{"file", "line" (of the first code line), "code", "requires"}] for each ```python block."""
    blocks, lines = [], open(path, encoding="utf-8").read().split("\n")
    rel = os.path.relpath(path, ROOT)
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, start, body = len(m.group(1)), i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{rel}:{start}: ```python block is never closed")
        code = "\n".join(body) + "\n"
        blocks.append({"file": rel, "line": start + 1, "code": code,
                       "requires": _REQUIRES.findall(code)})
        i += 1
    return blocks


def _files_with_blocks():
    return [f for f in doc_files() if python_blocks(f)]


def test_parser_finds_the_examples():
    # Guards against a parser change silently finding nothing to run.
    found = {os.path.relpath(f, ROOT) for f in _files_with_blocks()}
    assert "README.md" in found
    assert os.path.join("docs", "index.md") in found


def test_requires_convention(tmp_path):
    text = "x\n```python\n# requires: gpu\nimport paddle\n```\n```python\nprint(1)\n```\n"
    p = tmp_path / "t.md"
    p.write_text(text)
    blocks = python_blocks(str(p))
    assert [b["requires"] for b in blocks] == [["gpu"], []]
    assert [b["line"] for b in blocks] == [3, 7]


@pytest.mark.parametrize("path", _files_with_blocks(), ids=lambda p: os.path.relpath(p, ROOT))
def test_doc_examples_run(path, tmp_path):
    blocks = python_blocks(path)
    spec = tmp_path / "blocks.json"
    spec.write_text(json.dumps(blocks))
    runner = tmp_path / "run_blocks.py"
    runner.write_text(_RUNNER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("GLOG_minloglevel", "2")
    proc = subprocess.run([sys.executable, str(runner), str(spec)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    marker = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULTS@@")]
    assert marker, (f"the example runner died (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = json.loads(marker[-1][len("@@RESULTS@@"):])
    rel = os.path.relpath(path, ROOT)
    failed = [r for r in results if r["status"] == "failed"]
    assert not failed, "\n\n".join(f"{rel}:{r['line']} failed:\n{r['why']}" for r in failed)
    skipped = [r for r in results if r["status"] == "skipped"]
    if skipped and len(skipped) == len(results):
        pytest.skip(f"every example in {rel} needs something missing here: "
                    + "; ".join(f"line {r['line']}: {r['why']}" for r in skipped))
