"""GPU figures for Phi-4-mini's shape (random weights): weight memory, peak memory, TTFT and decode speed,
nf4 vs bf16, measured in one run through phikit's own loading code and event stream.

Usage (on a CUDA machine): python bench/gpu_bench.py [OUT.json]
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time

import torch

import phikit
from phikit.bench import device, versions
from phikit.engines import Done
from phikit.stand_in import save_random_phi4_mini

PROMPT = "Explain in a short paragraph why the sky is blue. " * 8  # ~ a few hundred tokens with the stand-in tokenizer


def measure(path: str, precision: str, runs: int = 3, max_new_tokens: int = 128) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    llm = phikit.load(path, precision=precision)
    load_s = time.perf_counter() - t0
    out = []
    for i in range(runs + 1):
        done = None
        for ev in llm.chat(PROMPT, stream=True, temperature=0, max_new_tokens=max_new_tokens, stop=()):
            if isinstance(ev, Done):
                done = ev
        if i:
            out.append(done)
    row = {
        "precision": llm.engine.precision,
        "load_s": round(load_s, 1),
        "weights_gb": round(llm.engine.weight_bytes / 1e9, 2),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "prompt_tokens": out[0].usage.prompt_tokens,
        "completion_tokens": out[0].usage.completion_tokens,
        "ttft_ms": round(sorted(d.ttft_ms for d in out)[len(out) // 2], 1),
        "decode_tok_s": round(sorted(d.tokens_per_s for d in out)[len(out) // 2], 1),
    }
    del llm
    gc.collect()
    return row


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(save_random_phi4_mini(f"{tmp}/phi4", device="cuda"))
        rows = [measure(path, p) for p in ("nf4", "bf16")]
    report = {"device": device(), "versions": versions(), "results": rows}
    print(json.dumps(report, indent=2))
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
