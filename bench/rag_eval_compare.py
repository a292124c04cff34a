"""Side-by-side table of two ``phikit eval rag --out`` reports (e.g. before and after a change), in the
markdown docs/bench-rag.md shows, plus the questions whose outcome changed.

    phikit eval rag examples/support-bot/qa.jsonl --kb KB --out after.json
    .venv/bin/python bench/rag_eval_compare.py before.json after.json

"Numbers not in the cited passage" is recomputed here from each report's rows and the KB (so a report
written before that metric existed is scored the same way): a shown answer counts when it states a
quantity that none of the passages it cites contains (:func:`phikit.rag.eval.uncited_numbers`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = [("grounded_accuracy", "grounded accuracy (%)"), ("hallucination_rate", "hallucination rate (%)"),
           ("false_abstention_rate", "false refusals (answerable questions refused, %)"),
           ("answer_contains_fact", "answer contains the expected fact (%)"),
           ("abstention_precision", "abstention precision (%)"), ("recall_at_k", "recall@4 (%)"),
           ("numbers_not_in_cited", "shown answers with a number not in the cited passage"),
           ("extractive_answers", "extractive (quoted) answers"), ("mean_seconds", "mean seconds / question")]


def numbers_not_in_cited(report: dict, kb: str | None) -> int | None:
    from phikit.rag.eval import uncited_numbers
    from phikit.rag.store import open_kb

    rows = [r for r in report["rows"] if not r.get("abstained")]
    if not kb or any("cited_ids" not in r for r in rows):
        return None
    chunks = {c.id: c for c in open_kb(kb).chunks}
    return sum(bool(uncited_numbers(r["answer"], [chunks[i].text for i in r["cited_ids"] if i in chunks])) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--kb", help="the KB both reports were run on (for the cited-number count)")
    args = ap.parse_args()
    reports = [json.loads(Path(p).read_text()) for p in (args.before, args.after)]
    for rep in reports:
        rep["numbers_not_in_cited"] = numbers_not_in_cited(rep, args.kb)
        rep.setdefault("extractive_answers", 0)
    print(f"| metric | before ({reports[0].get('model')}) | after ({reports[1].get('model')}) |")
    print("|---|---:|---:|")
    for key, label in METRICS:
        a, b = (r.get(key) for r in reports)
        print(f"| {label} | {'-' if a is None else a} | {'-' if b is None else b} |")
    print("\nChanged outcomes (A = answered, R = refused; + = expected fact and right document cited):")
    before = {r["id"]: r for r in reports[0]["rows"]}
    for r in reports[1]["rows"]:
        b = before.get(r["id"])
        if b is None:
            continue

        def tag(x):
            return "R" if x.get("abstained") else ("A+" if x.get("fact") and x.get("cited_doc") else "A")

        if tag(b) != tag(r):
            print(f"- {r['id']} {tag(b)} -> {tag(r)}: {r['question']} -> {r['answer'][:110]!r}")


if __name__ == "__main__":
    main()
