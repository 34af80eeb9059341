"""Bad input to every public function of paddle_te.ops (SPEC §7): each wrong call raises
ValueError or TypeError whose message names the argument; none crashes, aborts or hangs.

The calls run in a subprocess (this file is also the worker: `python test_bad_input.py OUT`),
one JSON line per call, so a segfault or abort in an op fails the tests instead of killing
pytest; each parametrized test then checks one call's outcome. A few calls bypass the Python
checks and go straight to the custom ops, to show the C++ side also answers with a ValueError
naming the argument.
"""

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = 300


def _cases():
    """[(id, thunk, allowed exception names, substring the message must contain)]."""
    import paddle

    import paddle_te
    from paddle_te import _ops_lib, ops

    paddle.set_device("cpu")

    def t(shape, dtype="float32"):
        return paddle.to_tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype))

    def i32(vals, dtype="int32"):
        return paddle.to_tensor(np.asarray(vals, dtype=dtype))

    def b(arr):
        return paddle.to_tensor(np.asarray(arr, dtype=bool))

    q, k, v = t([2, 5, 4, 8]), t([2, 6, 2, 8]), t([2, 6, 2, 8])
    tq, tk, tv = t([9, 4, 8]), t([11, 2, 8]), t([11, 2, 8])
    cu_q, cu_kv = i32([0, 3, 8]), i32([0, 6, 11])  # thd
    pq, pkv = i32([0, 3, 5]), i32([0, 6, 10])  # bshd lengths (3, 2) and (6, 4)
    x = t([2, 3, 4, 5])
    fa = ops.fused_attn
    V, T = ("ValueError",), ("TypeError",)

    def raw_attn(qq, kk, vv, fmt="bshd", mask_type="no_mask", scale=0.35):
        return _ops_lib.run_op(
            "pte_fused_attn",
            [("q", qq), ("k", kk), ("v", vv), ("cu_seqlens_q", None), ("cu_seqlens_kv", None),
             ("seed_offset", paddle.zeros([2], "int64"))],
            [("qkv_format", fmt), ("mask_type", mask_type), ("backend", "auto"), ("max_seqlen_q", 0),
             ("max_seqlen_kv", 0), ("window_left", -1), ("window_right", -1), ("softmax_scale", repr(scale)),
             ("dropout", 0.0), ("deterministic", False)],
            ["out", "lse"],
        )

    def raw_masked_softmax(xx, mask):
        return _ops_lib.run_op("pte_scaled_masked_softmax", [("x", xx), ("mask", mask)], [("scale", "1.0")], ["y"])

    def static_call(fn):
        paddle.enable_static()
        try:
            with paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()):
                return fn()
        finally:
            paddle.disable_static()

    return [
        # ---- fused_attn: tensors -------------------------------------------------------------
        ("q_rank", lambda: fa(t([2, 5, 32]), k, v), V, "q"),
        ("k_rank", lambda: fa(q, t([2, 6, 2, 8, 1]), v), V, "k"),
        ("thd_rank", lambda: fa(q, k, v, qkv_format="thd", cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv), V, "q"),
        ("q_not_tensor", lambda: fa(np.zeros([2, 5, 4, 8], np.float32), k, v), T, "q"),
        ("q_int_dtype", lambda: fa(t([2, 5, 4, 8], "int32"), k, v), T, "q"),
        ("k_dtype_mismatch", lambda: fa(q, t([2, 6, 2, 8], "float64"), v), T, "k"),
        ("k_batch", lambda: fa(q, t([3, 6, 2, 8]), t([3, 6, 2, 8])), V, "k"),
        ("v_seqlen", lambda: fa(q, k, t([2, 7, 2, 8])), V, "v"),
        ("v_heads", lambda: fa(q, k, t([2, 6, 1, 8])), V, "v"),
        ("heads_not_divisible", lambda: fa(q, t([2, 6, 3, 8]), t([2, 6, 3, 8])), V, "heads"),
        ("k_head_dim", lambda: fa(q, t([2, 6, 2, 16]), v), V, "k"),
        ("q_head_dim_zero", lambda: fa(t([2, 5, 4, 0]), t([2, 6, 2, 0]), v), V, "head dim"),
        # ---- fused_attn: options --------------------------------------------------------------
        ("qkv_format", lambda: fa(q, k, v, qkv_format="bhsd"), V, "qkv_format"),
        ("mask_type_unknown", lambda: fa(q, k, v, attn_mask_type="causal_top_left"), V, "attn_mask_type"),
        ("mask_type_arbitrary", lambda: fa(q, k, v, attn_mask_type="arbitrary"), V, "arbitrary"),
        ("backend_unknown", lambda: fa(q, k, v, backend="triton"), V, "backend"),
        ("backend_flash_on_cpu", lambda: fa(q, k, v, backend="flash"), V, "backend"),
        ("backend_cudnn_on_cpu", lambda: fa(q, k, v, backend="cudnn"), V, "backend"),
        ("backend_unfused_thd", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv,
                                           backend="unfused"), V, "backend"),
        ("window_below_minus_one", lambda: fa(q, k, v, window_size=(-2, 0)), V, "window_size"),
        ("window_not_pair", lambda: fa(q, k, v, window_size=(1,)), V, "window_size"),
        ("window_float", lambda: fa(q, k, v, window_size=(1.5, 2)), V, "window_size"),
        ("scale_zero", lambda: fa(q, k, v, softmax_scale=0.0), V, "softmax_scale"),
        ("scale_negative", lambda: fa(q, k, v, softmax_scale=-1.0), V, "softmax_scale"),
        ("scale_nan", lambda: fa(q, k, v, softmax_scale=math.nan), V, "softmax_scale"),
        ("scale_inf", lambda: fa(q, k, v, softmax_scale=math.inf), V, "softmax_scale"),
        ("scale_str", lambda: fa(q, k, v, softmax_scale="0.1"), T, "softmax_scale"),
        ("dropout_one", lambda: fa(q, k, v, dropout=1.0), V, "dropout"),
        ("dropout_negative", lambda: fa(q, k, v, dropout=-0.1), V, "dropout"),
        ("dropout_str", lambda: fa(q, k, v, dropout="0.1"), T, "dropout"),
        ("training_not_bool", lambda: fa(q, k, v, training="yes"), T, "training"),
        ("max_seqlen_negative", lambda: fa(q, k, v, max_seqlen_q=-1), V, "max_seqlen_q"),
        ("max_seqlen_float", lambda: fa(q, k, v, max_seqlen_kv=2.5), T, "max_seqlen_kv"),
        ("max_seqlen_over_padded", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq,
                                              cu_seqlens_kv=pkv, max_seqlen_q=6), V, "max_seqlen_q"),
        # ---- fused_attn: sequence lengths --------------------------------------------------
        ("padding_without_cu_seqlens", lambda: fa(q, k, v, attn_mask_type="padding_causal"), V, "cu_seqlens"),
        ("cu_seqlens_with_no_mask", lambda: fa(q, k, v, cu_seqlens_q=pq, cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_with_causal", lambda: fa(q, k, v, attn_mask_type="causal", cu_seqlens_q=pq,
                                              cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_int64", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([0, 3, 5], "int64"),
                                        cu_seqlens_kv=pkv), T, "cu_seqlens_q"),
        ("cu_seqlens_float", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq,
                                        cu_seqlens_kv=i32([0, 6, 10], "float32")), T, "cu_seqlens_kv"),
        ("cu_seqlens_length", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([0, 3, 4, 5]),
                                         cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_rank2", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([[0, 3, 5]]),
                                        cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_not_from_zero", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([1, 3, 5]),
                                                cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_decreasing", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq,
                                             cu_seqlens_kv=i32([0, 6, 5])), V, "cu_seqlens_kv"),
        ("cu_seqlens_over_padded", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=i32([0, 6, 8]),
                                              cu_seqlens_kv=pkv), V, "cu_seqlens_q"),
        ("cu_seqlens_missing_kv_cross", lambda: fa(q, k, v, attn_mask_type="padding", cu_seqlens_q=pq),
         V, "cu_seqlens_kv"),
        ("thd_without_cu_seqlens", lambda: fa(tq, tk, tv, qkv_format="thd"), V, "cu_seqlens_q"),
        ("thd_cu_seqlens_past_tokens", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=i32([0, 4, 10]),
                                                  cu_seqlens_kv=cu_kv), V, "cu_seqlens_q"),
        ("thd_cu_seqlens_lengths_differ", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=i32([0, 4, 6, 9]),
                                                     cu_seqlens_kv=cu_kv), V, "cu_seqlens_kv"),
        ("thd_over_max_seqlen", lambda: fa(tq, tk, tv, qkv_format="thd", cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv,
                                           max_seqlen_q=3), V, "cu_seqlens_q"),
        # ---- masked softmax -----------------------------------------------------------------
        ("softmax_rank", lambda: ops.scaled_softmax(t([3, 4, 5])), V, "x"),
        ("softmax_int", lambda: ops.scaled_softmax(t([2, 3, 4, 5], "int64")), T, "x"),
        ("softmax_not_tensor", lambda: ops.scaled_softmax([[1.0]]), T, "x"),
        ("softmax_scale_zero", lambda: ops.scaled_softmax(x, scale=0.0), V, "scale"),
        ("softmax_scale_inf", lambda: ops.scaled_upper_triang_masked_softmax(x, scale=math.inf), V, "scale"),
        ("softmax_scale_bool", lambda: ops.scaled_aligned_causal_masked_softmax(x, scale=True), T, "scale"),
        ("masked_softmax_mask_float", lambda: ops.scaled_masked_softmax(x, t([2, 1, 4, 5])), T, "mask"),
        ("masked_softmax_mask_shape", lambda: ops.scaled_masked_softmax(x, b(np.zeros([2, 1, 4, 6]))), V, "mask"),
        ("masked_softmax_mask_heads", lambda: ops.scaled_masked_softmax(x, b(np.zeros([2, 3, 4, 5]))), V, "mask"),
        ("masked_softmax_mask_batch", lambda: ops.scaled_masked_softmax(x, b(np.zeros([3, 1, 4, 5]))), V, "mask"),
        ("masked_softmax_mask_rank", lambda: ops.scaled_masked_softmax(x, b(np.zeros([4, 5]))), V, "mask"),
        ("masked_softmax_mask_none", lambda: ops.scaled_masked_softmax(x, None), T, "mask"),
        # ---- mask_to_cu_seqlens -------------------------------------------------------------
        ("m2c_float_mask", lambda: ops.mask_to_cu_seqlens(t([2, 1, 1, 5])), T, "mask"),
        ("m2c_rank", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 5]))), V, "mask"),
        ("m2c_dim1", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 2, 1, 5]))), V, "mask"),
        ("m2c_kv_batch", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 1, 1, 5])), b(np.zeros([3, 1, 1, 4]))),
         V, "mask_kv"),
        ("m2c_kv_with_full_mask", lambda: ops.mask_to_cu_seqlens(b(np.zeros([2, 1, 5, 5])), b(np.zeros([2, 1, 1, 5]))),
         V, "mask"),
        ("m2c_left_padding", lambda: ops.mask_to_cu_seqlens(b([[[[1, 1, 0, 0, 0]]], [[[0, 0, 0, 0, 0]]]])),
         V, "arbitrary"),
        ("m2c_hole", lambda: ops.mask_to_cu_seqlens(b([[[[0, 1, 0, 1, 1]]], [[[0, 0, 0, 0, 0]]]])), V, "arbitrary"),
        ("m2c_full_not_outer_or", lambda: ops.mask_to_cu_seqlens(b(np.triu(np.ones([4, 4]), 1).reshape(1, 1, 4, 4))),
         V, "arbitrary"),
        # ---- check_set_window_size -----------------------------------------------------------
        ("window_policy_unknown_type", lambda: paddle_te.masks.check_set_window_size("sliding", None), V,
         "attn_mask_type"),
        ("window_policy_below", lambda: paddle_te.masks.check_set_window_size("causal", (-3, 0)), V, "window_size"),
        ("window_policy_bool", lambda: paddle_te.masks.check_set_window_size("no_mask", (True, 1)), V, "window_size"),
        # ---- static mode: shape/dtype checks without values -----------------------------
        ("static_q_rank", lambda: static_call(lambda: fa(paddle.static.data("q", [2, 5, 32]),
                                                           paddle.static.data("k", [2, 6, 2, 8]),
                                                           paddle.static.data("v", [2, 6, 2, 8]))), V, "q"),
        ("static_cu_seqlens_dtype", lambda: static_call(lambda: fa(
            paddle.static.data("q", [-1, 5, 4, 8]), paddle.static.data("k", [-1, 6, 2, 8]),
            paddle.static.data("v", [-1, 6, 2, 8]), attn_mask_type="padding",
            cu_seqlens_q=paddle.static.data("cq", [-1], "int64"),
            cu_seqlens_kv=paddle.static.data("ck", [-1], "int32"))), T, "cu_seqlens_q"),
        ("static_mask_dtype", lambda: static_call(lambda: ops.scaled_masked_softmax(
            paddle.static.data("x", [-1, 3, 4, 5]), paddle.static.data("m", [-1, 1, 4, 5], "int32"))), T, "mask"),
        # ---- the C++ ops themselves (Python checks bypassed) ------------------------------
        ("raw_op_q_rank", lambda: raw_attn(t([2, 5, 32]), k, v), V, "q"),
        ("raw_op_heads", lambda: raw_attn(q, t([2, 6, 3, 8]), t([2, 6, 3, 8])), V, "heads"),
        ("raw_op_scale", lambda: raw_attn(q, k, v, scale=-1.0), V, "softmax_scale"),
        ("raw_op_mask_type", lambda: raw_attn(q, k, v, mask_type="sliding"), V, "attn_mask_type"),
        ("raw_op_padding_no_cu", lambda: raw_attn(q, k, v, mask_type="padding"), V, "cu_seqlens_q"),
        ("raw_op_softmax_mask_shape", lambda: raw_masked_softmax(x, b(np.zeros([2, 1, 4, 6]))), V, "mask"),
    ]


def _worker(out_path):
    warnings.simplefilter("ignore")
    cases = _cases()
    with open(out_path, "w") as f:
        for case_id, thunk, allowed, needle in cases:
            # Written before the call: if the process dies, the last line names the culprit.
            f.write(json.dumps({"id": case_id, "started": True}) + "\n")
            f.flush()
            rec = {"id": case_id, "allowed": list(allowed), "needle": needle}
            try:
                thunk()
                rec.update(exc=None, msg="")
            except Exception as e:  # noqa: BLE001 - recorded and judged by the test
                rec.update(exc=type(e).__name__, mro=[c.__name__ for c in type(e).__mro__], msg=str(e))
            f.write(json.dumps(rec) + "\n")
            f.flush()


def _case_ids():
    # The ids without building tensors: parse them from this file's source.
    import re

    src = open(os.path.abspath(__file__)).read()
    body = src[src.index("    return [\n", src.index("def _cases")):src.index("def _worker")]
    return re.findall(r'^\s+\("([a-z0-9_]+)", lambda', body, flags=re.M)


CASE_IDS = _case_ids()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import paddle_te

    out = tmp_path_factory.mktemp("bad_input") / "report.jsonl"
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(paddle_te.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("GLOG_minloglevel", "2")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(out)], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    results, last_started = {}, None
    if out.exists():
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("started"):
                last_started = rec["id"]
            else:
                results[rec["id"]] = rec
    return {"rc": proc.returncode, "stderr": proc.stderr[-4000:], "results": results, "last_started": last_started}


def test_worker_did_not_crash(report):
    assert report["rc"] == 0, (
        f"the bad-input worker died with exit code {report['rc']} during case {report['last_started']!r}:\n"
        f"{report['stderr']}"
    )


def test_at_least_thirty_cases():
    assert len(CASE_IDS) >= 30 and len(set(CASE_IDS)) == len(CASE_IDS)


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input(report, case_id):
    rec = report["results"].get(case_id)
    if rec is None:
        pytest.fail(f"{case_id}: no result (the worker died during {report['last_started']!r}, "
                    f"exit code {report['rc']})\n{report['stderr']}")
    assert rec["exc"] is not None, f"{case_id}: no exception raised"
    assert any(name in rec["mro"] for name in rec["allowed"]), (
        f"{case_id}: raised {rec['exc']}, expected one of {rec['allowed']}: {rec['msg']}")
    assert rec["needle"] in rec["msg"], f"{case_id}: message does not name {rec['needle']!r}: {rec['msg']}"
    assert "Traceback" not in rec["msg"] and len(rec["msg"]) < 2000, f"{case_id}: message is not clean: {rec['msg']}"


def test_window_warning_is_userwarning():
    from paddle_te.masks import check_set_window_size

    with pytest.warns(UserWarning, match="window_size"):
        assert check_set_window_size("causal", (4, 2)) == (4, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_set_window_size("causal", None) == (-1, 0)
        assert check_set_window_size("padding_causal_bottom_right", (-1, -1)) == (-1, 0)
        assert check_set_window_size("causal", (3, 0)) == (3, 0)
        assert check_set_window_size("no_mask", None) == (-1, -1)
        assert check_set_window_size("padding", (-1, 0)) == (-1, 0)
        assert check_set_window_size("arbitrary", [2, 5]) == (2, 5)


if __name__ == "__main__":
    _worker(sys.argv[1])
