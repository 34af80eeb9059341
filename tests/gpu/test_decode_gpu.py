"""CUDA decode_attn (SPEC §10) through paddle_te_core on torch tensors, against tests/reference.py.

Both attention kernels run every case (PTE_DECODE_KERNEL=simt: CUDA cores; mma: tensor cores),
the tensor-core one with both K/V pipelines (PTE_DECODE_PIPELINE: auto is the shallow one,
"mma-deep" the opt-in one that fills an sm_90 block's shared memory; sm_90 only). On sm_90 every
split launch runs its combine as a programmatic dependent launch (PDL); the PDL tests compare it
with the plain launch (PTE_DECODE_PDL=0) bit for bit, eagerly and under CUDA-graph capture and
replay.
Grid: float16/bfloat16, head dims 64/128/256, GQA groups (MHA, 4, 8, MQA), s_q 1..16 (rows per
block: simt 1..8 and several row chunks; mma one or two m16 tiles, padded, and several chunks),
contiguous and paged caches (page sizes 1, 7, 16, 64, 256, shuffled page tables; pages smaller
than, equal to and larger than the mma kernel's 64-key tile), lengths 0, 1, odd and long (not
multiples of the tile), windows, forced and automatic split counts (more splits than tiles),
with and without the in-place append. Each case: outputs poisoned with NaN, FlashAttention's
error rule against float64, exact zeros / -inf lse for rows without keys, and the caches after
the call bit-identical to the reference append (every row not appended untouched).
Also: CUDA-graph capture of a decoding step replayed with new cache_seqlens and new inputs, bad
values that must not fault (clamped, never out of bounds), and unsupported calls.
"""

import numpy as np
import pytest

import reference as ref
from gpu_util import to_numpy64

DTYPES = ("float16", "bfloat16")
FLOOR = {"float16": 2e-3, "bfloat16": 1e-2}
# name: (PTE_DECODE_KERNEL, PTE_DECODE_PIPELINE, PTE_DECODE_FASTCOPY); mma-resolve sends every tile
# of the tensor-core kernel through the resolving copy path (the fast copies off).
KERNELS = {"simt": ("simt", "auto", "1"), "mma": ("mma", "auto", "1"),
           "mma-deep": ("mma", "deep", "1"), "mma-resolve": ("mma", "auto", "0")}


@pytest.fixture(params=list(KERNELS))
def kernel(request, monkeypatch, torch):
    """The attention kernel and pipeline under test (csrc/cuda/decode/decode_api.cu reads the
    variables at every call)."""
    name, pipeline, fast_copy = KERNELS[request.param]
    if pipeline == "deep" and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("PTE_DECODE_PIPELINE=deep: sized for sm_90's shared memory")
    monkeypatch.setenv("PTE_DECODE_KERNEL", name)
    monkeypatch.setenv("PTE_DECODE_PIPELINE", pipeline)
    monkeypatch.setenv("PTE_DECODE_FASTCOPY", fast_copy)
    return request.param


def _dev(torch, a, dtype=None):
    t = torch.from_numpy(np.ascontiguousarray(a))
    return (t.to(getattr(torch, dtype)) if dtype else t).cuda()


def _case(rng, *, b, s_q, h, h_kv, d, lens, page_size=None, append=True, spare=3):
    lens = np.asarray(lens, dtype=np.int32)
    need = int(lens.max()) + (s_q if append else 0)
    c = {"q": rng.standard_normal((b, s_q, h, d)), "cache_seqlens": lens}
    if page_size is None:
        shape = (b, need + spare, h_kv, d)
    else:
        pps = -(-max(need, 1) // page_size) + 1
        num_pages = b * pps + 3
        c["block_table"] = rng.permutation(num_pages)[: b * pps].reshape(b, pps).astype(np.int32)
        shape = (num_pages, page_size, h_kv, d)
    c["k_cache"] = rng.standard_normal(shape)
    c["v_cache"] = rng.standard_normal(shape)
    if append:
        c["k_new"] = rng.standard_normal((b, s_q, h_kv, d))
        c["v_new"] = rng.standard_normal((b, s_q, h_kv, d))
    return c


def _run(core, torch, c, dtype, window=(-1, 0), num_splits=0, stream=None):
    t = {k: (_dev(torch, v, dtype) if v.dtype == np.float64 else _dev(torch, v)) for k, v in c.items()}
    b, s_q, h, d = c["q"].shape
    out = torch.full((b, s_q, h, d), float("nan"), dtype=getattr(torch, dtype), device="cuda")
    lse = torch.full((b, h, s_q), float("nan"), dtype=torch.float32, device="cuda")
    core.decode_attn(t["q"], t["k_cache"], t["v_cache"], t["cache_seqlens"], out,
                     k_new=t.get("k_new"), v_new=t.get("v_new"), block_table=t.get("block_table"),
                     lse=lse, window_size=window, num_splits=num_splits, stream=stream)
    torch.cuda.synchronize()
    return t, out, lse


def _stored(torch, c, dtype):
    """The inputs as the kernel sees them (rounded to dtype), in float64."""
    return {k: (to_numpy64(_dev(torch, v, dtype)) if v.dtype == np.float64 else v) for k, v in c.items()}


def _check(torch, c, dtype, t, out, lse, window=(-1, 0)):
    s = _stored(torch, c, dtype)
    args = dict(k_new=s.get("k_new"), v_new=s.get("v_new"), block_table=s.get("block_table"),
                window_size=window)
    out_r, lse_r, kc_r, vc_r = ref.decode_attn(s["q"], s["k_cache"], s["v_cache"],
                                               s["cache_seqlens"], **args)
    naive, _, _, _ = ref.decode_attn(s["q"], s["k_cache"], s["v_cache"], s["cache_seqlens"],
                                     compute_dtype=np.float32, **args)
    naive = to_numpy64(torch.from_numpy(naive).to(getattr(torch, dtype)))
    o = to_numpy64(out)
    ref.assert_close_fa(o, out_r, naive, FLOOR[dtype])
    empty = np.isneginf(lse_r)  # [b, h, s_q]: rows without a visible key
    assert np.all(o.transpose(0, 2, 1, 3)[empty] == 0), "rows without keys must be exactly 0"
    l = lse.cpu().numpy()
    assert np.all(np.isneginf(l[empty]))
    np.testing.assert_allclose(l[~empty], lse_r[~empty], rtol=1e-3, atol=2e-3)
    np.testing.assert_array_equal(to_numpy64(t["k_cache"]), kc_r)
    np.testing.assert_array_equal(to_numpy64(t["v_cache"]), vc_r)


GRID = [
    # (b, s_q, h, h_kv, d, lens, page_size, append)
    (3, 1, 8, 2, 128, (0, 1, 37), None, True),
    (2, 1, 32, 8, 128, (4095, 1000), None, True),
    (2, 1, 32, 32, 64, (17, 300), None, True),       # MHA (1 row), d 64
    (2, 1, 16, 16, 128, (1, 2000), None, True),      # MHA (1 row), d 128
    (2, 1, 8, 1, 128, (0, 2049), None, False),       # MQA, no append
    (1, 4, 32, 8, 128, (5000,), None, True),         # s_q = 4: 16 rows, 2 simt chunks, 1 m16 tile
    (2, 2, 16, 2, 128, (63, 64), None, True),        # group 8 x s_q 2 = 16 rows; lengths around the tile
    (2, 3, 16, 2, 128, (65, 700), None, True),       # 24 rows: mma two m16 tiles, one padded
    (2, 8, 16, 4, 64, (3, 129), None, True),         # 32 rows: two full m16 tiles, d 64
    (2, 16, 32, 4, 128, (0, 77), None, True),        # 128 rows: 4 mma chunks of 32
    (2, 16, 4, 4, 64, (0, 40), None, True),          # chunked prefill s_q = 16
    (2, 3, 12, 4, 256, (7, 130), None, True),        # d 256, 9 rows
    (2, 5, 16, 4, 256, (1, 333), None, True),        # d 256, 20 rows: 2 mma chunks of 16
    (3, 1, 8, 2, 128, (0, 5, 33), 1, True),
    (2, 4, 16, 4, 128, (0, 131), 1, True),           # page 1, 16 rows: every key row its own page
    (3, 2, 8, 2, 128, (6, 100, 1), 7, True),
    (2, 1, 32, 8, 128, (1023, 4000), 16, True),
    (2, 4, 32, 8, 128, (15, 1001), 16, True),        # page 16, s_q 4 x group 4
    (2, 1, 16, 2, 64, (64, 129), 64, False),
    (2, 4, 8, 8, 128, (255, 600), 256, True),
    (2, 2, 32, 4, 128, (1, 513), 256, True),         # page 256, group 8 x s_q 2
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", GRID, ids=[str(i) for i in range(len(GRID))])
def test_decode_grid(core, torch, kernel, dtype, shape):
    b, s_q, h, h_kv, d, lens, page, append = shape
    rng = np.random.default_rng(sum(map(ord, repr(shape))))
    c = _case(rng, b=b, s_q=s_q, h=h, h_kv=h_kv, d=d, lens=lens, page_size=page, append=append)
    t, out, lse = _run(core, torch, c, dtype)
    _check(torch, c, dtype, t, out, lse)


@pytest.mark.parametrize("num_splits", [1, 2, 3, 17, 64, 256])
@pytest.mark.parametrize("page", [None, 16])
def test_decode_forced_splits(core, torch, kernel, num_splits, page):
    rng = np.random.default_rng(num_splits)
    c = _case(rng, b=2, s_q=2, h=8, h_kv=2, d=128, lens=(0, 1500), page_size=page)
    t, out, lse = _run(core, torch, c, "bfloat16", num_splits=num_splits)
    _check(torch, c, "bfloat16", t, out, lse)


@pytest.mark.parametrize("window", [(0, 0), (1, 0), (100, 0), (3000, 0)])
@pytest.mark.parametrize("page", [None, 7])
def test_decode_window(core, torch, kernel, window, page):
    rng = np.random.default_rng(window[0])
    c = _case(rng, b=2, s_q=4, h=8, h_kv=2, d=128, lens=(2, 2500), page_size=page)
    t, out, lse = _run(core, torch, c, "float16", window=window)
    _check(torch, c, "float16", t, out, lse, window=window)


@pytest.mark.parametrize("window", [(-1, 0), (70, 0)])
@pytest.mark.parametrize("splits", [0, 1, 5])
def test_decode_window_gqa_splits(core, torch, kernel, window, splits):
    """Windows with 16-32 rows per kv head (several query positions per block: each row its own
    lower bound), paged with pages smaller than a key tile, forced and automatic splits."""
    rng = np.random.default_rng(11 + splits)
    c = _case(rng, b=3, s_q=3, h=16, h_kv=2, d=128, lens=(0, 70, 1234), page_size=16)
    t, out, lse = _run(core, torch, c, "bfloat16", window=window, num_splits=splits)
    _check(torch, c, "bfloat16", t, out, lse, window=window)


@pytest.mark.parametrize("page", [None, 1, 16, 256])
def test_decode_auto_splits_small_batch(core, torch, kernel, page):
    """b = 1 with a short cache (the latency case's shape, scaled down): the automatic split count
    is at its largest (one key tile per split), so the combine merges many short splits."""
    rng = np.random.default_rng(21)
    c = _case(rng, b=1, s_q=1, h=32, h_kv=4, d=128, lens=(1023,), page_size=page, spare=0)
    t, out, lse = _run(core, torch, c, "bfloat16")
    _check(torch, c, "bfloat16", t, out, lse)


@pytest.mark.parametrize("page,s_q", [(None, 1), (16, 4), (1, 2)])
def test_decode_cuda_graph_replay(core, torch, kernel, page, s_q):
    """Capture one step, replay it with new cache_seqlens, q, k_new, v_new: no host sync and a
    fixed grid, so every replay equals a fresh reference call (contiguous and paged)."""
    b, h, h_kv, d, cap = 4, 32, 8, 128, 4096
    t, table, g = _graph_step(core, torch, b=b, s_q=s_q, h=h, h_kv=h_kv, d=d, cap=cap, page=page,
                              num_splits=0, rng=np.random.default_rng(7))
    rng = np.random.default_rng(8)
    for lens in ([0, 1, 2, 3], [17, 4000, 1, 255], [cap - s_q, cap - s_q, 0, 2048]):
        c = _replay(torch, t, table, g, rng, lens)
        _check(torch, c, "bfloat16", t, t["out"], t["lse"])


def _replay(torch, t, table, g, rng, lens):
    """New q, k_new, v_new and cache_seqlens = lens into the captured step's buffers t, outputs
    poisoned, one replay of g; returns the step's inputs as the reference takes them (the caches
    as they were before the replay appended to them)."""
    b, s_q, h, d = t["q"].shape
    h_kv = t["k_new"].shape[2]
    c = {"q": rng.standard_normal((b, s_q, h, d)),
         "k_new": rng.standard_normal((b, s_q, h_kv, d)),
         "v_new": rng.standard_normal((b, s_q, h_kv, d)),
         "cache_seqlens": np.asarray(lens, dtype=np.int32),
         "k_cache": to_numpy64(t["k_cache"]), "v_cache": to_numpy64(t["v_cache"])}
    if table is not None:
        c["block_table"] = table
    for name in ("q", "k_new", "v_new"):
        t[name].copy_(_dev(torch, c[name], "bfloat16"))
    t["seqlens"].copy_(_dev(torch, c["cache_seqlens"]))
    t["out"].fill_(float("nan"))
    t["lse"].fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    return c


def _graph_step(core, torch, *, b, s_q, h, h_kv, d, cap, page, num_splits, rng):
    """Device buffers of one decoding step and a CUDA graph capturing it (warm-up outside the
    capture, on a side stream)."""
    dt = torch.bfloat16
    t = {"q": torch.zeros((b, s_q, h, d), dtype=dt, device="cuda"),
         "k_new": torch.zeros((b, s_q, h_kv, d), dtype=dt, device="cuda"),
         "v_new": torch.zeros((b, s_q, h_kv, d), dtype=dt, device="cuda"),
         "seqlens": torch.zeros((b,), dtype=torch.int32, device="cuda"),
         "out": torch.zeros((b, s_q, h, d), dtype=dt, device="cuda"),
         "lse": torch.zeros((b, h, s_q), dtype=torch.float32, device="cuda")}
    if page is None:
        shape, table = (b, cap, h_kv, d), None
    else:
        pps = cap // page
        shape = (b * pps, page, h_kv, d)
        table = rng.permutation(b * pps).reshape(b, pps).astype(np.int32)
    t["k_cache"] = _dev(torch, rng.standard_normal(shape), "bfloat16")
    t["v_cache"] = _dev(torch, rng.standard_normal(shape), "bfloat16")
    t["block_table"] = None if table is None else _dev(torch, table)

    def call(stream):
        core.decode_attn(t["q"], t["k_cache"], t["v_cache"], t["seqlens"], t["out"],
                         k_new=t["k_new"], v_new=t["v_new"], block_table=t["block_table"],
                         lse=t["lse"], num_splits=num_splits, stream=stream)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        call(s.cuda_stream)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        call(torch.cuda.current_stream().cuda_stream)
    return t, table, g


@pytest.mark.parametrize("num_splits", [0, 2, 13, 64, 256])
@pytest.mark.parametrize("page", [None, 16, 1])
def test_decode_pdl_graph_replay(core, torch, kernel, monkeypatch, num_splits, page):
    """The combine as a programmatic dependent launch (sm_90; plain elsewhere) captured in a CUDA
    graph next to one captured with PTE_DECODE_PDL=0: every replay with new cache_seqlens and
    inputs equals the reference, and the two graphs agree bit for bit (the combine waits for every
    partial; a premature read would show as a difference). Forced split counts from 2 to the
    most the combine takes, and the automatic one, at b = 1 (the latency case's shape: 32 / 4
    heads, 1k keys) and paged caches of 16- and 1-key pages."""
    b, s_q, h, h_kv, d, cap = 1, 1, 32, 4, 128, 1024
    graphs = {}
    for pdl in ("1", "0"):
        monkeypatch.setenv("PTE_DECODE_PDL", pdl)
        graphs[pdl] = _graph_step(core, torch, b=b, s_q=s_q, h=h, h_kv=h_kv, d=d, cap=cap,
                                  page=page, num_splits=num_splits,
                                  rng=np.random.default_rng(31))
    for lens in ([1023], [0], [1], [64], [129], [700]):
        results = {}
        for pdl, (t, table, g) in graphs.items():
            # The same inputs for both graphs (one seed per lens).
            c = _replay(torch, t, table, g, np.random.default_rng(32 + lens[0]), lens)
            _check(torch, c, "bfloat16", t, t["out"], t["lse"])
            results[pdl] = (t["out"].clone(), t["lse"].clone())
        assert torch.equal(results["1"][0], results["0"][0]), "PDL and plain combine differ (out)"
        assert torch.equal(results["1"][1], results["0"][1]), "PDL and plain combine differ (lse)"


@pytest.mark.parametrize("num_splits", [0, 7, 128])
def test_decode_pdl_back_to_back(core, torch, kernel, monkeypatch, num_splits):
    """Many decoding steps in a row on one stream without a host sync (eager and as graph
    replays), each step's attention kernel overwriting the partials the previous step's combine
    reads: every step must equal the same steps run with PTE_DECODE_PDL=0, bit for bit."""
    rng = np.random.default_rng(41)
    b, s_q, h, h_kv, d, steps = 2, 2, 16, 2, 128, 12
    base = _case(rng, b=b, s_q=s_q, h=h, h_kv=h_kv, d=d, lens=(300, 1999), page_size=16,
                 spare=steps * s_q)
    qs = [_dev(torch, rng.standard_normal((b, s_q, h, d)), "bfloat16") for _ in range(steps)]
    got = {}
    for pdl in ("1", "0"):
        monkeypatch.setenv("PTE_DECODE_PDL", pdl)
        t = {k: (_dev(torch, v, "bfloat16") if v.dtype == np.float64 else _dev(torch, v))
             for k, v in base.items()}
        outs = [torch.empty((b, s_q, h, d), dtype=torch.bfloat16, device="cuda")
                for _ in range(steps)]
        lses = [torch.empty((b, h, s_q), dtype=torch.float32, device="cuda")
                for _ in range(steps)]
        stream = torch.cuda.current_stream().cuda_stream
        for i in range(steps):  # the cache grows by s_q per step (appended in place)
            seqlens = t["cache_seqlens"] + i * s_q
            core.decode_attn(qs[i], t["k_cache"], t["v_cache"], seqlens, outs[i],
                             k_new=t["k_new"], v_new=t["v_new"], block_table=t["block_table"],
                             lse=lses[i], num_splits=num_splits, stream=stream)
        torch.cuda.synchronize()
        got[pdl] = (outs, lses, t["k_cache"].clone(), t["v_cache"].clone())
    for i in range(steps):
        assert torch.equal(got["1"][0][i], got["0"][0][i]), f"step {i}: out differs"
        assert torch.equal(got["1"][1][i], got["0"][1][i]), f"step {i}: lse differs"
    assert torch.equal(got["1"][2], got["0"][2]) and torch.equal(got["1"][3], got["0"][3])
    # The last step against the reference (the cache as the earlier steps left it).
    c = dict(base, q=to_numpy64(qs[-1]),
             cache_seqlens=base["cache_seqlens"] + (steps - 1) * s_q)
    c["k_cache"] = to_numpy64(got["0"][2])
    c["v_cache"] = to_numpy64(got["0"][3])
    s = _stored(torch, c, "bfloat16")
    out_r, _, _, _ = ref.decode_attn(s["q"], s["k_cache"], s["v_cache"], s["cache_seqlens"],
                                     k_new=s["k_new"], v_new=s["v_new"],
                                     block_table=s["block_table"])
    naive, _, _, _ = ref.decode_attn(s["q"], s["k_cache"], s["v_cache"], s["cache_seqlens"],
                                     k_new=s["k_new"], v_new=s["v_new"],
                                     block_table=s["block_table"], compute_dtype=np.float32)
    naive = to_numpy64(torch.from_numpy(naive).to(torch.bfloat16))
    ref.assert_close_fa(to_numpy64(got["0"][0][-1]), out_r, naive, FLOOR["bfloat16"])


@pytest.mark.parametrize("shape", [
    # (b, s_q, h, h_kv, d, lens, page): long caches split many ways by the automatic count
    (1, 1, 32, 8, 128, (16383,), None),      # 1x16k 32/8 (the bandwidth case), scaled to one call
    (1, 1, 32, 8, 128, (16000,), 256),
    (1, 4, 32, 8, 128, (9000,), 16),         # s_q 4: 16 rows, one m16 tile
    (2, 1, 8, 1, 128, (32767, 5), 64),       # MQA, one long and one short sequence
    (1, 1, 16, 4, 64, (20000,), None),       # d 64 (deep: two blocks per SM)
    (1, 2, 16, 2, 256, (9999,), 7),          # d 256 (deep: three stages)
    (1, 3, 32, 4, 128, (5000,), None),       # 24 rows: two m16 tiles (MT 2)
])
def test_decode_long_auto_splits(core, torch, kernel, shape):
    """Long caches at small batch, where the automatic split count is large and every split
    streams many key tiles through the (deep) pipeline; contiguous and paged."""
    b, s_q, h, h_kv, d, lens, page = shape
    rng = np.random.default_rng(sum(map(ord, repr(shape))))
    c = _case(rng, b=b, s_q=s_q, h=h, h_kv=h_kv, d=d, lens=lens, page_size=page)
    t, out, lse = _run(core, torch, c, "bfloat16")
    _check(torch, c, "bfloat16", t, out, lse)


def test_decode_pipeline_variable(core, torch, monkeypatch):
    """PTE_DECODE_PIPELINE takes auto, shallow or deep; anything else is refused with the reason."""
    rng = np.random.default_rng(6)
    c = _case(rng, b=1, s_q=1, h=4, h_kv=2, d=64, lens=(100,))
    monkeypatch.setenv("PTE_DECODE_KERNEL", "mma")
    for v in ("auto", "shallow"):
        monkeypatch.setenv("PTE_DECODE_PIPELINE", v)
        t, out, lse = _run(core, torch, c, "float16")
        _check(torch, c, "float16", t, out, lse)
    monkeypatch.setenv("PTE_DECODE_PIPELINE", "bottomless")
    with pytest.raises(ValueError, match="PTE_DECODE_PIPELINE must be auto, shallow or deep"):
        _run(core, torch, c, "float16")


def test_decode_bad_values_do_not_fault(core, torch, kernel):
    """cache_seqlens past the capacity and page indices out of range: the kernels clamp and mask
    (nothing read or written out of bounds; compute-sanitizer runs this too)."""
    rng = np.random.default_rng(3)
    c = _case(rng, b=2, s_q=2, h=8, h_kv=2, d=128, lens=(3, 10), page_size=16)
    c["cache_seqlens"] = np.asarray([10**6, -5], dtype=np.int32)
    c["block_table"][0, 0] = 10**6
    c["block_table"][1, 0] = -1
    t, out, lse = _run(core, torch, c, "float16")
    assert torch.isfinite(out).all()


def test_decode_kernel_variable(core, torch, monkeypatch):
    """PTE_DECODE_KERNEL takes auto, simt or mma; anything else is refused with the reason."""
    rng = np.random.default_rng(5)
    c = _case(rng, b=1, s_q=1, h=4, h_kv=2, d=64, lens=(3,))
    monkeypatch.setenv("PTE_DECODE_KERNEL", "auto")
    t, out, lse = _run(core, torch, c, "float16")
    _check(torch, c, "float16", t, out, lse)
    monkeypatch.setenv("PTE_DECODE_KERNEL", "wgmma")
    with pytest.raises(ValueError, match="PTE_DECODE_KERNEL must be auto, simt or mma"):
        _run(core, torch, c, "float16")


def test_decode_unsupported(core, torch):
    rng = np.random.default_rng(4)
    c = _case(rng, b=1, s_q=1, h=4, h_kv=2, d=96, lens=(3,))
    with pytest.raises(ValueError, match="head dim must be 64, 128 or 256"):
        _run(core, torch, c, "float16")
    c = _case(rng, b=1, s_q=1, h=4, h_kv=2, d=64, lens=(3,))
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        _run(core, torch, c, "float32")
    with pytest.raises(ValueError, match="backend=cpu"):
        t = {k: (_dev(torch, v, "float16") if v.dtype == np.float64 else _dev(torch, v)) for k, v in c.items()}
        out = torch.empty((1, 1, 4, 64), dtype=torch.float16, device="cuda")
        core.decode_attn(t["q"], t["k_cache"], t["v_cache"], t["cache_seqlens"], out, backend="cpu")
