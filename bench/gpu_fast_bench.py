"""The fast backend against transformers' eager `generate`, side by side in one run, on Phi-4-mini's exact
shape with random weights (the stand-in's config, LongRoPE included).

Measures, for a 512-token prompt, greedy, 128 new tokens: TTFT, decode tokens/s at batch 1 and batch 32, peak
GPU memory, load time, cost per 1,000 queries; then greedy equality with transformers for 32 tokens on 20
prompts (under and over 4,096 tokens, so both LongRoPE factor sets). Writes JSON, a Markdown table and a PNG.

Usage (CUDA machine): python bench/gpu_fast_bench.py --out DIR [--gpu-price-per-hour 3.5] [--paths ...]

The side-by-side speed matrix (every backend, batches 1/8/32, prompts 128/512/2,048, cost beside hosted APIs) is
``phikit bench``, which times cells the same way (``phikit.bench.cells``); this script keeps what is specific to
the fast path: the step profile and the equality checks against transformers.
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
from phikit.bench.cells import fast_cell, hf_cell
from phikit.engines.fast import generate as gen
from phikit.engines.fast.engine import FastEngine, build, quantize
from phikit.stand_in import phi4_mini_config, save_random_phi4_mini

PROMPT_LEN, NEW_TOKENS, BATCH = 512, 128, 32
DEV = "cuda"  # --smoke: "cpu", to check this script's logic on a tiny model without a GPU


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed(fn) -> tuple[float, object]:
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def prompts(batch: int, n: int | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, 190000, (batch, n or PROMPT_LEN), generator=g).to(DEV)


def bench_hf(hf, batch: int, runs: int) -> dict:
    """HF ``generate``, timed as ``phikit bench`` times it (phikit.bench.cells)."""
    return hf_cell(hf, prompts(batch), NEW_TOKENS, runs, DEV)


def bench_fast(model, graphs, batch: int, runs: int) -> dict:
    """The fast path's batched loop, timed as ``phikit bench`` times it (phikit.bench.cells)."""
    return fast_cell(model, graphs, prompts(batch), NEW_TOKENS, runs, DEV)


def peak_extra_gb(fn) -> float:
    """GB allocated at the peak of ``fn`` above what was allocated before it (KV cache, activations, graphs)."""
    gc.collect()
    if DEV != "cuda":
        fn()
        return 0.0
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    return round((torch.cuda.max_memory_allocated() - before) / 1e9, 2)


def equality(hf, model, graphs, lengths: list[int], new: int = 32) -> dict:
    """Greedy tokens of the fast path vs transformers' generate, same weights, one prompt at a time.

    Each row also has the prefill logits' relative difference and the reference's top-1/top-2 margin: with
    random weights the margins are small, so bf16 rounding differences (kernel summation order) can flip a
    greedy pick; an implementation error shows as a large relative difference instead.
    """
    rows = []
    for i, n in enumerate(lengths):
        ids = prompts(1, n, seed=1000 + i)
        with torch.no_grad():
            ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, pad_token_id=0)[0, n:].tolist()
            ref_logits = hf(ids, logits_to_keep=1).logits[0, -1].float()
        model.setup_caches(1, gen.bucket(n + new))
        fast_logits = gen.prefill(model, ids, torch.arange(n, device=DEV))[0]
        out = gen.generate(model, graphs, ids, new)[0].tolist()
        first = next((j for j, (a, b) in enumerate(zip(ref, out)) if a != b), new)
        top2 = ref_logits.topk(2).values
        rows.append({"prompt_tokens": n, "equal_tokens_prefix": first, "same": first == new,
                     "prefill_logits_rel_diff": float((fast_logits - ref_logits).norm() / ref_logits.norm()),
                     "ref_top2_margin": float(top2[0] - top2[1]), "ref_logits_std": float(ref_logits.std())})
    return {"prompts": len(rows), "all_equal": sum(r["same"] for r in rows), "tokens": new,
            "mean_equal_prefix": round(statistics.mean(r["equal_tokens_prefix"] for r in rows), 1),
            "median_prefill_rel_diff": statistics.median(r["prefill_logits_rel_diff"] for r in rows),
            "median_ref_top2_margin": statistics.median(r["ref_top2_margin"] for r in rows), "rows": rows}


def step_profile(model) -> dict:
    """Where a batch-1 step's time goes: graph-replay time per step with each decode attention, and GPU time
    by kernel for an eager step (the profiler does not see inside graphs). Kernel time near the graph step time
    means the kernels themselves bound the step; far below it means launch gaps do."""
    from phikit.engines.fast import model as model_mod

    out, kv_len, ids = {}, gen.bucket(PROMPT_LEN + NEW_TOKENS), prompts(1)
    tok = torch.zeros(1, 1, dtype=torch.long, device=DEV)
    model.setup_caches(1, kv_len)
    for impl in ("sdpa", "matmul"):
        model_mod.DECODE_ATTENTION = impl
        graphs = gen.DecodeGraphs(model)
        with torch.inference_mode():
            gen.prefill(model, ids, torch.arange(PROMPT_LEN, device=DEV))
            graphs.step(tok, PROMPT_LEN, kv_len)
            sync()
            t0 = time.perf_counter()
            for i in range(200):
                graphs.step(tok, PROMPT_LEN + i % NEW_TOKENS, kv_len)
            sync()
        out[f"graph_step_ms_{impl}"] = round((time.perf_counter() - t0) / 200 * 1000, 3)
        del graphs
    model_mod.DECODE_ATTENTION = "matmul"
    if DEV != "cuda":
        return out
    eager = gen.DecodeGraphs(model, enabled=False)
    with torch.inference_mode():
        for _ in range(3):
            eager.step(tok, PROMPT_LEN, kv_len)
        sync()
        t0 = time.perf_counter()
        for _ in range(10):
            eager.step(tok, PROMPT_LEN, kv_len)
        sync()
        out["eager_step_ms"] = round((time.perf_counter() - t0) / 10 * 1000, 3)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                eager.step(tok, PROMPT_LEN, kv_len)
            sync()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    t = lambda e: getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)  # noqa: E731 (us)
    out["kernel_ms_per_step"] = round(sum(t(e) for e in kernels) / 5 / 1000, 3)
    out["kernels_per_step"] = sum(e.count for e in kernels) // 5
    out["top_kernels"] = [{"kernel": e.key[:100], "ms_per_step": round(t(e) / 5 / 1000, 3), "per_step": e.count // 5}
                          for e in sorted(kernels, key=t, reverse=True)[:14]]
    return out


def equality_fp32(hf, cfg, lengths: list[int]) -> dict:
    """The same check in fp32 (same weights, upcast): rounding noise ~1e-6, so greedy tokens should agree."""
    from transformers import Phi3ForCausalLM

    with torch.device(DEV):
        hf32 = Phi3ForCausalLM(cfg).eval()
    hf32.load_state_dict(hf.state_dict())
    hf32.generation_config.eos_token_id = None
    with torch.no_grad():
        model = build(cfg, hf32.state_dict(), DEV, torch.float32)
    out = equality(hf32, model, gen.DecodeGraphs(model), lengths)
    drop_caches(model)
    return out


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
    for ax, key, title in zip(axes, ["b1_decode_tok_s", f"b{BATCH}_decode_tok_s", "b1_ttft_ms", "b1_cost_per_1000"],
                              ["decode tok/s, batch 1", f"decode tok/s, batch {BATCH} (aggregate)", "TTFT ms, batch 1",
                               f"\\$ per 1,000 queries, batch 1 (\\${report['gpu_price_per_hour']}/h)"]):
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
    head = (f"| path | weights GB | peak GB b1 | TTFT b1 ms | b1 tok/s | b{BATCH} tok/s | TTFT b{BATCH} ms | "
            f"$/1k queries b1 | $/1k queries b{BATCH} |\n" + "| --- " * 9 + "|")
    lines = [head]
    for r in report["results"]:
        cells = [r["path"], r.get("weights_gb"), r.get("b1_peak_gb"), r.get("b1_ttft_ms"), r.get("b1_decode_tok_s"),
                 r.get(f"b{BATCH}_decode_tok_s"), r.get(f"b{BATCH}_ttft_ms"), r.get("b1_cost_per_1000"),
                 r.get(f"b{BATCH}_cost_per_1000")]
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines)


def bench_hf_path(hf, weights_gb: float, args) -> dict:
    row = {"path": "hf-bf16", "weights_gb": weights_gb}
    for b in (1, BATCH):
        f = bench_hf(hf, b, args.runs if b == 1 else 1)
        row.update({f"b{b}_{k}": v for k, v in f.items()})
        row[f"b{b}_cost_per_1000"] = cost_per_1000(f, b, args.gpu_price_per_hour)
    row["b1_peak_gb"] = round(weights_gb + peak_extra_gb(lambda: hf.generate(
        prompts(1), max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)), 2)
    return row


def bench_fast_path(name: str, model, args) -> dict:
    row = {"path": name, "weights_gb": round(sum(_nbytes(t) for t in model.parameters()) / 1e9, 2)}
    graphs = gen.DecodeGraphs(model)
    for b in (1, BATCH):
        f = bench_fast(model, graphs, b, args.runs)
        row.update({f"b{b}_{k}": v for k, v in f.items()})
        row[f"b{b}_cost_per_1000"] = cost_per_1000(f, b, args.gpu_price_per_hour)
    drop_caches(model)  # measure batch 1 alone: cache allocation, graph capture and the run
    del graphs
    row["b1_peak_gb"] = round(row["weights_gb"] + peak_extra_gb(
        lambda: gen.generate(model, gen.DecodeGraphs(model), prompts(1), NEW_TOKENS)), 2)
    return row


def drop_caches(model) -> None:
    model.max_batch = model.max_len = 0
    model.cache_version += 1
    for layer in model.model.layers:
        layer.self_attn.k_cache = layer.self_attn.v_cache = None


def attempt(report: dict, name: str, fn):
    """Run one part; a failure is recorded in the report and the run goes on."""
    log(name)
    try:
        out = fn()
        log(json.dumps(out)[:600])
    except Exception as exc:  # noqa: BLE001
        report["errors"][name] = f"{type(exc).__name__}: {str(exc)[:400]}"
        log(f"{name} failed: {report['errors'][name]}")
        out = None
    report.setdefault("parts", {})[name] = out
    if report.get("out"):  # what is done so far survives a run cut short
        Path(report["out"], "gpu_fast_bench.partial.json").write_text(json.dumps(report, indent=1, default=str))
    return out


def engine_run() -> dict:
    """Load time from local safetensors to the first token through FastEngine, then 3 requests' events."""
    from phikit.models import ModelRef

    with tempfile.TemporaryDirectory() as tmp:
        save_random_phi4_mini(Path(tmp) / "phi4", device=DEV)
        gc.collect()
        sync()
        t0 = time.perf_counter()
        engine = FastEngine(ModelRef("phi4-stand-in", f"{tmp}/phi4", "hf"))
        first = [e for e in engine.generate([{"role": "user", "content": "Why is the sky blue?"}], _params(16))][-1]
        out = {"load_to_first_token_s": round(time.perf_counter() - t0, 1), "compiled": engine.compiled,
               "first_answer_tokens": first.usage.completion_tokens}
        runs = [[e for e in engine.generate([{"role": "user", "content": "Why is the sky blue? " * 60}],
                                            _params(NEW_TOKENS))][-1] for _ in range(3)]
        out.update({"prompt_tokens": runs[0].usage.prompt_tokens,
                    "completion_tokens": runs[0].usage.completion_tokens,
                    "ttft_ms": round(statistics.median(d.ttft_ms for d in runs), 1),
                    "decode_tok_s": round(statistics.median(d.tokens_per_s for d in runs), 1)})
        del engine
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--gpu-price-per-hour", type=float, default=3.5)
    ap.add_argument("--paths", default="hf-bf16,fast-bf16,engine,fast-int4,fast-nf4")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--equality-prompts", type=int, default=20)
    ap.add_argument("--plot", metavar="JSON", help="only redraw the PNG and table from an earlier run's JSON")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the script, measures nothing")
    args = ap.parse_args()
    global DEV, PROMPT_LEN, NEW_TOKENS, BATCH
    if args.plot:
        report = json.loads(Path(args.plot).read_text())
        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot(report, Path(args.out) / "gpu_fast_bench.png")
        print(table(report))
        return
    if args.smoke:
        DEV, PROMPT_LEN, NEW_TOKENS, BATCH = "cpu", 24, 6, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = args.paths.split(",")
    torch.manual_seed(0)
    report = {"device": device(), "versions": versions(), "gpu_price_per_hour": args.gpu_price_per_hour,
              "workload": {"prompt_tokens": PROMPT_LEN, "new_tokens": NEW_TOKENS, "batch": [1, BATCH], "greedy": True},
              "results": [], "errors": {}, "out": str(out)}
    try:
        import torchao

        report["versions"]["torchao"] = torchao.__version__
    except ImportError:
        pass
    from transformers import Phi3ForCausalLM

    log("building a random-weight Phi-4-mini-shaped model on the GPU")
    tiny = dict(num_hidden_layers=1, hidden_size=256, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=256)  # head_dim 128 as the real one, so the 48 LongRoPE factors fit
    cfg = phi4_mini_config(**(tiny if args.smoke else {}))
    with torch.device(DEV):
        torch.set_default_dtype(torch.bfloat16)
        hf = Phi3ForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
    hf.generation_config.eos_token_id = None  # always generate the full length, as the fast loop does
    weights_gb = round(sum(p.numel() * p.element_size() for p in hf.parameters()) / 1e9, 2)
    rows = report["results"]
    if "hf-bf16" in paths:
        rows.append(attempt(report, "hf-bf16", lambda: bench_hf_path(hf, weights_gb, args)))
    report["compiled"] = DEV == "cuda" and gen.compile_ops()
    if "fast-bf16" in paths:
        with torch.no_grad():
            model = build(cfg, hf.state_dict(), DEV)  # shares the HF model's tensors (assign=True)
        rows.append(attempt(report, "fast-bf16", lambda: bench_fast_path("fast-bf16", model, args)))
        n = args.equality_prompts
        lengths = [int(x) for x in torch.linspace(64, 4000, n - n * 3 // 10).tolist()] + \
                  [int(x) for x in torch.linspace(4200, 6000, n * 3 // 10).tolist()]
        report["step_profile"] = attempt(report, "step profile, batch 1, bf16", lambda: step_profile(model))
        report["equality_bf16"] = attempt(report, "equality vs HF generate, bf16, 32 tokens",
                                          lambda: equality(hf, model, gen.DecodeGraphs(model), lengths))
        drop_caches(model)
        del model
        report["equality_fp32"] = attempt(report, "equality vs HF generate, fp32, 32 tokens",
                                          lambda: equality_fp32(hf, cfg, [100, 1500, 3000, 4000, 4500, 5500]))
        gc.collect()
    if "engine" in paths:
        report["engine"] = attempt(report, "engine: load to first token, events", engine_run)
    for precision in ("int4", "nf4"):
        if f"fast-{precision}" not in paths:
            continue

        def run_quantized(precision=precision):
            with torch.no_grad():
                model = build(cfg, hf.state_dict(), DEV)
                t0 = time.perf_counter()
                quantize(model, precision)
                quantize_s = round(time.perf_counter() - t0, 1)
            row = bench_fast_path(f"fast-{precision}", model, args)
            row["quantize_s"] = quantize_s
            row["agreement_vs_hf_bf16"] = equality(hf, model, gen.DecodeGraphs(model), [PROMPT_LEN] * 5)
            drop_caches(model)
            return row

        rows.append(attempt(report, f"fast-{precision}", run_quantized))
        gc.collect()
    report["results"] = rows = [r for r in rows if r]
    base = next((x for x in rows if x["path"] == "hf-bf16"), None)
    for r in rows:
        if base and r is not base:
            r["b1_speedup_vs_hf"] = round(r["b1_decode_tok_s"] / base["b1_decode_tok_s"], 1)
            r[f"b{BATCH}_speedup_vs_hf"] = round(r[f"b{BATCH}_decode_tok_s"] / base[f"b{BATCH}_decode_tok_s"], 1)
    (out / "gpu_fast_bench.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_fast_bench.md").write_text(table(report) + "\n")
    attempt(report, "plot", lambda: plot(report, out / "gpu_fast_bench.png"))
    print(table(report))
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1)[:4000])


def _params(n: int):
    from phikit.engines.base import SamplingParams

    return SamplingParams(max_new_tokens=n, temperature=0)


def _nbytes(t) -> int:
    from phikit.engines.fast.engine import _nbytes as nbytes

    return nbytes(t)


if __name__ == "__main__":
    sys.exit(main())
