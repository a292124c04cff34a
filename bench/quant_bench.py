"""Q4_1 vs Q8_0 vs F16 of the embedded SmolLM2-135M on llama.cpp: accuracy and decode speed side by side.

    .venv/bin/python bench/quant_bench.py [--variants q4_1,q8_0,f16] [--runs 5] [--threads N]
                                         [--reference] [--label NAME] [--out bench/results/quant-NAME.json]

Q8_0 and F16 are requantized from the packaged Q4_1 by ``phikit.export.gguf`` (cached, as
``phikit models prepare`` does). For each variant, greedy:
  - accuracy: the share of the prompts in ``src/phikit/data/facts.jsonl`` (short facts and instructions)
    whose answer holds an accepted word, overall and per kind;
  - speed: decode tokens/s and TTFT of a 128-token answer, best and median of ``--runs`` after a warm-up
    (best, because the machines this ran on are shared: the best run is the one least slowed by others).
``--reference`` adds the same prompts on the transformers backend (fp32, the Q4_1 dequantized): what the
weights themselves answer. Writes JSON to ``--out`` and prints a Markdown table (also written beside the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def llama_system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode(errors="replace").strip()


def speed(llm, runs: int, max_new_tokens: int = 128) -> dict:
    """Decode tok/s and TTFT of ``runs`` greedy answers to phikit bench's prompt, after one warm-up."""
    from phikit.bench import PROMPT

    rates, ttfts = [], []
    for i in range(runs + 1):
        r = llm.chat(PROMPT, temperature=0, max_new_tokens=max_new_tokens)
        if i:
            rates.append(r.tokens_per_s)
            ttfts.append(r.ttft_ms)
    return {"decode_tok_s_best": round(max(rates), 1), "decode_tok_s_median": round(statistics.median(rates), 1),
            "ttft_ms_best": round(min(ttfts), 1), "ttft_ms_median": round(statistics.median(ttfts), 1),
            "decode_tok_s_runs": [round(x, 1) for x in rates]}


def measure(name: str, backend: str, facts: list, args) -> dict:
    import phikit
    from phikit.facts import score
    from phikit.models import resolve

    opts = {"n_threads": args.threads} if backend == "llamacpp" and args.threads else {}
    t = time.perf_counter()
    llm = phikit.load(name, backend=backend, **opts)
    load_s = time.perf_counter() - t
    acc = score(llm, facts, max_new_tokens=args.max_tokens, progress=True)
    by_kind = {}
    for kind in sorted({r["kind"] for r in acc["rows"]}):
        rows = [r for r in acc["rows"] if r["kind"] == kind]
        by_kind[kind] = {"right": sum(r["right"] for r in rows), "n": len(rows)}
    src = Path(resolve(name).source)
    out = {"variant": name, "backend": backend, "load_s": round(load_s, 2),
           "load_average_1m": round(os.getloadavg()[0], 2),
           "file_mb": round(src.stat().st_size / 1e6, 1) if backend == "llamacpp" else None,
           "accuracy": round(acc["rate"], 3), "right": acc["right"], "n": acc["n"], "by_kind": by_kind,
           "france": next(r["answer"] for r in acc["rows"] if r["id"] == "capital-france"),
           "rows": acc["rows"]}
    if backend == "llamacpp":
        out.update(speed(llm, args.runs))
    del llm
    return out


def table(results: list) -> str:
    lines = ["| variant | backend | file MB | accuracy | facts | instructions | decode tok/s best (median) | "
             "TTFT ms best | \"What is the capital of France?\" |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        k = r["by_kind"]
        tok = f"{r['decode_tok_s_best']} ({r['decode_tok_s_median']})" if "decode_tok_s_best" in r else "-"
        ttft = r.get("ttft_ms_best", "-")
        france = " ".join(r["france"].split())[:60].replace("|", "\\|")
        lines.append(f"| {r['variant']} | {r['backend']} | {r['file_mb'] or '-'} | {r['right']}/{r['n']} "
                     f"({r['accuracy']:.0%}) | {k['fact']['right']}/{k['fact']['n']} | "
                     f"{k['instruction']['right']}/{k['instruction']['n']} | {tok} | {ttft} | {france} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="q4_1,q8_0,f16")
    ap.add_argument("--runs", type=int, default=5, help="timed 128-token answers per variant (after a warm-up)")
    ap.add_argument("--max-tokens", type=int, default=48, help="answer budget for the accuracy prompts")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: phikit's default)")
    ap.add_argument("--reference", action="store_true", help="also answer on transformers (fp32, from the Q4_1)")
    ap.add_argument("--label", default="native", help="names the llama.cpp build, e.g. native or avx2")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/quant-LABEL.json)")
    args = ap.parse_args(argv)

    from phikit.bench import device, versions
    from phikit.facts import load_facts
    from phikit.models import prepare

    facts = load_facts()
    names = [f"smollm2-135m-{v.strip()}" for v in args.variants.split(",")]
    for name in names:  # requantize now (cached), so the timings below never include it
        prepare(name)
    out = Path(args.out or f"bench/results/quant-{args.label}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = [(name, "llamacpp") for name in names]
    if args.reference:
        runs.append(("smollm2-135m-q4_1", "transformers"))
    results = []
    for name, backend in runs:  # the report is rewritten after each model, so a stopped run keeps its rows
        print(f"{name} on {backend} ...", file=sys.stderr)
        results.append(measure(name, backend, facts, args))
        report = {
            "label": args.label, "device": device(), "versions": versions(),
            "llama_cpp_system_info": llama_system_info(), "load_average_1m": round(os.getloadavg()[0], 2),
            "threads": args.threads or None, "max_new_tokens": args.max_tokens, "n_prompts": len(facts),
            "results": results,
            "command": " ".join(["bench/quant_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        }
        out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    md = table(results)
    out.with_suffix(".md").write_text(
        f"{report['device']} · llama.cpp build: {args.label} ({report['llama_cpp_system_info']}) · "
        f"load average {report['load_average_1m']}\n\n{md}\n")
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
