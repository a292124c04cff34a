"""Retrieval-augmented generation: a persistent, versioned knowledge base with hybrid retrieval, grounded
answers with checked citations, abstention, provenance and a prompt-injection guard.

Modules, one capability each: ``loaders`` (files -> text blocks), ``chunk`` (token-aware chunks),
``embed`` (sentence-transformers), ``store`` (FAISS index, manifest, versions), ``retrieve`` (BM25 + dense,
reciprocal rank fusion), ``grounded`` (prompt, citations, abstention, provenance), ``guard`` (tool-call
injection guard), ``eval`` (retrieval and answer metrics).
"""

from __future__ import annotations

DEFAULT_ABSTAIN_TEXT = "I can't find that in the knowledge base."

__all__ = ["DEFAULT_ABSTAIN_TEXT"]
