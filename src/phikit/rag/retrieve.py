"""Hybrid retrieval: BM25 (bm25s) and dense (FAISS inner product on normalized vectors) fused by
reciprocal rank fusion.

RRF (Cormack, Clarke & Buettcher, SIGIR 2009): ``score(d) = sum over rankers of 1 / (k + rank(d))`` with
``k = 60``; it needs no score calibration between the two rankers, which is why Elasticsearch, OpenSearch
and Weaviate use it for hybrid search.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..errors import BadRequestError
from .chunk import Chunk
from .store import KnowledgeBase, open_kb

RRF_K = 60
MODES = ("hybrid", "dense", "bm25")


@dataclass
class Hit:
    """A retrieved chunk.

    Attributes:
        score: the fused RRF score (hybrid), or the cosine (dense) / BM25 score (bm25) in single modes.
        dense: cosine similarity to the query in [-1, 1] (always computed; abstention thresholds use it).
        bm25: BM25 score, 0 when the chunk shares no term with the query.
        rank: 1-based position in the result list.
    """

    chunk: Chunk
    score: float
    dense: float
    bm25: float
    rank: int = 0

    def to_dict(self) -> dict:
        c = self.chunk
        return {"id": c.id, "rank": self.rank, "score": round(self.score, 5), "dense": round(self.dense, 4),
                "bm25": round(self.bm25, 3), "source": c.source, "heading": c.heading(), "page": c.page,
                "span": [c.start, c.end]}


def search(kb, query: str, *, k: int = 5, mode: str = "hybrid", pool: int = 50) -> list[Hit]:
    """Top ``k`` chunks for ``query``.

    Args:
        kb: a :class:`KnowledgeBase` or its directory.
        query: free text.
        k: results to return.
        mode: ``hybrid`` (RRF of both) | ``dense`` | ``bm25``.
        pool: candidates taken from each ranker before fusion.

    Returns:
        Hits, best first (empty for an empty KB).

    Raises:
        BadRequestError: empty query, ``k < 1`` or an unknown mode.
    """
    if not query or not query.strip():
        raise BadRequestError("the search query is empty")
    if k < 1:
        raise BadRequestError("top-k must be >= 1")
    if mode not in MODES:
        raise BadRequestError(f"unknown retrieval mode {mode!r}; use {', '.join(MODES)}")
    kb = open_kb(kb)
    n = len(kb.chunks)
    if n == 0:
        return []
    pool = min(max(pool, k), n)
    qvec = kb.query_embedder().embed([query])  # [1, dim]
    dense_scores, dense_ids = _one_thread_search(kb.index, qvec, pool)  # [1, pool] each
    dense_rank = [int(i) for i in dense_ids[0] if i >= 0]
    bm25_rank, bm25_score = _bm25(kb, query, pool)
    # cosine for every candidate, so each hit carries one comparable relevance figure
    cands = list(dict.fromkeys(dense_rank + bm25_rank))
    cos = dict(zip(cands, _cosines(kb, qvec[0], cands)))
    if mode == "dense":
        order = [(i, cos[i]) for i in dense_rank]
    elif mode == "bm25":
        order = [(i, bm25_score[i]) for i in bm25_rank]
    else:
        fused: dict[int, float] = {}
        for ranking in (dense_rank, bm25_rank):
            for r, i in enumerate(ranking, start=1):
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + r)
        order = sorted(fused.items(), key=lambda t: (-t[1], -cos[t[0]]))
    return [Hit(kb.chunks[i], float(s), float(cos[i]), float(bm25_score.get(i, 0.0)), rank=r)
            for r, (i, s) in enumerate(order[:k], start=1)]


_OMP_LOCK = threading.Lock()  # faiss's OpenMP thread count is process-wide: one save/set/restore at a time


def _one_thread_search(index, qvec: np.ndarray, pool: int):
    """One query on one OpenMP thread: on a busy 2-core box, faiss's thread team spin-waits and one query
    takes ~10x longer than on a single thread (bench/rag_bench.py)."""
    import faiss

    with _OMP_LOCK:
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return index.search(qvec, pool)
        finally:
            faiss.omp_set_num_threads(before)


def _bm25(kb: KnowledgeBase, query: str, pool: int) -> tuple[list[int], dict[int, float]]:
    index = kb.bm25
    ids = index.term_ids(query) if index is not None else []
    if not ids:
        return [], {}
    scores = index.scores(ids)  # [num_docs]
    top = np.argsort(-scores, kind="stable")[:pool]
    ranked = [(int(i), float(scores[i])) for i in top if scores[i] > 0]
    return [i for i, _ in ranked], dict(ranked)


def _cosines(kb: KnowledgeBase, q: np.ndarray, ids: list[int]) -> list[float]:
    vecs = np.stack([kb.index.reconstruct(int(i)) for i in ids]) if ids else np.zeros((0, q.shape[0]))
    return (vecs @ q).tolist()
