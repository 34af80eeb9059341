"""Helpers of the GPU tests (imported by name; tests/gpu is on sys.path under pytest)."""


def to_numpy64(t):
    """A torch tensor (any dtype, any device) as float64 numpy."""
    import torch

    return t.detach().to("cpu", dtype=torch.float64).numpy()


def poison(t):
    """Fill an output with NaN (or a sentinel for ints) so unwritten elements show up."""
    if t.dtype.is_floating_point:
        t.fill_(float("nan"))
    else:
        t.fill_(-12345)
    return t
