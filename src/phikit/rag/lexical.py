"""The lexical side of retrieval: plural folding, bm25s tokenization and a dependency-light BM25 scorer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np


def s_stem(word: str) -> str:
    """The "S" stemmer (Harman 1991, JASIS 42(1)): fold simple English plurals so BM25 matches
    "refunds" with "refund"."""
    if len(word) > 3 and word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def bm25_tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=lambda words: [s_stem(w) for w in words], show_progress=False)


class BM25Scores:
    """Query side of a bm25s index, read from the files ``bm25s.BM25.save`` writes, without importing
    bm25s (which imports scipy: over a second of a 2-core machine's start-up, for one query).

    bm25s stores each term's precomputed BM25 score per document as a CSC matrix (``data``, ``indices``,
    ``indptr``) and the vocabulary as ``{term: column}``; a query's scores are the sums of its terms'
    columns, as ``bm25s.BM25.get_scores_from_ids`` computes them (the "lucene" method has no
    non-occurrence term).
    """

    _SPLIT = re.compile(r"(?u)\b\w\w+\b")  # bm25s.tokenize's default token pattern

    def __init__(self, folder: Path):
        self.data = np.load(folder / "data.csc.index.npy", mmap_mode="r")
        self.indices = np.load(folder / "indices.csc.index.npy", mmap_mode="r")
        self.indptr = np.load(folder / "indptr.csc.index.npy", mmap_mode="r")
        self.vocab: dict[str, int] = json.loads((folder / "vocab.index.json").read_text())
        self.num_docs = int(json.loads((folder / "params.index.json").read_text())["num_docs"])

    def term_ids(self, query: str) -> list[int]:
        """Columns of the query's terms, lower-cased and plural-folded as indexed (repeats kept, as bm25s
        keeps them). Terms the corpus never had drop out, and so do stop words: indexing removed them
        before folding, so none is in the vocabulary."""
        terms = [s_stem(w) for w in self._SPLIT.findall(query.lower())]
        return [self.vocab[t] for t in terms if t in self.vocab]

    def scores(self, term_ids: list[int]) -> np.ndarray:
        """``[num_docs]`` float32 BM25 scores."""
        out = np.zeros(self.num_docs, dtype=np.float32)
        for t in term_ids:
            start, end = int(self.indptr[t]), int(self.indptr[t + 1])
            np.add.at(out, self.indices[start:end], self.data[start:end])
        return out
