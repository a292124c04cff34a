"""Parity between two runtimes of one model: does the exported artifact answer as the development one does?

``phikit parity --reference transformers:smollm2-135m --candidate onnx:out/smollm2-onnx`` runs a fixed prompt
set (``data/parity_prompts.jsonl``: plain chat, chain-of-thought, tool-call and RAG prompts) through both and
measures, per prompt and overall:

- greedy agreement: are the first ``tokens`` greedy tokens identical, and where do they first differ;
- teacher-forced top-1 agreement: with both fed the reference's greedy tokens, how often their most
  likely next token is the same (divergence early in a reply no longer hides the rest);
- KL(reference || candidate) of the next-token distributions on that path, mean and max (llama.cpp's
  ``perplexity --kl-divergence`` measures the same for its quantizations);
- whether the parsed tool calls (tool prompts) and the citation markers (RAG prompts) are the same.

Each figure is held to the thresholds of the candidate's precision tier (:data:`TIERS`, justified in
docs/export.md), and the run fails when one is missed. Reports: :func:`~phikit.parity.report.markdown` and
the JSON of :class:`ParityReport`.
"""

from __future__ import annotations

from .suite import TIERS, ParityReport, load_prompts, run_parity, tier_of

__all__ = ["TIERS", "ParityReport", "load_prompts", "run_parity", "tier_of"]
