"""The matrix report as files: ``bench.json`` (everything), ``bench.md`` (tables) and ``bench.png`` (plots),
each written atomically; :func:`markdown` is also what ``phikit bench`` prints.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..cache import atomic_write


def _fmt(x, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def markdown(report: dict) -> str:
    """Tables: the run's set-up, one line per backend (load, memory, cost), every cell (TTFT, tok/s, ratios to
    HF ``generate``), and the hosted-API prices for the same query profile."""
    spec, p = report["spec"], report["prices"]
    lines = [f"`{report['command']}`", "",
             f"Device: {report['device']}; CPU: {report['cpu']}; load average {report['load_average_start']} at "
             f"start, {report.get('load_average_end')} at end; {report.get('elapsed_s')} s.",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
             f"Model: {report['model']['name']} ({report['model']['format']}"
             f"{', random weights' if report['model']['random_weights'] else ''}); greedy, random-token prompts, "
             f"{spec['max_tokens']} new tokens, median of {spec['runs']} runs (HF batch > 1: 1 run).", "",
             "| backend | device | load s | weights GB | peak GB | $/1k queries b1 | $/1k queries best (batch) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        c = r.get("cost") or {}
        per = c.get("per_batch", {})
        b1 = per.get(1, per.get("1"))
        best = f"{c['best']:.4f} (b{c['best_batch']})" if c.get("best") is not None else "-"
        lines.append(f"| {r['name']} | {r['device']} | {_fmt(r['load_s'], 2)} | {_fmt(r['weights_gb'], 2)} | "
                     f"{_fmt(r.get('peak_gb'), 2)} ({r.get('memory', '-')}) | {_fmt(b1, 4)} | {best} |")
    for name, why in report["skipped"].items():
        lines.append(f"| {name} | skipped: {why} | | | | | |")
    lines += ["", "| backend | batch | prompt tokens | TTFT ms | decode tok/s | x HF tok/s | x HF TTFT |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        for c in r["cells"]:
            if "na" in c:
                lines.append(f"| {r['name']} | {c['batch']} | {c['prompt_tokens']} | n/a: {c['na']} | | | |")
                continue
            short = f" ({c['tokens']} tok)" if c.get("tokens", spec["max_tokens"]) < spec["max_tokens"] else ""
            lines.append(f"| {r['name']} | {c['batch']} | {c['prompt_tokens']} | {_fmt(c['ttft_ms'])} | "
                         f"{_fmt(c['decode_tok_s'])}{short} | {_fmt(c.get('x_hf_tok_s'), 2)} | "
                         f"{_fmt(c.get('x_hf_ttft'), 2)} |")
    notes = [f"{r['name']}: {n}" for r in report["rows"] for n in r.get("notes", [])]
    lines += [""] + [f"- {n}" for n in notes] + [
        f"- Cost: {spec['prompt_tokens']} tokens in, {spec['answer_tokens']} out per query, from the cells at the "
        f"nearest prompt length, a machine kept busy with full batches; GPU ${p['gpu_per_hour']}/h, "
        f"CPU ${p['cpu_per_hour']}/h (defaults: {p['gpu_default']['name']}, as published "
        f"{p['gpu_default']['as_published']}, {p['gpu_default']['source']}; {p['cpu_default']['name']}, "
        f"as published {p['cpu_default']['as_published']}, {p['cpu_default']['source']}).", "",
        "| hosted API (same profile) | $ in / out per 1M tokens | $/1k queries | source (as published; check before quoting) |",
        "| --- | --- | --- | --- |"]
    for h in report["hosted"]:
        lines.append(f"| {h['model']} | {h['usd_per_1m_input']} / {h['usd_per_1m_output']} | "
                     f"{h['usd_per_1000_queries']:.4f} | {h['source']} ({h['as_published']}) |")
    return "\n".join(lines) + "\n"


def plot(report: dict) -> bytes:
    """A PNG: decode tok/s against batch (middle prompt length), TTFT against prompt length (batch 1), and cost
    per 1,000 queries of every backend beside the hosted APIs (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec, rows = report["spec"], [r for r in report["rows"] if r["cells"]]
    lengths = spec["prompt_lengths"]
    mid = lengths[len(lengths) // 2]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for r in rows:
        pts = sorted((c["batch"], c["decode_tok_s"]) for c in r["cells"] if c["prompt_tokens"] == mid and c.get("decode_tok_s"))
        if pts:
            axes[0].plot(*zip(*pts), marker="o", label=r["name"])
        pts = sorted((c["prompt_tokens"], c["ttft_ms"]) for c in r["cells"] if c["batch"] == min(spec["batches"])
                     and c.get("ttft_ms") is not None)
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=r["name"])
    axes[0].set(title=f"decode tok/s (aggregate), prompt {mid}", xlabel="batch", ylabel="tokens/s")
    axes[1].set(title=f"TTFT, batch {min(spec['batches'])}", xlabel="prompt tokens", ylabel="ms")
    for ax in axes[:2]:
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    names = [f"{r['name']} (b{r['cost']['best_batch']})" for r in rows if r.get("cost", {}).get("best") is not None]
    vals = [r["cost"]["best"] for r in rows if r.get("cost", {}).get("best") is not None]
    colors = ["#2a7"] * len(vals)
    for h in report["hosted"]:
        names.append(h["model"].split(",")[0])
        vals.append(h["usd_per_1000_queries"])
        colors.append("#999")
    bars = axes[2].barh(range(len(vals)), vals, color=colors)
    axes[2].set_yticks(range(len(vals)), names, fontsize=7)
    axes[2].invert_yaxis()
    axes[2].set_xscale("log")
    axes[2].bar_label(bars, fmt="%.3g", fontsize=7)
    axes[2].set_title(f"\\$ per 1,000 queries ({spec['prompt_tokens']} in / {spec['answer_tokens']} out)", fontsize=10)
    fig.suptitle(f"phikit bench - {report['model']['name']} - {report['device']}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def save_partial(report: dict, out: Path) -> None:
    """Write the rows done so far to ``out/bench.partial.json`` (a run cut short keeps them; :func:`write`
    removes it)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(out) / "bench.partial.json", json.dumps(report, indent=1, default=str) + "\n")


def write(report: dict, out: Path) -> list[Path]:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out`` (created); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.md", out / "bench.png"]
    atomic_write(paths[0], json.dumps(report, indent=1, default=str) + "\n")
    atomic_write(paths[1], markdown(report))
    atomic_write(paths[2], plot(report))
    (out / "bench.partial.json").unlink(missing_ok=True)
    return paths
