"""Knowledge evaluation: held-out questions scored by expected keywords, plus a retention perplexity.

A fact counts as recalled when every expected keyword appears in the greedy answer (case-insensitive).
The questions are paraphrases never seen in training, so recall measures learned facts, not memorised
strings. Retention is the perplexity on a fixed general text (:data:`GENERAL_TEXT`): an adapter that
teaches facts by damaging the base model shows up as a rise.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import BadRequestError
from .data import read_jsonl

# Fixed general text for retention (plain encyclopaedic English, no product facts).
GENERAL_TEXT = (
    "Water boils at one hundred degrees Celsius at sea level. The Earth orbits the Sun once a year, and the "
    "Moon orbits the Earth about once a month. Paris is the capital of France, and Berlin is the capital of "
    "Germany. Plants turn sunlight, water and carbon dioxide into sugar and oxygen. A week has seven days, "
    "and a year has twelve months."
)
# Retention threshold: after/before perplexity on GENERAL_TEXT. See docs/lora.md for the measurement.
MAX_PPL_RATIO = 1.25
# Fixed general questions the embedded base answers correctly (greedy, llama.cpp); an adapter may cost at
# most MAX_GENERAL_DROP of them (one in ten: a 135M model's greedy answers flip on small perturbations).
GENERAL_QUESTIONS = [
    {"question": "What is the capital of France?", "expected": ["Paris"]},
    {"question": "What is the capital of Germany?", "expected": ["Berlin"]},
    {"question": "What is the capital of Japan?", "expected": ["Tokyo"]},
    {"question": "How many days are in a week?", "expected": ["7 day"]},
    {"question": "What colour is the sky on a clear day?", "expected": ["blue"]},
    {"question": "Who wrote Romeo and Juliet?", "expected": ["Shakespeare"]},
    {"question": "What gas do plants take in from the air?", "expected": ["carbon dioxide"]},
    {"question": "What is the chemical formula of water?", "expected": ["H2O"]},
    {"question": "Which ocean is the largest?", "expected": ["Pacific"]},
    {"question": "What do bees make?", "expected": ["honey"]},
]
MAX_GENERAL_DROP = 0.1


def retention(before: dict, after: dict) -> dict[str, Any]:
    """Whether an adapter kept the base's general ability: perplexity ratio and general-question recall.

    Args:
        before, after: scores with ``perplexity_general`` and (optionally) ``general_recall``.

    Returns:
        ``{"ppl_ratio", "general_drop", "ok", "why"}``; ``why`` names what failed (None when ``ok``).
    """
    ratio = after["perplexity_general"] / before["perplexity_general"]
    drop = before.get("general_recall", 0.0) - after.get("general_recall", 0.0)
    why = []
    if ratio > MAX_PPL_RATIO:
        why.append(f"general perplexity is {ratio:.2f}x the base's (limit {MAX_PPL_RATIO}x)")
    if drop > MAX_GENERAL_DROP + 1e-9:
        why.append(f"general questions fell by {drop:.0%} (limit {MAX_GENERAL_DROP:.0%})")
    return {"ppl_ratio": round(ratio, 3), "general_drop": round(drop, 3), "ok": not why, "why": "; ".join(why) or None}


def read_facts(path: str | Path) -> list[dict]:
    """``{"question": ..., "expected": "kw" | ["kw", ...]}`` lines (``keywords`` is accepted for ``expected``).

    Raises:
        BadRequestError: a line without a question or expected keywords.
    """
    facts = []
    for n, row in enumerate(read_jsonl(path), 1):
        kws = row.get("expected", row.get("keywords"))
        kws = [kws] if isinstance(kws, str) else kws
        if not isinstance(row.get("question"), str) or not kws or not all(isinstance(k, str) and k for k in kws):
            raise BadRequestError(f"{Path(path).name} line {n}: expected {{\"question\": ..., \"expected\": [keywords]}}")
        facts.append({"question": row["question"], "expected": kws})
    return facts


def _words(text: str) -> str:
    return " ".join(text.lower().replace("-", " ").split())


def recalled(answer: str, expected: list[str]) -> bool:
    """Whether every keyword appears in ``answer``: case-insensitive, hyphens read as spaces ("a 7-day period"
    holds "7 day"), and each keyword starting a word ("141 hours" does not hold "41 hours")."""
    text = _words(answer)
    return all(re.search(r"(?<!\w)" + re.escape(_words(k)), text) for k in expected)


def knowledge_recall(llm, facts: list[dict], *, adapter: str | None = None, max_new_tokens: int = 48,
                     progress: bool = False) -> dict[str, Any]:
    """Ask each question greedily and score it.

    Args:
        llm: a :class:`phikit.LLM`.
        facts: from :func:`read_facts`.
        adapter: passed to ``llm.chat`` when given.

    Returns:
        ``{"recall": hits/n, "hits", "n", "rows": [{question, expected, answer, ok}]}``.
    """
    from tqdm import tqdm

    extra = {"adapter": adapter} if adapter else {}
    rows = []
    for f in tqdm(facts, desc="eval", disable=not progress, leave=False):
        answer = llm.chat(f["question"], temperature=0, max_new_tokens=max_new_tokens, **extra).text
        rows.append({**f, "answer": answer, "ok": recalled(answer, f["expected"])})
    hits = sum(r["ok"] for r in rows)
    return {"recall": hits / len(rows) if rows else 0.0, "hits": hits, "n": len(rows), "rows": rows}


def perplexity(model, tokenizer, text: str = GENERAL_TEXT) -> float:
    """exp(mean next-token cross-entropy) of ``text`` under ``model`` (one forward pass, no gradient)."""
    import torch

    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)], device=model.device)
    with torch.inference_mode():
        loss = model(input_ids=ids, labels=ids).loss
    return float(math.exp(loss.float().item()))


def llamacpp_perplexity(engine, text: str = GENERAL_TEXT) -> float:
    """:func:`perplexity` on a llama.cpp engine, through its active adapter: one decode step per token, each
    step's next-token log-probability read from ``llama_get_logits_ith`` (llama-cpp-python keeps only the
    last position's logits unless the context was made with ``logits_all``). Drops the engine's prefix cache."""
    import llama_cpp
    import numpy as np

    ids = engine.encode(text)
    llm = engine.llm
    engine._slot = []
    llm.reset()
    nll = 0.0
    for i, tok in enumerate(ids[:-1]):
        llm.eval([tok])
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
        top = logits.max()
        nll -= float(logits[ids[i + 1]] - top - np.log(np.exp(logits - top).sum()))
    llm.reset()
    return float(math.exp(nll / max(1, len(ids) - 1)))


def general_perplexity(engine) -> float:
    """Retention perplexity on whatever backend ``engine`` is (llama.cpp or transformers), adapter as active."""
    if engine.name == "llamacpp":
        return llamacpp_perplexity(engine)
    return perplexity(engine.model, engine.tokenizer)


def check_drift(facts_path: str | Path, *, adapter: str | None = None, model: str | None = None,
                backend: str = "auto", max_new_tokens: int = 48, progress: bool = False) -> dict[str, Any]:
    """Score ``facts_path`` on the base model and, with ``adapter``, through it; record the check.

    ``backend`` ``auto`` is the one the base serves on by default (llama.cpp for a GGUF file), so the check
    measures what users get.

    With an adapter, its stored after-training recall (for the same facts file) is the bar: a lower recall
    now, or lost retention (:func:`retention`: general perplexity over :data:`MAX_PPL_RATIO` times the
    base's, or more than :data:`MAX_GENERAL_DROP` of :data:`GENERAL_QUESTIONS` lost), is drift. Each check
    is appended to the adapter's manifest under ``checks``.

    Returns:
        ``{"base": {...}, "adapter": {...} | None, "stored_recall", "retention", "drift": reason | None}``.

    Raises:
        AdapterError: the adapter is missing, corrupt or made for another base model.
    """
    import time

    from ..adapters import MANIFEST, read_manifest, resolve_adapter, write_json_atomic
    from ..llm import load
    from .data import file_hash

    facts = read_facts(facts_path)
    manifest, path = None, None
    if adapter:
        _, path = resolve_adapter(adapter)
        manifest = read_manifest(path)
        model = model or manifest["base"]["source"]
    llm = load(model, backend=backend, adapter="none")  # "none": the registry's enabled adapter stays out
    engine = llm.engine

    def score(name: str) -> dict:
        r = knowledge_recall(llm, facts, adapter=name, max_new_tokens=max_new_tokens, progress=progress)
        g = knowledge_recall(llm, GENERAL_QUESTIONS, adapter=name, max_new_tokens=max_new_tokens)
        ppl = None  # a backend without adapters (onnx: an export, adapter merged) has no perplexity here
        if hasattr(engine, "activate"):
            engine.activate(None if name == "none" else name)
            ppl = round(general_perplexity(engine), 3)
        return {"recall": r["recall"], "hits": r["hits"], "n": r["n"], "backend": engine.name,
                "general_recall": g["recall"], "perplexity_general": ppl}

    name = engine.load_adapter(str(path)) if path else None
    report: dict[str, Any] = {"base": score("none"), "adapter": None, "stored_recall": None, "drift": None}
    if name is None:
        return report
    report["adapter"] = now = score(name)
    stored = manifest.get("eval", {}).get("after", {})
    if manifest["data"].get("eval_facts_sha256") == file_hash(facts_path) and "recall" in stored:
        report["stored_recall"] = stored["recall"]
        if now["recall"] < stored["recall"]:
            report["drift"] = f"recall {now['recall']:.0%} is below the stored {stored['recall']:.0%}"
    report["retention"] = kept = retention(report["base"], now)
    if not kept["ok"]:
        report["drift"] = (report["drift"] + "; " if report["drift"] else "") + kept["why"]
    manifest.setdefault("checks", []).append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "facts_sha256": file_hash(facts_path), **now, "drift": report["drift"]})
    write_json_atomic(path / MANIFEST, manifest)
    return report
