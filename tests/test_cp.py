"""Context parallelism (SPEC §11) on the CPU: N = 2, 3 and 4 processes on this machine over
Paddle's gloo backend. Each process is one rank of tests/cp_worker.py; every rank's output and
gradient shards are compared with the float64 oracle over the whole sequence (tests/reference.py).

The processes of one N run their cases once (a module-scoped launch, ~10-20 s); each case is then
its own test. N = 2 and 4 run every case; N = 3 (an odd ring: over gloo `p2p` runs the
all_gather form there, see docs/context_parallel.md) runs a few, to keep the launch short. A rank
that fails or hangs fails the launch (every process is killed, no hang): gloo collectives time
out on their own, and the launch has a wall-clock limit.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

import cp_worker

_TESTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS)
LAUNCH_TIMEOUT_S = 420


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def launch(n, out_dir, cases=None, timeout=LAUNCH_TIMEOUT_S):
    """Run tests/cp_worker.py as N gloo ranks; returns {rank: [result dicts]}. Raises (after
    killing every process) when a rank exits non-zero or the launch outlives `timeout`."""
    ports = _free_ports(n)
    endpoints = ",".join(f"127.0.0.1:{p}" for p in ports)
    procs = []
    for rank in range(n):
        env = dict(os.environ)
        env.update(
            PADDLE_TRAINER_ID=str(rank), PADDLE_TRAINERS_NUM=str(n),
            PADDLE_TRAINER_ENDPOINTS=endpoints, PADDLE_CURRENT_ENDPOINT=f"127.0.0.1:{ports[rank]}",
            PADDLE_DISTRI_BACKEND="gloo", CP_OUT=str(out_dir), OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([_ROOT, _TESTS, env.get("PYTHONPATH", "")]),
        )
        if cases:
            env["CP_CASES"] = ",".join(cases)
        log = open(os.path.join(out_dir, f"rank{rank}.log"), "w")
        procs.append((subprocess.Popen([sys.executable, os.path.join(_TESTS, "cp_worker.py")],
                                       env=env, cwd=_ROOT, stdout=log, stderr=subprocess.STDOUT), log))
    deadline = time.monotonic() + timeout
    failed = None
    try:
        while any(p.poll() is None for p, _ in procs):
            bad = [r for r, (p, _) in enumerate(procs) if p.poll() not in (None, 0)]
            if bad:
                failed = f"rank {bad[0]} exited with status {procs[bad[0]][0].returncode}"
                break
            if time.monotonic() > deadline:
                failed = f"launch of N={n} ranks exceeded {timeout} s"
                break
            time.sleep(0.2)
        else:
            bad = [r for r, (p, _) in enumerate(procs) if p.returncode != 0]
            if bad:
                failed = f"rank {bad[0]} exited with status {procs[bad[0]][0].returncode}"
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    if failed:
        tail = open(os.path.join(out_dir, "rank0.log")).read()[-3000:]
        raise RuntimeError(f"{failed}; rank 0 log tail:\n{tail}")
    results = {}
    for rank in range(n):
        with open(os.path.join(out_dir, f"rank{rank}.jsonl")) as f:
            results[rank] = [json.loads(line) for line in f]
    return results


# N = 3: rank 0 and rank 2 are both even and neighbours in the ring, which the parity order of
# N = 2 and 4 never meets. Both comm types, both layouts, a window, padding, MQA, dropout.
ODD_N_CASES = [
    "bshd-causal-p2p", "bshd-causal-all_gather", "sbhd-padding_causal-w6-p2p",
    "sbhd-no_mask-all_gather", "bshd-causal-mqa-p2p", "bshd-causal-dropout-p2p",
]


@pytest.fixture(scope="module", params=[2, 4], ids=lambda n: f"N{n}")
def cp_results(request, tmp_path_factory):
    n = request.param
    return n, launch(n, tmp_path_factory.mktemp(f"cp_n{n}"))


@pytest.fixture(scope="module")
def cp_results_odd(tmp_path_factory):
    return 3, launch(3, tmp_path_factory.mktemp("cp_n3"), cases=ODD_N_CASES)


def check_case(n, results, case):
    for rank in range(n):
        rows = [r for r in results[rank] if r["case"] == case]
        assert len(rows) == 1, f"N={n} rank {rank}: no result for {case}"
        row = rows[0]
        assert "error" not in row, f"N={n} rank {rank} {case}:\n{row['error']}"
        for key, value in row.items():
            if key == "case":
                continue
            if key == "repeat_bitwise":
                assert value, f"N={n} rank {rank} {case}: not bitwise repeatable"
            elif key == "dygraph_bitwise":
                assert value, f"N={n} rank {rank} {case}: static mode differs from dygraph"
            else:
                assert value <= cp_worker.RTOL, f"N={n} rank {rank} {case}: {key} rel err {value:.2e}"


@pytest.mark.parametrize("case", cp_worker.CASE_NAMES)
def test_cp_matches_single_process(cp_results, case):
    check_case(*cp_results, case)


@pytest.mark.parametrize("case", ODD_N_CASES)
def test_cp_odd_n_matches_single_process(cp_results_odd, case):
    check_case(*cp_results_odd, case)


class _Group:
    def __init__(self, backend):
        self.backend = backend


@pytest.mark.parametrize("backend", ["GLOO", "NCCL"])
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_odd_n_over_gloo_runs_all_gather(backend, n):
    from paddle_te.distributed._ring import _comm_form

    odd_gloo = backend == "GLOO" and n % 2 == 1
    assert _comm_form(_Group(backend), n, False, "p2p") == ("all_gather" if odd_gloo else "p2p")
    assert _comm_form(_Group(backend), n, False, "all_gather") == "all_gather"
    assert _comm_form(_Group(backend), n, True, "p2p") == "all_gather"  # static mode
