"""``phikit eval rag``: retrieval and grounded-answer metrics over a QA set.

QA lines (JSONL): ``{"id", "question", "answers": [acceptable fact strings], "doc": "path/under/corpus.md"}``
for answerable questions; ``{"id", "question", "answerable": false}`` for questions the KB cannot answer.

Metrics (answerable = questions with a ``doc``):
    recall@k: share of answerable questions with a chunk of ``doc`` in the top k.
    MRR: mean of 1 / rank of the first ``doc`` chunk (0 when absent from the top k).
    grounded accuracy: share of answerable questions whose answer contains an expected fact and cites a
        chunk of ``doc`` (explicit ``[n]`` or attributed; ``explicit_citation_rate`` counts ``[n]`` only).
    hallucination rate: share of unanswerable questions answered instead of abstaining.
    numbers not in the cited passage: shown answers stating a number (price, duration, date...) that none
        of the passages they cite contains (the checks in :mod:`.verify` should make this 0).
    abstention precision: share of abstentions that were on unanswerable questions.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from ..errors import BadRequestError
from .retrieve import search
from .store import open_kb
from .verify import Passage, quantities


def load_qa(path: str | Path) -> list[dict]:
    """Read and check a QA JSONL file.

    Raises:
        BadRequestError: unreadable file, bad JSON (names the line), or a line without ``question``.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise BadRequestError(f"cannot read QA file {path}: {exc.strerror}") from None
    items = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadRequestError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not str(item.get("question", "")).strip():
            raise BadRequestError(f"{path}:{n}: each line needs a \"question\"")
        item.setdefault("id", f"q{n}")
        item.setdefault("answerable", bool(item.get("doc")))
        if item["answerable"] and not item.get("doc"):
            raise BadRequestError(f"{path}:{n}: an answerable question needs \"doc\" (the source document)")
        answers = item.get("answers", item.get("answer", []))
        item["answers"] = [answers] if isinstance(answers, str) else list(answers)
        items.append(item)
    if not items:
        raise BadRequestError(f"{path} holds no questions")
    return items


def uncited_numbers(answer: str, cited: list[str]) -> list[str]:
    """Quantities of ``answer`` (numbers with their units, :func:`.verify.quantities`) that none of the
    ``cited`` passage texts contains."""
    passages = [Passage(t) for t in cited]
    return [f"{v} {u}".strip() for v, u in quantities(answer) if not any(p.has_quantity((v, u)) for p in passages)]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().replace(",", "")).strip()


def _is_doc(source: str, doc: str | None) -> bool:
    return bool(doc) and (source == doc or source.endswith("/" + doc.lstrip("./")))


def calibrate(best: list[float], answerable: list[bool], max_false_abstention: float = 0.05) -> dict:
    """The retrieval threshold on the best hit's cosine: the highest one that abstains on at most
    ``max_false_abstention`` of the answerable questions (retrieval should only catch the clearly
    off-topic; the model and the support check handle the rest).

    Returns:
        ``{"min_score", "false_abstention", "unanswerable_caught"}`` (shares in %), or ``{}`` when the set
        lacks either kind of question.
    """
    if not any(answerable) or all(answerable):
        return {}
    pos = sorted(b for b, a in zip(best, answerable) if a)
    neg = [b for b, a in zip(best, answerable) if not a]
    allowed = int(max_false_abstention * len(pos))
    t = pos[allowed]  # abstain below t: exactly `allowed` answerable questions fall under it
    return {"min_score": round(t - 1e-4, 4), "false_abstention": round(100.0 * allowed / len(pos), 1),
            "unanswerable_caught": round(100.0 * sum(b < t for b in neg) / len(neg), 1)}


def evaluate(items: list[dict], kb: Any, llm=None, *, k: int = 4, max_new_tokens: int = 96, progress: bool = False,
             **rag: Any) -> dict:
    """Run retrieval (and, with ``llm``, grounded answers) for every QA item.

    Args:
        items: from :func:`load_qa`.
        kb: KB directory or loaded KB.
        llm: a :class:`phikit.LLM`; None measures retrieval only.
        k: passages retrieved.
        max_new_tokens: answer budget (greedy decoding).
        **rag: :class:`~phikit.rag.grounded.RagOptions` overrides (e.g. ``min_score``).

    Returns:
        ``{"n", "answerable", "unanswerable", "k", "recall_at_k", "mrr", ...metrics, "calibration", "rows"}``.
    """
    from tqdm.auto import tqdm

    base = open_kb(kb)
    by_id = {c.id: c for c in base.chunks}
    rows = []
    for item in tqdm(items, desc="eval rag", disable=not progress, leave=False):
        hits = search(base, item["question"], k=k)
        rank = next((h.rank for h in hits if _is_doc(h.chunk.source, item.get("doc"))), None)
        row = {"id": item["id"], "question": item["question"], "answerable": item["answerable"], "doc": item.get("doc"),
               "rank": rank, "best_score": round(hits[0].dense, 4) if hits else 0.0}
        if llm is not None:
            t0 = time.perf_counter()
            res = llm.chat(item["question"], kb=base, k=k, temperature=0.0, max_new_tokens=max_new_tokens,
                           provenance=False, **rag)
            cites = res.extra.get("citations", [])
            answer = _norm(res.text)
            row.update(
                answer=res.text, seconds=round(time.perf_counter() - t0, 2), abstained=res.extra.get("abstained", False),
                abstain_reason=res.extra.get("abstain_reason"),
                fact=any(_norm(a) in answer for a in item["answers"]) if item["answers"] else None,
                cited_doc=any(_is_doc(c["source"], item.get("doc")) for c in cites),
                explicit=any(not c["inferred"] for c in cites),
                cited_ids=[c["id"] for c in cites],
                extractive=res.extra.get("extractive", False), withdrawn=len(res.extra.get("withdrawn", [])),
                uncited_numbers=[] if res.extra.get("abstained") else
                uncited_numbers(res.text, [by_id[c["id"]].text for c in cites if c["id"] in by_id]),
            )
        rows.append(row)
    return summarize(rows, k=k, with_answers=llm is not None, model=getattr(llm, "model", None), kb=base)


def summarize(rows: list[dict], *, k: int, with_answers: bool, model: str | None = None, kb=None) -> dict:
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]
    pct = lambda xs: round(100.0 * sum(xs) / len(xs), 1) if xs else None  # noqa: E731
    report: dict[str, Any] = {
        "n": len(rows), "answerable": len(ans), "unanswerable": len(una), "k": k,
        "kb_version": kb.version if kb else None, "model": model,
        "recall_at_k": pct([r["rank"] is not None for r in ans]),
        "mrr": round(sum(1.0 / r["rank"] for r in ans if r["rank"]) / len(ans), 3) if ans else None,
        "calibration": calibrate([r["best_score"] for r in rows], [r["answerable"] for r in rows]),
    }
    if with_answers:
        abstained = [r for r in rows if r["abstained"]]
        report.update(
            grounded_accuracy=pct([bool(r["fact"]) and r["cited_doc"] and not r["abstained"] for r in ans]),
            answer_contains_fact=pct([bool(r["fact"]) for r in ans]),
            explicit_citation_rate=pct([r["explicit"] for r in ans if not r["abstained"]]),
            hallucination_rate=pct([not r["abstained"] for r in una]),
            abstention_precision=pct([not r["answerable"] for r in abstained]),
            abstention_recall=pct([r["abstained"] for r in una]),
            false_abstention_rate=pct([r["abstained"] for r in ans]),
            extractive_answers=sum(bool(r.get("extractive")) for r in rows),
            answers_with_numbers_not_in_cited_passage=sum(bool(r.get("uncited_numbers")) for r in rows),
            mean_seconds=round(sum(r["seconds"] for r in rows) / len(rows), 2) if rows else None,
        )
    report["rows"] = rows
    return report


def render_table(report: dict):
    """A rich table of the headline figures."""
    from rich.table import Table

    table = Table(title=f"phikit eval rag · {report['n']} questions ({report['unanswerable']} unanswerable) · "
                        f"{report.get('model') or 'retrieval only'} · {report['kb_version']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    names = [("recall_at_k", f"recall@{report['k']} (%)"), ("mrr", f"MRR@{report['k']}"),
             ("grounded_accuracy", "grounded accuracy (%)"), ("answer_contains_fact", "answer contains fact (%)"),
             ("explicit_citation_rate", "explicit \\[n] citations (%)"), ("hallucination_rate", "hallucination rate (%)"),
             ("abstention_precision", "abstention precision (%)"), ("abstention_recall", "abstention recall (%)"),
             ("false_abstention_rate", "false abstentions (%)"), ("extractive_answers", "extractive answers"),
             ("answers_with_numbers_not_in_cited_passage", "answers with a number not in the cited passage"),
             ("mean_seconds", "mean seconds / question")]
    for key, label in names:
        if key in report:
            table.add_row(label, "-" if report[key] is None else str(report[key]))
    if report.get("calibration"):
        c = report["calibration"]
        table.add_row("calibrated min_score", f"{c['min_score']} (catches {c['unanswerable_caught']}% of "
                      f"unanswerable, {c['false_abstention']}% false)")
    return table
