"""Tool-calling benchmark on the embedded model: unconstrained vs grammar-constrained calls, and the cost of
the constraint per token (xgrammar logits processor vs llama.cpp's own JSON-schema GBNF grammar).

    .venv/bin/python bench/tools_bench.py [--cases bench/tools_cases.json] [--out docs/bench-tools.json]
                                          [--backend llamacpp] [--limit N] [--max-tokens 64]

For each (tools, question) case, greedy:
  - unconstrained (tool_choice=auto): is a call parseable? are all calls declared and schema-valid? right tool?
  - constrained (tool_choice=required): the same three rates.
Overhead: the xgrammar processor's own time per token (timed inside the processor), and the per-token decode
time of the same prompt with no constraint, with xgrammar, and with llama.cpp's ``LlamaGrammar`` (GBNF from
``LlamaGrammar.from_json_schema``), medians over the first cases.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rates(llm, case, tool_choice, max_tokens):
    from phikit.tools import as_tools, parse_tool_calls, validate_call
    from phikit.tools.chat import chat

    tools = as_tools(case["tools"])
    t0 = time.perf_counter()
    r = chat(llm, case["question"], tools=tools, tool_choice=tool_choice, temperature=0, max_new_tokens=max_tokens)
    wall = time.perf_counter() - t0
    calls = parse_tool_calls(r.text, tools)
    valid = bool(calls)
    for c in calls:
        try:
            validate_call(c, tools)
        except Exception:
            valid = False
    right = bool(calls) and calls[0]["function"]["name"] == case["expected"]
    return {"parseable": bool(calls), "valid": valid, "right_tool": right, "text": r.text, "wall_s": wall,
            "tokens": r.usage.completion_tokens, "tok_s": r.tokens_per_s}


class Timed:
    """Wrap a logits processor and add up the seconds spent in it."""

    def __init__(self, proc):
        self.proc, self.seconds, self.calls = proc, 0.0, 0

    def __call__(self, ids, logits):
        t = time.perf_counter()
        out = self.proc(ids, logits)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def overhead(llm, cases, max_tokens, n):
    """Per-token decode ms for the same prompts: none vs xgrammar vs llama.cpp GBNF (llama.cpp backend)."""
    from phikit.tools import as_tools
    from phikit.tools.chat import CALL_PREFIX, prepare
    from phikit.tools.constrain import call_schema, processor_for

    eng = llm.engine
    out = {"none_ms": [], "xgrammar_ms": [], "xgrammar_mask_ms": [], "gbnf_ms": [], "gbnf_compile_s": [], "xgrammar_compile_s": []}
    for case in cases[:n]:
        tools = as_tools(case["tools"])
        msgs, tpl_tools = prepare(eng, case["question"], tools, "required")
        ids = eng.encode(eng.render(msgs, tpl_tools))
        schema = call_schema(tools, "required")

        def run(ids=ids, **kw):
            eng.llm.reset()
            toks, first = 0, None
            for tok in eng.llm.generate(ids, temp=0, top_k=0, top_p=1, min_p=0, repeat_penalty=1, reset=True, **kw):
                now = time.perf_counter()
                first = first or now
                toks += 1
                if tok in eng.eos_ids or toks >= max_tokens:
                    break
            return (now - first) * 1000 / max(toks - 1, 1), toks

        out["none_ms"].append(run()[0])
        t = time.perf_counter()
        proc = Timed(processor_for(eng, schema, prefix=CALL_PREFIX, budget=max_tokens))
        out["xgrammar_compile_s"].append(time.perf_counter() - t)
        from llama_cpp import LlamaGrammar, LogitsProcessorList

        from phikit.engines.llamacpp import _as_numpy_processor

        ms, toks = run(logits_processor=LogitsProcessorList([_as_numpy_processor(proc)]))
        out["xgrammar_ms"].append(ms)
        out["xgrammar_mask_ms"].append(proc.seconds * 1000 / max(proc.calls, 1))
        t = time.perf_counter()
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        out["gbnf_compile_s"].append(time.perf_counter() - t)
        out["gbnf_ms"].append(run(grammar=grammar)[0])
    return {k: round(statistics.median(v), 3) for k, v in out.items() if v}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="bench/tools_cases.json")
    ap.add_argument("--out", default="docs/bench-tools.json")
    ap.add_argument("--backend", default="llamacpp")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=48, help="budget of an unconstrained turn")
    ap.add_argument("--constrained-max-tokens", type=int, default=96, help="budget of a constrained turn")
    ap.add_argument("--overhead-cases", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is fastest on a shared 2-core box)")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    import phikit

    cases = json.loads(Path(args.cases).read_text())["cases"]
    if args.limit:
        cases = cases[: args.limit]
    opts = {"n_threads": args.threads} if args.backend == "llamacpp" else {}
    llm = phikit.load("smollm2-135m", backend=args.backend, **opts)
    rows = []
    for case in tqdm(cases, desc="cases", file=sys.stderr):
        rows.append({"question": case["question"], "expected": case["expected"],
                     "unconstrained": rates(llm, case, "auto", args.max_tokens),
                     "constrained": rates(llm, case, "required", args.constrained_max_tokens)})
    summary = {}
    for mode in ("unconstrained", "constrained"):
        rs = [r[mode] for r in rows]
        summary[mode] = {
            "parseable_rate": round(sum(r["parseable"] for r in rs) / len(rs), 3),
            "schema_valid_rate": round(sum(r["valid"] for r in rs) / len(rs), 3),
            "right_tool_rate": round(sum(r["right_tool"] for r in rs) / len(rs), 3),
            "median_tokens": statistics.median(r["tokens"] for r in rs),
            "median_tok_s": round(statistics.median(r["tok_s"] for r in rs), 1),
        }
    over = overhead(llm, cases, args.constrained_max_tokens, args.overhead_cases) if args.backend == "llamacpp" else {}
    from importlib.metadata import version

    import llama_cpp
    import xgrammar  # noqa: F401

    report = {
        "model": llm.model, "backend": llm.backend, "cases": len(rows), "max_new_tokens": {"unconstrained": args.max_tokens, "constrained": args.constrained_max_tokens},
        "threads": args.threads,
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "versions": {"llama_cpp_python": llama_cpp.__version__, "xgrammar": version("xgrammar"), "python": platform.python_version()},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "summary": summary, "overhead_ms_per_token": over, "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(json.dumps({k: report[k] for k in ("model", "cases", "summary", "overhead_ms_per_token", "load_average_1m")}, indent=1))


if __name__ == "__main__":
    main()
