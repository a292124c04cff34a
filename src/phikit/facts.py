"""A small fact and instruction set with accepted answers, and the rate at which a model gets them right.

A 135M model's greedy text changes with the build, the quantization and the thread count, so behaviour is
judged as a rate over many short prompts, not one exact string. The set (``data/facts.jsonl``, one JSON
object a line: ``id``, ``kind`` ``"fact" | "instruction"``, ``prompt``, ``accept``: strings any one of
which makes the answer right, matched as whole words, case-insensitive unless ``"case": true``) is used by
``bench/quant_bench.py`` and by the tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FACTS = Path(__file__).parent / "data" / "facts.jsonl"


def load_facts(path: str | Path = FACTS, ids: list[str] | None = None) -> list[dict[str, Any]]:
    """The prompts of ``path``, all of them or those named in ``ids`` (in that order)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if ids is None:
        return rows
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in ids]


def is_right(answer: str, fact: dict[str, Any]) -> bool:
    """True when one of ``fact["accept"]`` appears in ``answer`` as a whole word (or phrase)."""
    flags = 0 if fact.get("case") else re.IGNORECASE
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", answer, flags) for a in fact["accept"])


def score(llm, facts: list[dict[str, Any]], *, max_new_tokens: int = 48, progress: bool = False,
          **params: Any) -> dict[str, Any]:
    """Ask each prompt greedily (one user turn, the model's default system prompt) and score the answers.

    Args:
        llm: a :class:`phikit.LLM`.
        facts: from :func:`load_facts`.
        max_new_tokens: the answer budget; the accepted words come early in a right answer.
        progress: draw a progress bar on stderr.
        **params: more sampling parameters for ``llm.chat``.

    Returns:
        ``{"rate", "right", "n", "rows": [{id, kind, answer, right, tokens, tok_s}]}``.
    """
    from tqdm.auto import tqdm

    rows = []
    for f in tqdm(facts, desc="facts", unit="prompt", disable=not progress, leave=False):
        r = llm.chat(f["prompt"], temperature=0, max_new_tokens=max_new_tokens, **params)
        rows.append({"id": f["id"], "kind": f["kind"], "answer": r.text, "right": is_right(r.text, f),
                     "tokens": r.usage.completion_tokens, "tok_s": r.tokens_per_s})
    right = sum(r["right"] for r in rows)
    return {"rate": right / len(rows) if rows else 0.0, "right": right, "n": len(rows), "rows": rows}
