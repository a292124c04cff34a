"""Batch-1 projections of the decode step as a Triton GEMV instead of cuBLAS.

At batch 1 every projection is a matrix-vector product bound by reading the weight, and the one-token step
is 83% cuBLAS GEMVs reading at ~3.0 TB/s (a profile, docs/bench-gpu.md). On an H200, :func:`gemv_rows`
(each program reduces a few whole rows, fp32 accumulation, weights streamed with ``evict_first``) read
Phi-4-mini's projections at 2.9-4.6 TB/s against cuBLAS's 1.8-4.3, and a step's projections in 1.95 ms
against 2.36 (``bench/gemv_probe.py``). The block sizes below are that probe's best per shape. The idea is
that of gemlite's Triton GEMV kernels and llama.cpp's CUDA mat-vec kernels: a decode step at batch 1 is one row
of activations against every weight, bound by reading the weights, which a GEMM kernel's tiles waste.

:func:`linear` is what the fast model's projections call: the Triton GEMV for one bf16 row on CUDA when
:data:`ENABLED`, ``F.linear`` otherwise (prefill, batches, int4/nf4 weights, the CPU, no Triton).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

try:  # the CPU wheels of PyTorch come without Triton; the GEMV is CUDA-only anyway
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton
except ImportError:  # pragma: no cover - depends on the install
    triton = None

# PHIKIT_FAST_GEMV=0 keeps cuBLAS (to time one against the other: docs/bench-gpu.md); tests flip it in process
ENABLED = {"on": os.environ.get("PHIKIT_FAST_GEMV", "1") != "0"}


def block_config(n: int, k: int) -> tuple[int, int, int, int] | None:
    """(rows per program, columns per iteration, warps, pipeline stages) for an [n, k] weight, or None when
    ``k`` does not divide into blocks (then cuBLAS runs). The fastest of 32 configurations per Phi-4-mini
    shape on an H200 (bench/gemv_probe.py): short rows (k <= 3,072) want 1-4 rows a program, down_proj's long
    rows (k = 8,192) 8 warps and 3 stages."""
    if k >= 8192 and k % 512 == 0:
        return 1, 512, 8, 3
    if k % 1024 == 0 and n <= 3072:
        return 4, 1024, 4, 1
    if k % 1024 == 0 and n <= 5120:
        return 2, 1024, 4, 1
    if k % 512 == 0:
        return 1, 512, 4, 1
    return None


if triton is not None:

    @triton.jit
    def gemv_rows(x_ptr, w_ptr, y_ptr, N, K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """y[n] = sum_k w[n, k] x[k] for BLOCK_N rows per program; K a multiple of BLOCK_K."""
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
        for k0 in tl.range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + cols).to(tl.float32)
            w = tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=rows[:, None] < N, other=0.0,
                        eviction_policy="evict_first")
            acc += w.to(tl.float32) * x[None, :]
        tl.store(y_ptr + rows, tl.sum(acc, 1).to(y_ptr.dtype.element_ty), mask=rows < N)

    @triton_op("phikit::gemv", mutates_args={})
    def gemv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [..., K] holding one row (bf16, CUDA), w: [N, K] contiguous -> [..., N] (x's dtype).
        A ``torch.library`` op, so ``torch.compile`` traces it (and a CUDA graph captures it) like any other."""
        n, k = w.shape
        bn, bk, warps, stages = block_config(n, k)
        y = torch.empty(n, dtype=x.dtype, device=x.device)
        wrap_triton(gemv_rows)[(triton.cdiv(n, bn),)](x.contiguous(), w, y, n, k, BLOCK_N=bn, BLOCK_K=bk,
                                                      num_warps=warps, num_stages=stages)
        return y.view(*x.shape[:-1], n)


def usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether :func:`linear` takes the Triton GEMV for this input and weight."""
    return (triton is not None and ENABLED["on"] and x.is_cuda and x.numel() == x.shape[-1]
            and x.dtype == w.dtype == torch.bfloat16 and type(w) in (torch.Tensor, torch.nn.Parameter)
            and w.is_contiguous() and block_config(*w.shape) is not None)


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, w)`` (no bias), through the Triton GEMV when :func:`usable`. x: [..., K], w: [N, K] -> [..., N]."""
    return gemv(x, w) if usable(x, w) else F.linear(x, w)


class Linear(torch.nn.Linear):
    """``nn.Linear`` without bias whose one-row calls go through :func:`linear` (the state dict is nn.Linear's)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight)
