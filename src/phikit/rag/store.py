"""The knowledge base on disk: content-addressed chunks, a FAISS index and BM25 per version, a manifest,
and an atomic switch between versions.

Layout of a KB directory::

    CURRENT                      the live version id (replaced atomically)
    versions/<id>/manifest.json  version id, parent, created time, embedding model + dim, chunker settings,
                                 index type, documents (path, sha256, chunks)
    versions/<id>/index.faiss    dense vectors of every chunk, in manifest document order
    versions/<id>/bm25/          bm25s sparse index over the same chunks
    docs/<sha256>.jsonl|.npy     chunks and embeddings of one document (immutable, shared by versions)
    provenance.jsonl             one line per grounded answer (append-only)

A change never touches the live version: it writes ``versions/.tmp-*``, fsyncs it, renames it to
``versions/<id>`` and only then replaces ``CURRENT``. A crash (even ``kill -9``) at any point leaves
``CURRENT`` naming a complete version; leftovers are removed by the next writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..cache import _fsync_dir, atomic_write  # noqa: F401 - re-exported for older callers
from ..errors import BadRequestError, PhikitError
from .chunk import Chunk, ChunkSettings, chunk_document
from .lexical import BM25Scores, bm25_tokenize, s_stem  # noqa: F401 - s_stem re-exported
from .loaders import UnreadableError, load_document
from .paths import expand_paths, require_paths  # noqa: F401 - require_paths re-exported
from .versions import Versions

VERSION_RE = re.compile(r"v\d{6}(-\d{8}T\d{6})?")  # what _next_version writes

FORMAT = "phikit-kb/1"
# Below this many chunks the index is exact (IndexFlatIP); from here on, HNSW. Measured in bench/rag_bench.py
# on 2 CPU cores (docs/bench-rag.md): exact search of 100k chunks (dim 384) takes ~5 ms on one thread, under the
# ~15 ms of embedding the query, and grows linearly; HNSW costs 4x the build time and ~18% more memory for
# ~0.3 ms queries at recall@10 0.99, which pays off only once exact search passes ~10 ms.
APPROX_MIN_CHUNKS = 200_000
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class DocEntry:
    path: str
    sha256: str
    format: str
    chunks: int
    bytes: int
    added: str


@dataclass
class AddReport:
    """What ``add`` did. ``skipped`` holds ``(path, reason)`` for files that could not be read."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    version: str | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


class KnowledgeBase(Versions):
    """A loaded version of a KB directory (read side) plus the operations that write new versions.

    Attributes:
        root: the KB directory.
        manifest: the live version's manifest (dict).
        chunks: every chunk in index order.
    """

    def __init__(self, root: str | Path, *, version: str | None = None):
        self.root = Path(root).expanduser().resolve()
        self._index = None
        self._bm25 = None
        self.version_dir: Path | None = None
        self.manifest: dict = {}
        self.chunks: list[Chunk] = []
        if (self.root / "CURRENT").exists() or version:
            self._load(version or (self.root / "CURRENT").read_text().strip())

    # ---- creating and opening -------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, *, embedding_model: str | None = None, settings: ChunkSettings | None = None,
               index: str = "auto") -> KnowledgeBase:
        """Open ``root``, creating an empty KB (version ``v000000``) if it has none.

        Args:
            root: directory (created if missing).
            embedding_model: sentence-transformers name or folder; default all-MiniLM-L6-v2.
            settings: chunk size/overlap; default 256/32 tokens.
            index: ``auto`` (exact below :data:`APPROX_MIN_CHUNKS` chunks, HNSW above) | ``flat`` | ``hnsw``.

        Raises:
            BadRequestError: options that conflict with an existing KB, or an unknown index type.
        """
        if index not in ("auto", "flat", "hnsw"):
            raise BadRequestError(f"unknown index type {index!r}; use auto, flat or hnsw")
        kb = cls(root)
        if kb.manifest:
            if embedding_model and kb.manifest["embedding"]["model"] != _model_name(embedding_model):
                raise BadRequestError(
                    f"{kb.root} was built with {kb.manifest['embedding']['model']}; "
                    f"use a new --kb folder to change the embedding model")
            if settings and ChunkSettings(**kb.manifest["chunker"]["settings"]) != settings:
                raise BadRequestError(f"{kb.root} uses chunks of {kb.manifest['chunker']['settings']}; "
                                      "use a new --kb folder to change chunking")
            return kb
        from .embed import load_embedder

        if (kb.root.exists() and any(kb.root.iterdir()) and not (kb.root / "versions").exists()):
            raise BadRequestError(f"{kb.root} is not empty and is not a knowledge base; pick a new folder")
        emb = load_embedder(embedding_model)
        settings = settings or ChunkSettings()
        manifest = {
            "format": FORMAT,
            "embedding": {"model": emb.name, "dim": emb.dim},
            "chunker": {"tokenizer": emb.name, "settings": asdict(settings)},
            "index": {"type": index},
            "documents": [],
            "chunks": 0,
        }
        with kb._writing():
            kb._commit(manifest, [], np.zeros((0, emb.dim), np.float32), change="create")
        return kb

    @classmethod
    def open(cls, root: str | Path) -> KnowledgeBase:
        """Open an existing KB.

        Raises:
            PhikitError: ``root`` is not a knowledge base.
        """
        kb = cls(root)
        if not kb.manifest:
            raise PhikitError(f"{kb.root} is not a knowledge base; create one with: phikit kb add FILES --kb {root}")
        return kb

    def _load(self, version: str) -> None:
        if not isinstance(version, str) or not VERSION_RE.fullmatch(version):  # never a path: v000003-2026...
            raise BadRequestError(f"{version!r} is not a knowledge-base version id (like v000003-20261130T120000)")
        vdir = self.root / "versions" / version
        try:
            manifest = json.loads((vdir / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PhikitError(f"{self.root}: version {version} is missing or damaged ({exc}); "
                              "see phikit kb versions and phikit kb rollback") from exc
        chunks = []
        for doc in manifest["documents"]:
            with open(self.root / "docs" / f"{doc['sha256']}.jsonl") as f:
                chunks.extend(Chunk.from_dict(json.loads(line)) for line in f)
        self.manifest, self.chunks, self.version_dir = manifest, chunks, vdir
        self._index = self._bm25 = None

    @property
    def version(self) -> str:
        return self.manifest.get("version", "")

    @property
    def index(self):
        """The FAISS index (loaded lazily)."""
        if self._index is None:
            import faiss

            self._index = faiss.read_index(str(self.version_dir / "index.faiss"))
            if self.manifest["index"].get("built") == "hnsw":
                self._index.hnsw.efSearch = self.manifest["index"].get("ef_search", HNSW_EF_SEARCH)
        return self._index

    @property
    def bm25(self) -> BM25Scores | None:
        """The BM25 index (loaded lazily, memory-mapped), or None for an empty KB."""
        if self._bm25 is None and self.chunks:
            self._bm25 = BM25Scores(self.version_dir / "bm25")
        return self._bm25

    def embedder(self):
        """The sentence-transformers embedder of this KB (torch), for documents."""
        from .embed import load_embedder

        return load_embedder(self.manifest["embedding"]["model"])

    def query_embedder(self):
        """The embedder for queries: its ONNX export when there is one (no torch import)."""
        from .onnx_embed import load_query_embedder

        return load_query_embedder(self.manifest["embedding"]["model"])

    def _build_index(self, vectors: np.ndarray, kind: str):
        import faiss

        dim = int(self.manifest["embedding"]["dim"]) if self.manifest else vectors.shape[1]
        use_hnsw = kind == "hnsw" or (kind == "auto" and len(vectors) >= APPROX_MIN_CHUNKS)
        if use_hnsw:
            index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            info = {"built": "hnsw", "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
        else:
            index = faiss.IndexFlatIP(dim)
            info = {"built": "flat-ip"}
        if len(vectors):
            index.add(vectors)
        return index, info

    def _commit(self, manifest: dict, chunks: list[Chunk], vectors: np.ndarray, *, change: str) -> str:
        """Write a new version from ``manifest``/``chunks``/``vectors`` and switch ``CURRENT`` to it."""
        import faiss

        vid = self._next_version()
        manifest = {**manifest, "version": vid, "parent": self.version or None, "created": now_iso(),
                    "change": change, "chunks": len(chunks)}
        tmp = self.root / "versions" / f".tmp-{vid}-{os.getpid()}"
        tmp.mkdir(parents=True)
        index, info = self._build_index(vectors, manifest["index"]["type"])
        manifest["index"] = {"type": manifest["index"]["type"], **info}
        faiss.write_index(index, str(tmp / "index.faiss"))
        if chunks:
            import bm25s

            retriever = bm25s.BM25()
            retriever.index(bm25_tokenize([c.text for c in chunks]), show_progress=False)
            retriever.save(str(tmp / "bm25"), show_progress=False)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        final = self.root / "versions" / vid
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        atomic_write(self.root / "CURRENT", vid + "\n")
        self._load(vid)
        self._prune()
        return vid

    def _doc_vectors(self, sha: str) -> np.ndarray:
        return np.load(self.root / "docs" / f"{sha}.npy")

    def add(self, paths: list[str | Path], *, progress: bool = True, batch_size: int = 64) -> AddReport:
        """Add files and folders (recursively). Unchanged files are a no-op; changed files replace their
        chunks; unreadable files are reported in ``skipped`` and the rest goes in.

        Returns:
            :class:`AddReport`; ``version`` is the new version id, or None when nothing changed.

        Raises:
            PhikitError: another process is writing this KB.
        """
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        require_paths(paths)
        files, problems = expand_paths(paths)
        report = AddReport(skipped=list(problems))
        with self._writing():
            by_path = {d["path"]: d for d in self.manifest["documents"]}
            by_sha = {d["sha256"]: d for d in self.manifest["documents"]}
            todo = []
            for f in files:
                try:
                    sha = sha256_file(f)
                except OSError as exc:
                    report.skipped.append((str(f), f"cannot read: {exc.strerror or exc}"))
                    continue
                old = by_path.get(str(f))
                if old and old["sha256"] == sha:
                    report.unchanged.append(str(f))
                elif not old and sha in by_sha:
                    report.skipped.append((str(f), f"same content as {by_sha[sha]['path']}"))
                else:
                    todo.append((f, sha, old))
            if not todo:
                report.seconds = time.perf_counter() - t0
                return report
            bar = tqdm(total=len(todo), desc="kb add (loading the embedding model)", unit="file",
                       disable=not progress, leave=False)
            emb = self.embedder()
            from .embed import load_tokenizer
            from .onnx_embed import export_onnx

            export_onnx(emb)  # torch is loaded now: make later queries torch-free (once per model)

            tok = load_tokenizer(self.manifest["embedding"]["model"])
            settings = ChunkSettings(**self.manifest["chunker"]["settings"])
            docs = dict(by_path)
            bar.set_description("kb add")
            for f, sha, old in todo:
                bar.set_postfix_str(f.name[-30:])
                try:
                    doc = load_document(f)
                except UnreadableError as exc:
                    report.skipped.append((str(f), str(exc).split(": ", 1)[-1]))
                    bar.update(1)
                    continue
                chunks = chunk_document(doc, tok, settings, doc_sha256=sha)
                if not (self.root / "docs" / f"{sha}.npy").exists():
                    vecs = emb.embed([c.text for c in chunks], batch_size=batch_size)
                    atomic_write(self.root / "docs" / f"{sha}.jsonl",
                                 "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in chunks))
                    buf = _npy_bytes(vecs)
                    atomic_write(self.root / "docs" / f"{sha}.npy", buf)
                docs[str(f)] = asdict(DocEntry(str(f), sha, doc.format, len(chunks), f.stat().st_size, now_iso()))
                (report.replaced if old else report.added).append(str(f))
                report.chunks += len(chunks)
                bar.update(1)
            bar.close()
            if report.changed:
                report.version = self._rewrite(list(docs.values()), _change_note(report))
        report.seconds = time.perf_counter() - t0
        return report

    def remove(self, paths: list[str | Path]) -> AddReport:
        """Drop documents by path (a folder drops every document under it) or by sha256 prefix.

        Raises:
            BadRequestError: nothing in the KB matches.
        """
        report = AddReport()
        with self._writing():
            keep = []
            targets = [str(Path(p).expanduser().resolve()) for p in paths]
            for d in self.manifest["documents"]:
                hit = any(d["path"] == t or d["path"].startswith(t.rstrip("/") + "/") for t in targets) or any(
                    len(str(p)) >= 8 and d["sha256"].startswith(str(p)) for p in paths)
                (report.removed if hit else keep).append(d["path"] if hit else d)
            if not report.removed:
                raise BadRequestError(f"no document in {self.root} matches {', '.join(map(str, paths))}; "
                                      "see phikit kb stats")
            report.version = self._rewrite(keep, f"remove {len(report.removed)} document(s)")
        return report

    def _rewrite(self, docs: list[dict], change: str) -> str:
        chunks: list[Chunk] = []
        vecs = []
        for d in docs:
            with open(self.root / "docs" / f"{d['sha256']}.jsonl") as f:
                chunks.extend(Chunk.from_dict(json.loads(line)) for line in f)
            vecs.append(self._doc_vectors(d["sha256"]))
        dim = int(self.manifest["embedding"]["dim"])
        vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        manifest = {**self.manifest, "documents": docs}
        return self._commit(manifest, chunks, np.ascontiguousarray(vectors, np.float32), change=change)

    def stats(self) -> dict:
        """Summary: version, counts, sizes, embedding model, chunker and index settings."""
        size = sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())
        tokens = [c.tokens for c in self.chunks]
        return {
            "kb": str(self.root), "version": self.version, "created": self.manifest.get("created"),
            "documents": len(self.manifest["documents"]), "chunks": len(self.chunks),
            "mean_chunk_tokens": round(sum(tokens) / len(tokens), 1) if tokens else 0,
            "embedding": self.manifest["embedding"], "chunker": self.manifest["chunker"],
            "index": self.manifest["index"], "versions": len(self.versions()), "disk_bytes": size,
        }


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, np.float32))
    return buf.getvalue()


def _change_note(r: AddReport) -> str:
    parts = [f"{name} {len(v)}" for name, v in (("add", r.added), ("replace", r.replaced)) if v]
    return ", ".join(parts) + " document(s)"


def _model_name(name_or_path: str) -> str:
    from .embed import resolve_model

    return resolve_model(name_or_path)[0]


def open_kb(kb) -> KnowledgeBase:
    """A :class:`KnowledgeBase` from a directory path or an already-loaded one (cached per directory and
    version, so repeated ``LLM.chat(kb=DIR)`` calls do not reload)."""
    if isinstance(kb, KnowledgeBase):
        return kb
    root = Path(kb).expanduser().resolve()
    try:
        current = (root / "CURRENT").read_text().strip()
    except OSError:
        raise PhikitError(f"{root} is not a knowledge base; create one with: phikit kb add FILES --kb {kb}") from None
    cached = _OPEN.get(root)
    if cached is None or cached.version != current:
        cached = _OPEN[root] = KnowledgeBase(root)
    return cached


_OPEN: dict[Path, KnowledgeBase] = {}
