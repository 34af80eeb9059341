"""SPEC §7: sizes whose element counts pass 2^31 index correctly. A full-form padding mask
[3, 1, 32768, 32768] (3 * 2^30 bool elements, 3.2 GB) puts the last sequence's rows past element
2^31, so 32-bit offsets in the mask -> cu_seqlens kernel would read the wrong memory or fault.
About 3.5 GB of memory and under a minute on 2 cores: the cheapest kernel to hold to this rule
on the CPU."""
import numpy as np
import paddle

import paddle_te


def test_mask_to_cu_seqlens_past_2_31_elements():
    b, s = 3, 32768
    len_q = [s, 5, 1000]
    len_kv = [7, s, 20000]
    pos = paddle.arange(s, dtype="int32")
    lq = paddle.to_tensor(len_q, dtype="int32").reshape([b, 1, 1, 1])
    lk = paddle.to_tensor(len_kv, dtype="int32").reshape([b, 1, 1, 1])
    # True = padding: the outer OR of a q and a kv right-padding mask, per sequence.
    mask = (pos.reshape([1, 1, s, 1]) >= lq) | (pos.reshape([1, 1, 1, s]) >= lk)
    assert mask.shape == [b, 1, s, s] and b * s * s > 2**31
    cu_q, cu_kv = paddle_te.mask_to_cu_seqlens(mask)
    np.testing.assert_array_equal(cu_q.numpy(), np.cumsum([0] + len_q))
    np.testing.assert_array_equal(cu_kv.numpy(), np.cumsum([0] + len_kv))
