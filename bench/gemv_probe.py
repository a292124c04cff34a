"""Batch-1 projections of Phi-4-mini's decode step: cuBLAS against a Triton GEMV, in GB/s of weights read.

The fast path's batch-1 step is 83% cuBLAS GEMVs at ~3.0 TB/s (docs/bench-gpu.md, a profile); this probe asks
whether a hand-written GEMV reads the weights faster. Every candidate runs on enough copies of each weight
(more than the L2 cache) that no weight is read from L2, as in a real step, and is timed from a CUDA graph
(``triton.testing.do_bench_cudagraph``), so launch overhead is out. The last table is one step's
projections (32 layers + the output head) each way.

    python bench/gemv_probe.py [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from phikit.engines.fast.gemv import gemv_rows  # noqa: E402 - the kernel the fast path runs, swept here

SHAPES = {  # name: (out_features N, in_features K) for Phi-4-mini
    "qkv_proj": (5120, 3072), "o_proj": (3072, 3072), "gate_up_proj": (16384, 3072), "down_proj": (3072, 8192),
    "lm_head": (200064, 3072),
}
L2_FLUSH_BYTES = 512 * 2**20  # copies of a weight until this many bytes: no reads from the 50 MB L2


@triton.jit
def gemv_split(x_ptr, w_ptr, y_ptr, N, K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               SPLIT: tl.constexpr):
    """Split-K: program (i, s) reduces BLOCK_N rows over K/SPLIT columns and adds into fp32 y."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    part = K // SPLIT
    acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for k0 in tl.range(tl.program_id(1) * part, (tl.program_id(1) + 1) * part, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + cols).to(tl.float32)
        w = tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=rows[:, None] < N, other=0.0,
                    eviction_policy="evict_first")
        acc += w.to(tl.float32) * x[None, :]
    tl.atomic_add(y_ptr + rows, tl.sum(acc, 1), mask=rows < N)


def triton_rows(x, w, y, block_n, block_k, warps, stages):
    n, k = w.shape
    gemv_rows[(triton.cdiv(n, block_n),)](x, w, y, n, k, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
                                          num_stages=stages)


def triton_split(x, w, y32, block_n, block_k, warps, split):
    n, k = w.shape
    y32.zero_()
    gemv_split[(triton.cdiv(n, block_n), split)](x, w, y32, n, k, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT=split,
                                                 num_warps=warps)


def timed(fn, copies: int) -> float:
    """Microseconds per call of ``fn`` (which runs over ``copies`` weights), from a CUDA graph."""
    return 1000 * triton.testing.do_bench_cudagraph(fn, rep=60) / copies


def probe(name: str, n: int, k: int) -> dict:
    dev = "cuda"
    copies = max(2, L2_FLUSH_BYTES // (n * k * 2))
    ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) / k**0.5 for _ in range(copies)]
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    ref = torch.nn.functional.linear(x, ws[0]).float()
    out = {"shape": [n, k], "copies": copies, "MB": round(n * k * 2 / 2**20, 1)}
    out["cublas_linear_us"] = timed(lambda: [torch.nn.functional.linear(x, w) for w in ws], copies)
    wts = [w.t().contiguous() for w in ws[: max(2, copies)]]
    out["cublas_xWt_us"] = timed(lambda: [x @ wt for wt in wts], copies)
    y = torch.empty(n, device=dev, dtype=torch.bfloat16)
    y32 = torch.empty(n, device=dev, dtype=torch.float32)
    best = (float("inf"), None)
    for bn, bk, warps, stages in itertools.product((1, 2, 4, 8), (512, 1024), (4, 8), (1, 3)):
        if bn * bk > 8192 or k % bk:
            continue
        try:
            triton_rows(x, ws[0], y, bn, bk, warps, stages)
            if (y.float() - ref[0]).abs().max() > 2e-2:
                continue
            us = timed(lambda: [triton_rows(x, w, y, bn, bk, warps, stages) for w in ws], copies)  # noqa: B023
        except Exception:  # noqa: BLE001 - a config past the chip's resources
            continue
        best = min(best, (us, f"rows bn={bn} bk={bk} warps={warps} stages={stages}"), key=lambda t: t[0])
    for bn, bk, warps, split in itertools.product((4, 8, 16), (256, 512), (4,), (2, 4, 8)):
        if n > 5120 or bn * bk > 8192 or k % (bk * split):
            continue
        try:
            triton_split(x, ws[0], y32, bn, bk, warps, split)
            if (y32 - ref[0]).abs().max() > 2e-2:
                continue
            us = timed(lambda: [triton_split(x, w, y32, bn, bk, warps, split) for w in ws], copies)  # noqa: B023
        except Exception:  # noqa: BLE001
            continue
        best = min(best, (us, f"split bn={bn} bk={bk} warps={warps} split={split}"), key=lambda t: t[0])
    out["triton_best_us"], out["triton_best"] = best
    gb = n * k * 2 / 1e9
    for key in ("cublas_linear_us", "cublas_xWt_us", "triton_best_us"):
        out[key.replace("_us", "_TBps")] = round(gb / (out[key] * 1e-6) / 1000, 2)
        out[key] = round(out[key], 1)
    print(name, json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this probe needs a CUDA GPU")
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": triton.__version__,
           "shapes": {name: probe(name, *shape) for name, shape in SHAPES.items()}}
    step = {}
    for key in ("cublas_linear_us", "cublas_xWt_us", "triton_best_us"):
        per_layer = sum(res["shapes"][s][key] for s in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"))
        step[key.replace("_us", "_ms")] = round((32 * per_layer + res["shapes"]["lm_head"][key]) / 1000, 3)
    res["one_step_projections"] = step
    print("one step's projections:", json.dumps(step))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
