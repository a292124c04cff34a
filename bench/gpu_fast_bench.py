"""The fast backend against transformers' eager `generate`, side by side in one run, on Phi-4-mini's exact
shape with random weights (the stand-in's config, LongRoPE included).

Measures, for a 512-token prompt, greedy, 128 new tokens: TTFT, decode tokens/s at batch 1 and batch 32, peak
GPU memory, load time, cost per 1,000 queries; then greedy equality with transformers for 32 tokens on 20
prompts (under and over 4,096 tokens, so both LongRoPE factor sets). Writes JSON, a Markdown table and a PNG.

Usage (CUDA machine): python bench/gpu_fast_bench.py --out DIR [--gpu-price-per-hour 3.5] [--paths ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from phikit.bench import device, versions
from phikit.engines.fast import generate as gen
from phikit.engines.fast.engine import FastEngine, build, quantize
from phikit.stand_in import phi4_mini_config, save_random_phi4_mini

PROMPT_LEN, NEW_TOKENS, BATCH = 512, 128, 32


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed(fn) -> tuple[float, object]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def prompts(batch: int, n: int = PROMPT_LEN, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, 190000, (batch, n), generator=g).cuda()


def figures(ttft_s: float, total_s: float, batch: int, new: int = NEW_TOKENS) -> dict:
    """TTFT, aggregate decode tokens/s after the first token, and seconds per batch of queries."""
    return {"ttft_ms": round(ttft_s * 1000, 1), "decode_tok_s": round(batch * (new - 1) / (total_s - ttft_s), 1),
            "batch_s": round(total_s, 3)}


def bench_hf(hf, batch: int, runs: int) -> dict:
    ids = prompts(batch)
    mask = torch.ones_like(ids)
    kw = dict(attention_mask=mask, do_sample=False, pad_token_id=0, eos_token_id=None)
    hf.generate(ids, max_new_tokens=4, **kw)  # warm-up
    ttft = statistics.median(timed(lambda: hf.generate(ids, max_new_tokens=1, **kw))[0] for _ in range(runs))
    total = statistics.median(timed(lambda: hf.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                                        **kw))[0] for _ in range(runs))
    return figures(ttft, total, batch)


def bench_fast(model, graphs, batch: int, runs: int) -> dict:
    ids = prompts(batch)
    gen.generate(model, graphs, ids, NEW_TOKENS)  # warm-up: compile and capture this batch's graph
    pos = torch.arange(PROMPT_LEN, device="cuda")
    ttft = statistics.median(timed(lambda: gen.prefill(model, ids, pos).argmax(-1).cpu())[0] for _ in range(runs))
    total = statistics.median(timed(lambda: gen.generate(model, graphs, ids, NEW_TOKENS).cpu())[0] for _ in range(runs))
    return figures(ttft, total, batch)


def peak_gb(fn) -> float:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    return round(torch.cuda.max_memory_allocated() / 1e9, 2)


def equality(hf, model, graphs, lengths: list[int], new: int = 32) -> dict:
    """Greedy tokens of the fast path vs transformers' generate, same weights, one prompt at a time."""
    rows = []
    for i, n in enumerate(lengths):
        ids = prompts(1, n, seed=1000 + i)
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                          do_sample=False, pad_token_id=0, eos_token_id=None)[0, n:].tolist()
        out = gen.generate(model, graphs, ids, new)[0].tolist()
        first = next((j for j, (a, b) in enumerate(zip(ref, out)) if a != b), new)
        rows.append({"prompt_tokens": n, "equal_tokens_prefix": first, "same": first == new})
    return {"prompts": len(rows), "all_32_equal": sum(r["same"] for r in rows),
            "mean_equal_prefix": round(statistics.mean(r["equal_tokens_prefix"] for r in rows), 1), "rows": rows}


def cost_per_1000(row: dict, batch: int, price: float) -> float:
    """Dollars for 1,000 queries of PROMPT_LEN in / NEW_TOKENS out at ``price`` $/GPU-hour (batches of ``batch``)."""
    return round(price / 3600 * (1000 / batch) * row["batch_s"], 3)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    names = [r["path"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    for ax, key, title in zip(axes, ["b1_decode_tok_s", "b32_decode_tok_s", "b1_ttft_ms", "b1_cost_per_1000"],
                              ["decode tok/s, batch 1", "decode tok/s, batch 32 (aggregate)", "TTFT ms, batch 1",
                               f"$ per 1,000 queries, batch 1 (${report['gpu_price_per_hour']}/h)"]):
        vals = [r.get(key) or 0 for r in rows]
        bars = ax.bar(range(len(names)), vals, color=["#999" if n.startswith("hf") else "#2a7" for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.bar_label(bars, fmt="%g", fontsize=7)
    fig.suptitle(f"Phi-4-mini shape (random weights), {PROMPT_LEN}-token prompt, {NEW_TOKENS} new tokens, greedy "
                 f"- {report['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(report: dict) -> str:
    head = ("| path | weights GB | peak GB (b1) | TTFT b1 ms | b1 tok/s | b32 tok/s | TTFT b32 ms | $/1k queries b1 | "
            "$/1k queries b32 |\n" + "| --- " * 9 + "|")
    lines = [head]
    for r in report["results"]:
        cells = [r["path"], r.get("weights_gb"), r.get("b1_peak_gb"), r.get("b1_ttft_ms"), r.get("b1_decode_tok_s"),
                 r.get("b32_decode_tok_s"), r.get("b32_ttft_ms"), r.get("b1_cost_per_1000"), r.get("b32_cost_per_1000")]
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--gpu-price-per-hour", type=float, default=3.5)
    ap.add_argument("--paths", default="hf-bf16,fast-bf16,fast-int4,fast-nf4")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--equality-prompts", type=int, default=20)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = args.paths.split(",")
    torch.manual_seed(0)
    report = {"device": device(), "versions": versions(), "gpu_price_per_hour": args.gpu_price_per_hour,
              "workload": {"prompt_tokens": PROMPT_LEN, "new_tokens": NEW_TOKENS, "batch": [1, BATCH], "greedy": True},
              "results": [], "errors": {}}
    try:
        import torchao

        report["versions"]["torchao"] = torchao.__version__
    except ImportError:
        pass
    from transformers import Phi3ForCausalLM

    log("building a random-weight Phi-4-mini-shaped model on the GPU")
    cfg = phi4_mini_config()
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        hf = Phi3ForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
    hf.generation_config.eos_token_id = None  # always generate the full length, as the fast loop does
    weights_gb = round(sum(p.numel() * p.element_size() for p in hf.parameters()) / 1e9, 2)
    rows = report["results"]

    if "hf-bf16" in paths:
        log("HF generate, bf16, eager")
        row = {"path": "hf-bf16", "weights_gb": weights_gb}
        for b in (1, BATCH):
            f = bench_hf(hf, b, args.runs if b == 1 else 1)
            row.update({f"b{b}_{k}": v for k, v in f.items()})
            row[f"b{b}_cost_per_1000"] = cost_per_1000(f, b, args.gpu_price_per_hour)
        row["b1_peak_gb"] = peak_gb(lambda: hf.generate(prompts(1), max_new_tokens=NEW_TOKENS, do_sample=False,
                                                        pad_token_id=0, eos_token_id=None))
        rows.append(row)
        log(json.dumps(row))

    with torch.no_grad():
        model = build(cfg, hf.state_dict(), "cuda")  # shares the HF model's tensors (assign=True)
    report["compiled"] = gen.compile_ops()
    graphs = gen.DecodeGraphs(model)
    for name in [p for p in paths if p.startswith("fast-")]:
        precision = name.split("-", 1)[1]
        log(f"fast path, {precision}")
        try:
            if precision != "bf16":
                with torch.no_grad():
                    model = build(cfg, hf.state_dict(), "cuda")
                    t0 = time.perf_counter()
                    quantize(model, precision)
                graphs = gen.DecodeGraphs(model)
            row = {"path": name, "weights_gb": round(sum(_nbytes(t) for t in model.parameters()) / 1e9, 2)}
            if precision != "bf16":
                row["quantize_s"] = round(time.perf_counter() - t0, 1)
            for b in (1, BATCH):
                f = bench_fast(model, graphs, b, args.runs)
                row.update({f"b{b}_{k}": v for k, v in f.items()})
                row[f"b{b}_cost_per_1000"] = cost_per_1000(f, b, args.gpu_price_per_hour)
            model.max_batch = model.max_len = 0  # drop the batch-32 cache, measure batch 1 alone
            for layer in model.model.layers:
                layer.self_attn.k_cache = layer.self_attn.v_cache = None
            graphs = gen.DecodeGraphs(model)
            gen.generate(model, graphs, prompts(1), NEW_TOKENS)
            row["b1_peak_gb"] = peak_gb(lambda: gen.generate(model, graphs, prompts(1), NEW_TOKENS))
            if precision != "bf16":  # agreement with bf16 transformers on 5 prompts
                row["agreement_vs_hf_bf16"] = equality(hf, model, graphs, [PROMPT_LEN] * 5)
            rows.append(row)
            log(json.dumps({k: v for k, v in row.items() if k != "agreement_vs_hf_bf16"}))
        except Exception as exc:  # noqa: BLE001 - report and go on with the other paths
            report["errors"][name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            log(f"{name} failed: {report['errors'][name]}")
        if precision == "bf16":
            log("greedy equality vs HF generate (bf16), 32 tokens")
            n = args.equality_prompts
            lengths = [int(x) for x in torch.linspace(64, 4000, n - n * 3 // 10).tolist()] + \
                      [int(x) for x in torch.linspace(4200, 6000, n * 3 // 10).tolist()]
            report["equality_bf16"] = equality(hf, model, graphs, lengths)
            log(json.dumps({k: v for k, v in report["equality_bf16"].items() if k != "rows"}))
        del graphs
        gc.collect()

    if "fast-bf16" in paths:
        log("engine load time from local safetensors (FastEngine, bf16) and one request through the event stream")
        with tempfile.TemporaryDirectory() as tmp:
            save_random_phi4_mini(Path(tmp) / "phi4", device="cuda")
            from phikit.models import ModelRef

            torch.cuda.synchronize()
            t0 = time.perf_counter()
            engine = FastEngine(ModelRef("phi4-stand-in", f"{tmp}/phi4", "hf"))
            done = [e for e in engine.generate([{"role": "user", "content": "Why is the sky blue?"}],
                                               _params(16))][-1]
            report["engine"] = {"load_to_first_token_s": round(time.perf_counter() - t0, 1),
                                "compiled": engine.compiled}
            runs = [[e for e in engine.generate([{"role": "user", "content": "Why is the sky blue? " * 40}],
                                                _params(NEW_TOKENS))][-1] for _ in range(3)]
            report["engine"].update({"prompt_tokens": runs[0].usage.prompt_tokens,
                                     "ttft_ms": round(statistics.median(d.ttft_ms for d in runs), 1),
                                     "decode_tok_s": round(statistics.median(d.tokens_per_s for d in runs), 1),
                                     "first_answer_tokens": done.usage.completion_tokens})
            log(json.dumps(report["engine"]))
    for r in rows:
        base = next((x for x in rows if x["path"] == "hf-bf16"), None)
        if base and r is not base:
            r["b1_speedup_vs_hf"] = round(r["b1_decode_tok_s"] / base["b1_decode_tok_s"], 1)
            r["b32_speedup_vs_hf"] = round(r["b32_decode_tok_s"] / base["b32_decode_tok_s"], 1)
    (out / "gpu_fast_bench.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_fast_bench.md").write_text(table(report) + "\n")
    plot(report, out / "gpu_fast_bench.png")
    print(table(report))
    print(json.dumps({k: v for k, v in report.items() if k not in ("results",)}, indent=1)[:3000])


def _params(n: int):
    from phikit.engines.base import SamplingParams

    return SamplingParams(max_new_tokens=n, temperature=0)


def _nbytes(t) -> int:
    from phikit.engines.fast.engine import _nbytes as nbytes

    return nbytes(t)


if __name__ == "__main__":
    sys.exit(main())
