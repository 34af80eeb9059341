"""The one GPU harness of fused attention (issue 10, part 5): variants, cases, runs, checks.

* A **variant** is a backend of the core plus, for flash, the kernel family the core is asked to
  use through the environment variable ``PTE_FLASH_VARIANT`` (``sm80``, ``sm90``, ``auto``;
  the core reads it when it checks and runs a call). Every test of test_attention_gpu.py takes
  the ``variant`` fixture, so a new backend or kernel family joins the whole grid by adding one
  entry to ``VARIANTS``. ``PTE_TEST_VARIANTS=cudnn,flash-sm90`` runs a subset (``flash`` alone =
  ``PTE_FLASH_VARIANT=auto``).
* Skips and failures come from the core's capability check (``paddle_te_core.attn_check``, the
  same ``pte_attn_check`` that drives ``auto``): a variant this build or device lacks is skipped
  with the core's reason (probed on a case every variant supports); a case the variant refuses is
  skipped only when ``documented_refusal`` lists it (docs/backends.md), and otherwise **fails**.
* One rule for every variant: ``reference.assert_attention_close`` (FlashAttention's 2x rule
  against tests/reference.py, one floor table), exact zeros at padded positions and in rows that
  see no key, lse -inf exactly there, outputs poisoned with NaN before every call, unit-scale
  inputs drawn fresh per case.
"""

import os
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

import reference as R
from gpu_util import poison, to_numpy64

FLASH_VARIANT_ENV = "PTE_FLASH_VARIANT"


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str  # the core's backend= value
    flash_variant: str = None  # PTE_FLASH_VARIANT for the call, None = leave unset
    philox_mask: bool = False  # dropout mask is the documented pte_dropout_keep (bit-exact)
    dkdv_bitwise_nondeterministic: bool = False  # deterministic=False keeps dK, dV bitwise

    def __str__(self):
        return self.name


_FLASH = dict(philox_mask=True, dkdv_bitwise_nondeterministic=True)

#: Every variant the grid runs. A new backend or kernel family is one more entry.
VARIANTS = (
    Variant("cudnn", "cudnn"),
    Variant("flash-sm80", "flash", "sm80", **_FLASH),
    Variant("flash-sm90", "flash", "sm90", **_FLASH),
)
_EXTRA = {"flash": Variant("flash", "flash", "auto", **_FLASH)}


def selected_variants():
    names = os.environ.get("PTE_TEST_VARIANTS", "")
    if not names.strip():
        return list(VARIANTS)
    by_name = {v.name: v for v in VARIANTS} | _EXTRA
    out = []
    for n in (x.strip() for x in names.split(",") if x.strip()):
        if n not in by_name:
            raise ValueError(f"PTE_TEST_VARIANTS: unknown variant {n!r}; known: {sorted(by_name)}")
        out.append(by_name[n])
    return out


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


class Case:
    """One attention call: layout, lengths, heads, head dims, mask, window, dtype, scale.

    lens_q / lens_kv: actual lengths per sequence (default: the padded ones). cu_seqlens are
    passed for thd and for padding types (SPEC §8); in thd, tokens follow the last sequence
    (q: `tail`, k/v: `tail + 3`), which must come out 0."""

    def __init__(self, fmt, mask, lens_q=None, lens_kv=None, *, b=None, s_q=None, s_kv=None,
                 h=4, h_kv=None, d=64, d_v=None, window=None, dtype="float16", tail=0,
                 scale=None):
        if lens_q is None:
            b = 2 if b is None else b
            s_q, s_kv = s_q or 96, s_kv or 128
            lens_q, lens_kv = [s_q] * b, [s_kv] * b
        self.fmt, self.mask, self.window = fmt, mask, window
        self.lens_q, self.lens_kv = [int(x) for x in lens_q], [int(x) for x in lens_kv]
        self.b = len(self.lens_q)
        self.s_q = s_q if s_q is not None else max(self.lens_q + [1])
        self.s_kv = s_kv if s_kv is not None else max(self.lens_kv + [1])
        self.h, self.h_kv = h, h if h_kv is None else h_kv
        self.d, self.d_v = d, d if d_v is None else d_v
        self.dtype, self.tail, self.scale = dtype, tail if fmt == "thd" else 0, scale
        self.use_cu = fmt == "thd" or R.has_padding(mask)

    def __repr__(self):
        dv = f"/{self.d_v}" if self.d_v != self.d else ""
        return (f"{self.fmt}-{self.mask}-w{self.window}-q{self.lens_q}-kv{self.lens_kv}"
                f"-h{self.h}/{self.h_kv}-d{self.d}{dv}-{self.dtype}")

    @property
    def cu_q(self):
        return R.cu_seqlens(self.lens_q) if self.use_cu else None

    @property
    def cu_kv(self):
        return R.cu_seqlens(self.lens_kv) if self.use_cu else None

    def shape(self, side, dim):
        q = side == "q"
        heads, s = (self.h, self.s_q) if q else (self.h_kv, self.s_kv)
        if self.fmt == "bshd":
            return (self.b, s, heads, dim)
        if self.fmt == "sbhd":
            return (s, self.b, heads, dim)
        lens = self.lens_q if q else self.lens_kv
        return (sum(lens) + self.tail + (0 if q else 3), heads, dim)

    def lse_shape(self):
        if self.fmt == "thd":
            return (self.h, self.shape("q", self.d)[0])
        return (self.b, self.h, self.s_q)

    def inputs(self, torch, seed=None):
        """Fresh unit-scale q, k, v, d_out (seeded from the case unless `seed` is given)."""
        seed = zlib.crc32(repr(self).encode()) if seed is None else seed
        g = torch.Generator(device="cuda").manual_seed(seed)
        dt = getattr(torch, self.dtype)

        def rnd(shape):
            return torch.randn(shape, generator=g, device="cuda", dtype=torch.float32).to(dt)

        return (rnd(self.shape("q", self.d)), rnd(self.shape("kv", self.d)),
                rnd(self.shape("kv", self.d_v)), rnd(self.shape("q", self.d_v)))

    def kwargs(self, torch):
        """Keywords of paddle_te_core.fused_attn_fwd/bwd (backend aside)."""
        kw = dict(qkv_format=self.fmt, attn_mask_type=self.mask,
                  window_size=self.window if self.window is not None else (-1, -1),
                  softmax_scale=self.scale)
        if self.use_cu:
            kw.update(cu_seqlens_q=torch.from_numpy(self.cu_q).cuda(),
                      cu_seqlens_kv=torch.from_numpy(self.cu_kv).cuda(),
                      max_seqlen_q=max(self.s_q, 1), max_seqlen_kv=max(self.s_kv, 1))
        return kw

    def ref_kwargs(self):
        return dict(qkv_format=self.fmt, attn_mask_type=self.mask, window_size=self.window,
                    cu_seqlens_q=self.cu_q, cu_seqlens_kv=self.cu_kv, softmax_scale=self.scale)


np64 = to_numpy64


def poisoned(torch, shape, dtype):
    """A new CUDA tensor filled with NaN, so unwritten elements show up."""
    return poison(torch.empty(shape, dtype=dtype, device="cuda"))


# --------------------------------------------------------------------------------------------
# Variants: selection, documented refusals
# --------------------------------------------------------------------------------------------


def use_variant(core, variant, monkeypatch):
    """Select `variant` for the calls that follow (PTE_FLASH_VARIANT), or skip with the core's
    reason when this build or device does not have it."""
    if variant.flash_variant is None:
        monkeypatch.delenv(FLASH_VARIANT_ENV, raising=False)
    else:
        monkeypatch.setenv(FLASH_VARIANT_ENV, variant.flash_variant)
    info = core.backends().get(variant.backend, {})
    if not info.get("available"):
        pytest.skip(f"{variant}: backend not available: {info.get('reason', 'not reported')}")
    import torch

    # A call every variant of a backend supports: a refusal here means the variant itself is
    # missing (not compiled for this device, or this device lacks its arch).
    q = torch.zeros((1, 128, 2, 64), dtype=torch.float16, device="cuda")
    why = core.attn_check(q, q, q, q.clone(), backend=variant.backend, backward=True)
    if why:
        pytest.skip(f"{variant}: not available on this build/device: {why}")
    return variant


_COMPILED = {}


def flash_head_dim_compiled(core, variant, d):
    """Whether this build has flash kernels for head dim d (PTE_HDIMS; a dim is padded up to
    the next compiled one): the core's check on a minimal call."""
    import torch

    key = (variant.name, d)
    if key not in _COMPILED:
        q = torch.zeros((1, 1, 1, d), dtype=torch.float16, device="cuda")
        why = core.attn_check(q, q, q, q.clone(), backend="flash")
        _COMPILED[key] = not ("head_dim" in why or "head dim" in why)
    return _COMPILED[key]


def documented_refusal(core, variant, case, dropout=0.0):
    """The documented reason (docs/backends.md) why `variant` may refuse `case`, or None when
    the variant documents the case as supported."""
    import torch

    major = torch.cuda.get_device_capability()[0]
    if variant.backend == "cudnn":
        if case.fmt == "thd" and major < 9:
            return "cuDNN's ragged offsets (thd) need sm_90"
        if dropout > 0 and R.is_bottom_right(case.mask):
            return "cuDNN refuses dropout with bottom-right causal masks"
        if case.s_q == 1 and case.s_kv == 1:
            return "cuDNN refuses s_q = s_kv = 1"
        for dim in (case.d, case.d_v):
            if dim > 256 or dim % 8:
                return "cuDNN takes head dims that are multiples of 8 and <= 256"
        return None
    if variant.backend == "flash":
        if case.d_v != case.d:
            return "the flash kernels take d_v == d"
        for dim in {case.d, case.d_v}:
            if not flash_head_dim_compiled(core, variant, dim):
                return f"head dim {dim} is not compiled into this build (PTE_HDIMS)"
        return None
    return None


def expect_supported(core, variant, case, *, q, k, v, out, lse, kw, dropout=0.0, grads=True):
    """The core's check of the call (forward, and backward when `grads`): skip when the variant
    documents the refusal, fail when it refuses a case it documents as supported."""
    for backward in (False, True) if grads else (False,):
        why = core.attn_check(q, k, v, out, lse=lse, dropout=dropout, backend=variant.backend,
                              backward=backward, **kw)
        if not why:
            continue
        documented = documented_refusal(core, variant, case, dropout)
        if documented:
            pytest.skip(f"{variant}: {why} (documented: {documented})")
        pytest.fail(f"{variant} refused a case it documents as supported "
                    f"({'backward' if backward else 'forward'}): {why}")


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def run(core, case, variant, *, grads=True, dropout=0.0, seed=0, offset=0, deterministic=False,
        inputs=None, stream=None, check=True):
    """Forward (+ lse) and, if asked, backward on fresh random inputs; every output poisoned.
    With `check`, the core's capability check first (expect_supported)."""
    import torch

    q, k, v, do = inputs if inputs is not None else case.inputs(torch)
    dt = getattr(torch, case.dtype)
    out = poisoned(torch, case.shape("q", case.d_v), dt)
    lse = poisoned(torch, case.lse_shape(), torch.float32)
    kw = case.kwargs(torch)
    if check:
        expect_supported(core, variant, case, q=q, k=k, v=v, out=out, lse=lse, kw=kw,
                         dropout=dropout, grads=grads)
    extra = dict(dropout=dropout, seed=seed, offset=offset, backend=variant.backend)
    if stream is not None:
        extra["stream"] = stream
    core.fused_attn_fwd(q, k, v, out, lse=lse, **kw, **extra)
    res = dict(q=q, k=k, v=v, do=do, out=out, lse=lse)
    if grads:
        dq, dk, dv = (poisoned(torch, t.shape, dt) for t in (q, k, v))
        core.fused_attn_bwd(q, k, v, out, do, lse, dq, dk, dv, **kw, **extra,
                            deterministic=deterministic)
        res.update(dq=dq, dk=dk, dv=dv)
    torch.cuda.synchronize()
    return res


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def lse_rows(case, valid_q):
    """bool in lse's layout: True at the rows of real (unpadded) queries."""
    shape = case.lse_shape()
    if case.fmt == "thd":
        return np.broadcast_to(valid_q[None, :], shape)
    per_bs = valid_q if case.fmt == "bshd" else valid_q.T  # [b, s]
    return np.broadcast_to(per_bs[:, None, :], shape)


def rows_to_tokens(case, lse_mask):
    """lse-layout bool -> bool over the (token, head) positions of q's layout."""
    if case.fmt == "thd":
        return lse_mask.T  # [t, h]
    m = np.transpose(lse_mask, (0, 2, 1))  # [b, s, h]
    return m if case.fmt == "bshd" else np.transpose(m, (1, 0, 2))


def check_against_reference(case, res, *, dropout=0.0, seed=0, offset=0):
    """Outputs, lse and (when present) gradients against tests/reference.py under the one rule;
    exact zeros at padded positions and in rows that see no key; lse -inf exactly there."""
    q, k, v, do = (np64(res[n]) for n in ("q", "k", "v", "do"))
    kw = case.ref_kwargs()
    if dropout > 0:
        kw.update(dropout_p=dropout, seed=seed, offset=offset)
    nd = R.naive_compute_dtype(case.dtype)
    ref_out, ref_lse = R.attention_fwd(q, k, v, **kw)
    naive_out, naive_lse = R.attention_fwd(q, k, v, compute_dtype=nd, **kw)
    out, lse = np64(res["out"]), np64(res["lse"])

    valid_q = R.valid_rows(case.fmt, q.shape, case.cu_q)
    assert np.all(out[~valid_q] == 0), "out: padded positions must be exactly 0"
    R.assert_attention_close(out[valid_q], ref_out[valid_q], naive_out[valid_q], case.dtype, "out")
    rows = lse_rows(case, valid_q)
    empty_ref = np.isneginf(ref_lse) & rows
    assert np.array_equal(np.isneginf(lse) & rows, empty_ref), \
        "lse: -inf exactly at the rows that see no key"
    fin = rows & ~empty_ref
    if np.any(fin):
        R.assert_attention_close(lse[fin], ref_lse[fin], np.asarray(naive_lse, np.float64)[fin],
                                 case.dtype, "lse")
        # lse is float32 whatever the inputs: close per element too.
        err = np.abs(lse[fin] - ref_lse[fin])
        assert np.all(err <= 2e-3 * np.maximum(1.0, np.abs(ref_lse[fin]))), \
            f"lse: max per-element error {err.max():.3e}"
    empty = rows_to_tokens(case, empty_ref)
    assert np.all(out[empty] == 0), "out: rows that see no key must be exactly 0"

    if "dq" not in res:
        return
    ref_g = R.attention_bwd(q, k, v, do, **kw)
    naive_g = R.attention_bwd(q, k, v, do, compute_dtype=nd, **kw)
    valid_kv = R.valid_rows(case.fmt, k.shape, case.cu_kv)
    for name, g, rg, ng, valid in zip(("dq", "dk", "dv"), (res["dq"], res["dk"], res["dv"]),
                                      ref_g, naive_g, (valid_q, valid_kv, valid_kv)):
        g = np64(g)
        assert np.all(g[~valid] == 0), f"{name}: padded positions must be exactly 0"
        R.assert_attention_close(g[valid], rg[valid], ng[valid], case.dtype, name, grad=True)
    assert np.all(np64(res["dq"])[empty] == 0), "dq: rows that see no key must be exactly 0"
