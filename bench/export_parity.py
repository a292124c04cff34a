"""Export the embedded model to every supported artifact and hold each to parity against transformers.

    .venv/bin/python bench/export_parity.py [--out build/export] [--tokens 32] [--limit N]
                                            [--only onnx-fp32,onnx-int4,gguf-f16,gguf-q8_0,gguf-q4_k_m,gguf-q4_1]

For each artifact: ``phikit.artifacts.export_onnx`` / ``export_gguf`` (what ``phikit export`` runs) with the
parity suite on (20 prompts x ``--tokens`` greedy tokens, reference ``transformers:smollm2-135m``, fp32 from
the same weights), then the export time, the artifact's size and the parity summary. ``gguf-q4_1`` is not an
export: it is the packaged Q4_1 file (``smollm2-135m-q4_1``), run through the same suite to show what the
thresholds say about the runtime divergence that motivated them. Writes
``bench/results/export_parity.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ALL = ("onnx-fp32", "gguf-f16", "onnx-int4", "gguf-q4_k_m", "gguf-q4_1", "gguf-q8_0")


def size_mb(path: Path) -> float:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return round(sum(p.stat().st_size for p in files if not p.name.startswith(("parity", "phikit-"))) / 1e6, 1)


def run_one(name: str, args) -> dict:
    from phikit.artifacts import export_gguf, export_onnx, record_parity
    from phikit.parity import run_parity
    from phikit.parity.report import write_reports

    kind, typ = name.split("-", 1)
    out = Path(args.out) / (f"smollm2-{typ}" + (".gguf" if kind == "gguf" else ""))
    t = time.perf_counter()
    if name == "gguf-q4_1":  # the packaged file: parity only
        report = run_parity("transformers:smollm2-135m", "llamacpp:smollm2-135m-q4_1", tokens=args.tokens,
                            limit=args.limit)
        write_reports(report, Path(args.out) / "smollm2-q4_1.parity")
        parity = {"passed": report.passed, "tier": report.tier, "failures": report.failures, "summary": report.summary}
        from phikit.models import resolve

        return {"artifact": name, "export_s": None, "parity_s": round(time.perf_counter() - t, 1),
                "size_mb": size_mb(Path(resolve("smollm2-135m-q4_1").source)), "parity": parity}
    if kind == "onnx":
        export_onnx(None, out, precision=typ, parity=False, progress=False)
    else:
        export_gguf(None, out, type=typ, parity=False, progress=False)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    # what `phikit export` runs after writing (parity on), timed apart from the export
    parity = record_parity(out, "smollm2-135m", tokens=args.tokens, limit=args.limit)
    return {"artifact": name, "export_s": round(export_s, 1), "parity_s": round(time.perf_counter() - t, 1),
            "size_mb": size_mb(out), "parity": parity}


def table(rows: list[dict]) -> str:
    lines = ["| artifact | MB | tier | identical greedy | top-1 | mean KL | max KL | tool calls same | citations same | verdict |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        p, s = r["parity"], r["parity"]["summary"]
        lines.append(f"| {r['artifact']} | {r['size_mb']} | {p['tier']} | {s['identical']}/{s['prompts']} | "
                     f"{s['top1']:.3f} | {s['mean_kl']:.2g} | {s['max_kl']:.2g} | {s['tool_calls_same']} | "
                     f"{s['citations_same']} | {'pass' if p['passed'] else 'FAIL: ' + '; '.join(p['failures'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/export")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--json", default="bench/results/export_parity.json")
    args = ap.parse_args()
    from phikit.parity.suite import environment

    rows = []
    for name in args.only.split(","):
        print(f"== {name}", file=sys.stderr, flush=True)
        rows.append(run_one(name, args))
        print(table(rows[-1:]), file=sys.stderr, flush=True)
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        doc = {"device": f"CPU {platform.machine()}, {os.cpu_count()} cores", "versions": environment(),
               "tokens": args.tokens, "threads": os.environ.get("PHIKIT_THREADS"), "uptime_at_end": load,
               "results": rows}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")  # after each artifact: a partial run keeps its rows
    print(table(rows))
    print(f"\n{doc['device']} · {load}")


if __name__ == "__main__":
    main()
