"""Batch-1 and batch-32 decode speed of the fast path with three ways of building the captured step, side by
side in one run on Phi-4-mini's shape (random weights): eager pieces, ``torch.compile``'d elementwise pieces
(the engine's default), and the whole step compiled (:func:`phikit.engines.fast.generate.compile_step`).

Each variant runs in its own process (compilation state is global). For bf16 and int4 weights: a 512-token
prompt, then 128 graph replays timed per batch size; also the compile + capture time of the first step.

    python bench/fast_compile_step.py --out bench/results/fast_compile_step.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PROMPT, NEW = 512, 128


def measure(variant: str, precision: str, batches: list[int]) -> dict:
    import torch

    from phikit.engines.fast import generate as gen
    from phikit.engines.fast.engine import build, quantize
    from phikit.stand_in import phi4_mini_config

    torch.manual_seed(0)
    cfg = phi4_mini_config()
    from transformers import Phi3ForCausalLM

    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        hf = Phi3ForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    model = build(cfg, hf.state_dict(), "cuda")
    del hf
    if precision != "bf16":
        quantize(model, precision)
    if variant == "ops":
        gen.compile_ops()
    elif variant == "step":
        gen.compile_step()
    out = {"variant": variant, "precision": precision}
    for b in batches:
        kv_len = gen.bucket(PROMPT + NEW)
        model.setup_caches(b, kv_len)
        graphs = gen.DecodeGraphs(model)
        ids = torch.randint(100, 190000, (b, PROMPT), device="cuda")
        tok = torch.zeros(b, 1, dtype=torch.long, device="cuda")
        with torch.inference_mode():
            gen.prefill(model, ids, torch.arange(PROMPT, device="cuda"))
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            graphs.step(tok, PROMPT, kv_len)  # compile (if any) + capture
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(NEW):
                tok = graphs.step(tok, PROMPT + i, kv_len).argmax(-1, keepdim=True)
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out[f"b{b}"] = {"tok_s": round(b * NEW / dt, 1), "step_ms": round(dt / NEW * 1000, 3),
                        "first_step_s": round(first, 1)}
        del graphs
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/fast_compile_step.json")
    ap.add_argument("--variants", default="eager,ops,step")
    ap.add_argument("--precisions", default="bf16,int4")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--one", nargs=2, metavar=("VARIANT", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.one:
        print(json.dumps(measure(*args.one, batches)))
        return
    import torch

    from phikit.bench import versions

    rows = []
    for precision in args.precisions.split(","):
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--one", variant, precision, "--batches", args.batches]
            res = subprocess.run(cmd, capture_output=True, text=True)
            line = res.stdout.strip().splitlines()[-1] if res.returncode == 0 and res.stdout.strip() else None
            row = json.loads(line) if line else {"variant": variant, "precision": precision,
                                                 "error": res.stderr.strip().splitlines()[-1:]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    meta = {"device": torch.cuda.get_device_name(), "versions": versions(), "prompt": PROMPT, "new_tokens": NEW}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
