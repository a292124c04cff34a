"""Process-wide thread counts survive concurrent callers; a knowledge-base version is an id, never a path."""

from __future__ import annotations

import threading
import time

import pytest


def test_concurrent_embed_thread_overrides_restore_the_original_count():
    torch = pytest.importorskip("torch")
    from phikit.rag.embed import _threads

    before = torch.get_num_threads()
    target = 1 if before > 1 else 2

    def work():
        with _threads(target):
            time.sleep(0.01)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.get_num_threads() == before


def test_concurrent_faiss_searches_restore_the_omp_count():
    faiss = pytest.importorskip("faiss")
    import numpy as np

    from phikit.rag.retrieve import _one_thread_search

    before = faiss.omp_get_max_threads()
    index = faiss.IndexFlatIP(8)
    index.add(np.random.default_rng(0).random((64, 8), dtype=np.float32))
    q = np.ones((1, 8), dtype=np.float32)
    threads = [threading.Thread(target=_one_thread_search, args=(index, q, 5)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert faiss.omp_get_max_threads() == before


@pytest.mark.parametrize("version", ["../../etc", "/etc/passwd", "v000001/../../x", "v1", ""])
def test_a_version_that_is_not_an_id_is_refused(tmp_path, version):
    from phikit.errors import BadRequestError
    from phikit.rag.store import KnowledgeBase

    with pytest.raises(BadRequestError, match="not a knowledge-base version id"):
        KnowledgeBase(tmp_path, version=version or "..")
