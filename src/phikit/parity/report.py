"""Parity reports as Markdown and JSON files."""

from __future__ import annotations

import json
from pathlib import Path

from ..cache import atomic_write
from .suite import ParityReport


def _f(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def markdown(report: ParityReport) -> str:
    """A Markdown report: verdict, summary against the thresholds, one row per prompt."""
    s, t = report.summary, report.thresholds
    verdict = "PASS" if report.passed else "FAIL: " + "; ".join(report.failures)
    lines = [
        f"# Parity: {report.candidate} vs {report.reference}",
        "",
        f"**{verdict}** (tier `{report.tier}`, {s['prompts']} prompts, {report.tokens} greedy tokens each)",
        "",
        "| measure | value | threshold |",
        "| --- | --- | --- |",
        f"| identical greedy tokens | {s['identical']}/{s['prompts']} ({s['identical_rate']:.0%}) | "
        f"{'>= ' + format(t['identical'], '.0%') if t.get('identical') is not None else 'reported'} |",
        f"| first divergence (median token, diverging prompts) | {_f(s['first_divergence_median'])} | - |",
        f"| teacher-forced top-1 agreement | {s['top1']:.4f} | {'>= ' + str(t['top1']) if t.get('top1') is not None else 'reported'} |",
        f"| KL(ref ‖ cand) mean, nats | {s['mean_kl']:.3g} | {'<= ' + str(t['mean_kl']) if t.get('mean_kl') is not None else 'reported'} |",
        f"| KL max, nats | {s['max_kl']:.3g} | reported |",
        f"| same tool calls | {_f(s['tool_calls_same'])} | {'>= ' + format(t['tool_calls'], '.0%') if t.get('tool_calls') is not None else 'reported'} |",
        f"| same citations | {_f(s['citations_same'])} | {'>= ' + format(t['citations'], '.0%') if t.get('citations') is not None else 'reported'} |",
        f"| prompt tokenized identically | {s['prompt_tokens_equal']}/{s['prompts']} | - |",
        "",
        "| prompt | kind | identical | first divergence | top-1 | mean KL | max KL | tools | citations | candidate text |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in report.prompts:
        text = " ".join(p.candidate_text.split())[:60].replace("|", "\\|")
        lines.append(
            f"| {p.id} | {p.kind} | {'yes' if p.identical else 'no'} | {_f(p.first_divergence)} | {p.top1:.3f} | "
            f"{p.mean_kl:.3g} | {p.max_kl:.3g} | {_f(p.tool_calls_same)} | {_f(p.citations_same)} | {text} |"
        )
    env = report.environment
    lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    return "\n".join(lines)


def write_reports(report: ParityReport, prefix: str | Path) -> tuple[Path, Path]:
    """Write ``prefix.json`` and ``prefix.md`` atomically; return their paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    js, md = prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md")
    atomic_write(js, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    atomic_write(md, markdown(report))
    return js, md
