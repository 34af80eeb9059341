"""Smallest cuDNN-backend call through paddle_te_core (a debugging aid: run it under cuda-gdb or
compute-sanitizer when the backend misbehaves). Prints the max error against torch's math SDPA."""
import os
import sys

import torch

sys.path.insert(0, os.environ.get("PTE_CORE_DIR", "build/python"))
import paddle_te_core as core  # noqa: E402

print(core.backends()["cudnn"], flush=True)
q = torch.randn(2, 128, 4, 64, dtype=torch.bfloat16, device="cuda")
k = torch.randn(2, 128, 4, 64, dtype=torch.bfloat16, device="cuda")
v = torch.randn(2, 128, 4, 64, dtype=torch.bfloat16, device="cuda")
out = torch.full_like(q, float("nan"))
lse = torch.empty(2, 4, 128, device="cuda")
core.fused_attn_fwd(q, k, v, out, lse=lse, attn_mask_type="causal", backend="cudnn")
torch.cuda.synchronize()
ref = torch.nn.functional.scaled_dot_product_attention(
    q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(),
    is_causal=True).transpose(1, 2)
print("fwd max err", (out.float() - ref).abs().max().item(), flush=True)
