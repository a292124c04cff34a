"""Greedy equality of the fast path with transformers on *trained* weights (issue 13).

Random weights leave the top two logits within bf16 rounding of each other, so two correct implementations
that sum in different orders part ways after a few tokens (docs/bench-gpu.md). Here the network is the
embedded SmolLM2-135M-Instruct, rebuilt as a ``Phi3ForCausalLM`` (:func:`phikit.stand_in.llama_as_phi3`:
fused projections, LongRoPE with short and long factor sets switching at 4,096), whose logits are confident.

For each prompt (text from this repository's docs, 20 lengths from 100 to 7,500 tokens, so both factor sets
and the switch in mid-generation are covered) it compares greedy tokens, one prompt at a time:

- ``fast``: the fast path (:func:`phikit.engines.fast.generate.generate`, CUDA graphs on a GPU) against
  transformers' ``generate`` (SDPA attention), same weights and dtype;
- ``hf_eager``: transformers' ``generate`` with eager attention against the same SDPA reference: how often two
  transformers attention kernels part ways in that dtype, the yardstick for the row above;
- on CUDA, the fast path in int4 (torchao) and nf4 (bitsandbytes) against the bf16 reference (agreement).

At each first difference it records the reference's top-1/top-2 logit gap at that step.

    python bench/fast_equality_real.py --device cuda --dtypes bf16,fp32 --out bench/results/fast_equality_real.json
    python bench/fast_equality_real.py --device cpu --dtypes fp32 --lengths 100,4080,4500 --tokens 16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from phikit.engines.batching import common_prefix

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = [100, 250, 500, 800, 1200, 1600, 2000, 2500, 3000, 3500, 3900, 4080, 4200, 4500, 5000, 5500, 6000, 6500,
           7000, 7500]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def load_llama(gguf: str | None):
    """SmolLM2 from its GGUF (the embedded model unless ``gguf`` names another), dequantized by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf is None:
        from phikit.models import resolve

        gguf = resolve("smollm2-135m-q4_1").source
    path = Path(gguf)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tok


def corpus_ids(tok, need: int) -> list[int]:
    """This repository's docs as one token stream (English prose and tables), at least ``need`` tokens."""
    text = "\n\n".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    ids = tok(text).input_ids
    if len(ids) < need:
        raise SystemExit(f"the docs give {len(ids)} tokens; {need} are needed")
    return ids


def hf_greedy(model, ids: torch.Tensor, new: int) -> tuple[list[int], list[float]]:
    """transformers' greedy tokens and, per step, the gap between its top two logits.

    A prompt that crosses LongRoPE's switch during generation is run without a KV cache (each step a full
    forward, so every position past the switch uses the long factors): transformers 5.17's cached ``generate``
    drops its cache there but then feeds only the last token (5.24 feeds the whole sequence), which the device
    measured as a difference at exactly the first token past the switch (docs/bench-gpu.md)."""
    n, switch = ids.shape[1], model.config.original_max_position_embeddings
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=0,
                         use_cache=not n <= switch < n + new)
    gaps = [float(top[0] - top[1]) for top in (s[0].float().topk(2).values for s in out.scores)]
    return out.sequences[0, ids.shape[1]:].tolist(), gaps


def fast_greedy(fast, graphs, ids: torch.Tensor, new: int) -> list[int]:
    from phikit.engines.fast import generate as gen

    return gen.generate(fast, graphs, ids, new)[0].tolist()


def compare(name: str, ref: list[list[int]], gaps: list[list[float]], other: list[list[int]], lengths: list[int]) -> dict:
    rows = []
    for n, r, g, o in zip(lengths, ref, gaps, other):
        k = common_prefix(r, o)
        rows.append({"prompt_tokens": n, "equal_prefix": k, "same": k == len(r),
                     "ref_top2_gap_at_difference": None if k == len(r) else round(g[k], 4),
                     "agreement": round(sum(x == y for x, y in zip(r, o)) / len(r), 3)})
    return {"name": name, "prompts": len(rows), "all_equal": sum(r["same"] for r in rows),
            "mean_equal_prefix": round(statistics.mean(r["equal_prefix"] for r in rows), 1),
            "mean_agreement": round(statistics.mean(r["agreement"] for r in rows), 3), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--precisions", default="int4,nf4", help="fast-path 4-bit precisions vs the bf16 reference (CUDA)")
    ap.add_argument("--compile", default="ops", choices=["ops", "step", "none"], help="fast path's compile mode (CUDA)")
    ap.add_argument("--gguf", help="a Llama-architecture GGUF (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from phikit.engines.fast import generate as gen
    from phikit.engines.fast.engine import build, quantize
    from phikit.stand_in import llama_as_phi3

    dev, new = torch.device(args.device), args.tokens
    lengths = [int(x) for x in args.lengths.split(",")]
    llama, tok = load_llama(args.gguf)
    ids_all = corpus_ids(tok, max(lengths) + 20 * 211)
    prompts = [torch.tensor([ids_all[i * 211:i * 211 + n]], device=dev) for i, n in enumerate(lengths)]
    if dev.type == "cuda" and args.compile != "none":
        gen.compile_step() if args.compile == "step" else gen.compile_ops()
    report = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor() or "cpu",
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": __import__("transformers").__version__},
              "model": "SmolLM2-135M-Instruct (embedded GGUF, dequantized) as Phi3ForCausalLM, LongRoPE switch at 4096",
              "tokens": new, "lengths": lengths, "compile": args.compile if dev.type == "cuda" else "none",
              "results": []}
    for dname in args.dtypes.split(","):
        t0 = time.perf_counter()
        hf = llama_as_phi3(llama, dtype=DTYPES[dname]).to(dev)
        hf.generation_config.eos_token_id = None
        with torch.no_grad():
            ref, gaps = zip(*(hf_greedy(hf, p, new) for p in prompts))
            hf.set_attn_implementation("eager")
            eager = [hf_greedy(hf, p, new)[0] for p in prompts]
            hf.set_attn_implementation("sdpa")
        fast = build(hf.config, hf.state_dict(), dev, DTYPES[dname])
        graphs = gen.DecodeGraphs(fast)
        out = [fast_greedy(fast, graphs, p, new) for p in prompts]
        res = [compare(f"fast {dname} vs HF sdpa {dname}", ref, gaps, out, lengths),
               compare(f"HF eager {dname} vs HF sdpa {dname}", ref, gaps, eager, lengths)]
        del fast, graphs
        if dev.type == "cuda" and dname == "bf16":
            for precision in [p for p in args.precisions.split(",") if p]:
                fast = build(hf.config, hf.state_dict(), dev, torch.bfloat16)
                quantize(fast, precision)
                graphs = gen.DecodeGraphs(fast)
                outq = [fast_greedy(fast, graphs, p, new) for p in prompts]
                res.append(compare(f"fast {precision} vs HF sdpa bf16", ref, gaps, outq, lengths))
                del fast, graphs
        for r in res:
            r["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{r['name']}: {r['all_equal']}/{r['prompts']} prompts equal for {new} tokens, mean equal prefix "
                  f"{r['mean_equal_prefix']}, agreement {r['mean_agreement']:.1%}; differences at "
                  f"{[(x['prompt_tokens'], x['equal_prefix'], x['ref_top2_gap_at_difference']) for x in r['rows'] if not x['same']]}",
                  flush=True)
        report["results"] += res
        del hf
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
