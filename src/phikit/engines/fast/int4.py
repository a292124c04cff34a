"""int4 weight-only projections for the fast path: group-wise asymmetric 4-bit weights and a Triton GEMV that
reads them packed.

The scheme is torchao's int4 weight-only one (groups of 128 along the input dimension, a bf16 scale and
minimum per group, values 0-15: ``w ≈ q * scale + min``), packed two values to a byte. At batch 1 the decode
step reads each weight once, so a weight a quarter the size of bf16 should decode up to ~4x faster; PyTorch's
tinygemm int4 kernel (torchao's ``tile_packed_to_4d``) reached only 333 tok/s against bf16's 340 on an H200,
as it is made for a few rows, not one (docs/bench-gpu.md). :func:`gemv_int4_rows` dequantizes in registers:
per group it needs only ``sum(q * x)`` and ``sum(x)``, since ``sum((q * s + m) * x) = s * sum(q * x) + m * sum(x)``.
Prefill and batches dequantize the layer's weight to bf16 and use cuBLAS, as llama.cpp does for large batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gemv import ENABLED, triton

GROUP = 128  # input columns per scale/minimum (torchao's Int4WeightOnlyConfig default)

if triton is not None:
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    # Six configurations, timed by Triton at the first call per shape (the engine's warm-up, before any capture)
    @triton.autotune(configs=[triton.Config({"BLOCK_N": bn, "BLOCK_G": bg}, num_warps=4)
                              for bn in (1, 2, 4) for bg in (2, 4)], key=["N", "K"])
    @triton.jit
    def gemv_int4_rows(x_ptr, p_ptr, s_ptr, m_ptr, y_ptr, N, K: tl.constexpr, G: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr):
        """y[n] = sum_k (q[n, k] * s[n, k // G] + m[n, k // G]) x[k]; q packed as p[n, k // 2] (low nibble: even k)."""
        H: tl.constexpr = G // 2
        NG: tl.constexpr = K // G
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        j = tl.arange(0, H)
        acc = tl.zeros((BLOCK_N,), tl.float32)
        for g0 in tl.range(0, NG, BLOCK_G):
            gs = g0 + tl.arange(0, BLOCK_G)
            inside = (rows[:, None] < N) & (gs[None, :] < NG)  # [BN, BG]
            p = tl.load(p_ptr + rows[:, None, None] * (K // 2) + gs[None, :, None] * H + j[None, None, :],
                        mask=inside[:, :, None], other=0, eviction_policy="evict_first")
            xe = tl.load(x_ptr + gs[:, None] * G + 2 * j[None, :], mask=gs[:, None] < NG, other=0.0).to(tl.float32)
            xo = tl.load(x_ptr + gs[:, None] * G + 2 * j[None, :] + 1, mask=gs[:, None] < NG, other=0.0).to(tl.float32)
            dot = tl.sum((p & 15).to(tl.float32) * xe[None] + (p >> 4).to(tl.float32) * xo[None], axis=2)  # [BN, BG]
            s = tl.load(s_ptr + rows[:, None] * NG + gs[None, :], mask=inside, other=0.0).to(tl.float32)
            m = tl.load(m_ptr + rows[:, None] * NG + gs[None, :], mask=inside, other=0.0).to(tl.float32)
            acc += tl.sum(s * dot + m * tl.sum(xe + xo, axis=1)[None, :], axis=1)
        tl.store(y_ptr + rows, acc.to(y_ptr.dtype.element_ty), mask=rows < N)

    @triton_op("phikit::gemv_int4", mutates_args={})
    def gemv_int4(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
        """x: [..., K] holding one row (bf16, CUDA); packed [N, K/2] uint8; scales, mins [N, K/G] -> [..., N]."""
        n, k = packed.shape[0], packed.shape[1] * 2
        y = torch.empty(n, dtype=x.dtype, device=x.device)
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
        wrap_triton(gemv_int4_rows)[grid](x.contiguous(), packed, scales, mins, y, n, k, GROUP)
        return y.view(*x.shape[:-1], n)


def quantize(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group-wise asymmetric 4-bit quantization of a weight.

    Args:
        w: [N, K] float weight, K a multiple of ``group``.

    Returns:
        packed [N, K/2] uint8 (column 2j in the low nibble, 2j+1 in the high), scales and mins [N, K/group]
        in ``w``'s dtype, so that ``w ≈ q * scale + min`` with q in 0..15 (the group's min and max map to 0, 15).

    Raises:
        ValueError: K is not a multiple of ``group``.
    """
    n, k = w.shape
    if k % group:
        raise ValueError(f"int4 needs input features in multiples of {group}; this weight has {k}")
    g = w.float().view(n, k // group, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    scale_s, lo_s = scale.to(w.dtype), lo.to(w.dtype)  # stored rounded: quantize against what dequantizes
    q = ((g - lo_s.float()) / scale_s.float()).round().clamp(0, 15).to(torch.uint8).view(n, k)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    return packed.contiguous(), scale_s.view(n, -1).contiguous(), lo_s.view(n, -1).contiguous()


def dequantize(packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """The [N, K] weight (``scales``' dtype) that :func:`quantize` packed."""
    n = packed.shape[0]
    q = torch.stack([packed & 15, packed >> 4], dim=-1).view(n, -1, GROUP).float()
    return (q * scales.float()[..., None] + mins.float()[..., None]).view(n, -1).to(scales.dtype)


class Int4Linear(nn.Module):
    """A bias-free projection holding :func:`quantize`'s packed weight: x [..., in] -> [..., out].

    One bf16 row on CUDA runs :func:`gemv_int4`; anything else dequantizes the weight and runs ``F.linear``.
    """

    def __init__(self, packed: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor):
        super().__init__()
        self.out_features, self.in_features = packed.shape[0], packed.shape[1] * 2
        self.packed = nn.Parameter(packed, requires_grad=False)
        self.scales = nn.Parameter(scales, requires_grad=False)
        self.mins = nn.Parameter(mins, requires_grad=False)

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Int4Linear:
        return cls(*quantize(lin.weight.data))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if triton is not None and ENABLED["on"] and x.is_cuda and x.numel() == x.shape[-1] and x.dtype == self.scales.dtype:
            return gemv_int4(x, self.packed, self.scales, self.mins)
        return F.linear(x, dequantize(self.packed, self.scales, self.mins).to(x.dtype))
