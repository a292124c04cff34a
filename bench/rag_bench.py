"""RAG benchmark: ingest throughput, retrieval latency and memory at 10k/100k chunks (exact vs HNSW), and
end-to-end grounded-answer latency with the embedded model. Writes docs/bench-rag.json and a plot.

    .venv/bin/python bench/rag_bench.py                 # everything (~15 min on 2 busy cores)
    .venv/bin/python bench/rag_bench.py --sizes 10000   # smaller run

Scale figures use synthetic chunks: texts drawn from a Zipf vocabulary (for BM25) and vectors made by
perturbing real all-MiniLM-L6-v2 embeddings of the support-bot corpus (so the index sees clustered, not
uniform, data). Queries are real embedded questions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "support-bot" / "corpus"
QA = ROOT / "examples" / "support-bot" / "qa.jsonl"
sys.path.insert(0, str(ROOT / "src"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_ingest(tmp: Path, copies: int) -> dict:
    """``kb add`` of the corpus copied ``copies`` times (distinct content per copy, so nothing dedups)."""
    from phikit.rag.embed import load_embedder
    from phikit.rag.store import KnowledgeBase

    load_embedder()  # load time is reported separately
    docs = tmp / "ingest-docs"
    for i in range(copies):
        for f in CORPUS.rglob("*"):
            if f.is_file() and f.suffix in (".md", ".txt", ".html"):
                dst = docs / f"copy{i}" / f.relative_to(CORPUS)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(f.read_text() + f"\n\nRevision {i}.\n")
            elif f.is_file():
                dst = docs / f"copy{i}" / f.relative_to(CORPUS)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, dst) if i == 0 else None
    base = KnowledgeBase.create(tmp / "ingest-kb")
    t0 = time.perf_counter()
    report = base.add([docs], progress=False)
    secs = time.perf_counter() - t0
    t1 = time.perf_counter()
    again = base.add([docs], progress=False)
    noop = time.perf_counter() - t1
    return {"documents": len(report.added), "chunks": report.chunks, "seconds": round(secs, 2),
            "chunks_per_s": round(report.chunks / secs, 1), "readd_unchanged_seconds": round(noop, 2),
            "readd_changed": again.changed}


def synthetic_kb(tmp: Path, n: int, index: str, seed_vecs: np.ndarray, seed: int = 0) -> object:
    """A KB of ``n`` synthetic chunks in one document blob, built through the normal commit path."""
    from phikit.rag.chunk import Chunk
    from phikit.rag.store import KnowledgeBase, _npy_bytes, atomic_write

    rng = np.random.default_rng(seed)  # same chunks and vectors for both index types
    root = tmp / f"kb-{n}-{index}"
    base = KnowledgeBase.create(root, index=index)
    vocab = [f"w{i}" for i in range(20000)]
    zipf = rng.zipf(1.2, size=(n, 40)) % len(vocab)
    sha = f"{n:064x}"
    lines = []
    for i in range(n):
        text = " ".join(vocab[j] for j in zipf[i])
        lines.append(json.dumps(Chunk(id=f"{sha[:12]}:{i}", text=text, source="synthetic.txt", start=0, end=len(text),
                                      tokens=40, doc_sha256=sha).to_dict()))
    noise = rng.standard_normal((n, seed_vecs.shape[1])).astype(np.float32) * 0.04
    vecs = seed_vecs[rng.integers(0, len(seed_vecs), n)] + noise
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    atomic_write(root / "docs" / f"{sha}.jsonl", "\n".join(lines) + "\n")
    atomic_write(root / "docs" / f"{sha}.npy", _npy_bytes(vecs))
    doc = {"path": "synthetic.txt", "sha256": sha, "format": "text", "chunks": n, "bytes": 0, "added": ""}
    t0 = time.perf_counter()
    with base._writing():
        base._rewrite([doc], f"synthetic {n}")
    build = time.perf_counter() - t0
    return base, build, vecs


def bench_scale(tmp: Path, sizes: list[int], queries: list[str]) -> list[dict]:
    from phikit.rag.embed import load_embedder
    from phikit.rag.retrieve import search
    from phikit.rag.store import KnowledgeBase, open_kb

    emb = load_embedder()
    seed_kb = open_kb(tmp / "ingest-kb")
    seed_vecs = np.stack([seed_kb.index.reconstruct(i) for i in range(min(seed_kb.index.ntotal, 2000))])
    qvecs = emb.embed(queries)
    rows = []
    for n in sizes:
        exact_ids = None
        for index in ("flat", "hnsw"):
            base, build, _ = synthetic_kb(tmp, n, index, seed_vecs)
            before = rss_mb()
            fresh = KnowledgeBase.open(base.root)
            t0 = time.perf_counter()
            search(fresh, queries[0], k=5)  # loads index + bm25
            load_s = time.perf_counter() - t0
            mem = rss_mb() - before
            lat, dense = [], []
            for q in queries * 3:
                t = time.perf_counter()
                search(fresh, q, k=5)
                lat.append((time.perf_counter() - t) * 1000)
            from phikit.rag.retrieve import _one_thread_search

            for qv in qvecs:  # dense search alone (no query embedding, no BM25), as search() runs it
                t = time.perf_counter()
                _one_thread_search(fresh.index, qv[None], 50)
                dense.append((time.perf_counter() - t) * 1000)
            _, ids = fresh.index.search(qvecs, 10)
            if index == "flat":
                exact_ids = ids
                recall = 1.0
            else:
                recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)]))
            vdir = fresh.version_dir
            rows.append({
                "chunks": n, "index": fresh.manifest["index"]["built"], "build_s": round(build, 1),
                "load_s": round(load_s, 2), "search_p50_ms": round(statistics.median(lat), 1),
                "search_p95_ms": round(pct(lat, 95), 1), "dense_p50_ms": round(statistics.median(dense), 2),
                "dense_p95_ms": round(pct(dense, 95), 2), "recall_at_10_vs_exact": round(recall, 3),
                "index_mb": round((vdir / "index.faiss").stat().st_size / 2**20, 1),
                "bm25_mb": round(sum(f.stat().st_size for f in (vdir / "bm25").rglob("*")) / 2**20, 1),
                "rss_delta_mb": round(mem, 1),
            })
            print(rows[-1], flush=True)
            del fresh, base
            shutil.rmtree(tmp / f"kb-{n}-{index}", ignore_errors=True)
    return rows


def bench_answer(tmp: Path, n_questions: int) -> dict:
    import phikit
    from phikit.rag.eval import load_qa
    from phikit.rag.store import KnowledgeBase

    base = KnowledgeBase.create(tmp / "corpus-kb")
    base.add([CORPUS], progress=False)
    llm = phikit.load()
    items = [q for q in load_qa(QA) if q["answerable"]][:n_questions]
    lat, ttft, toks = [], [], []
    for q in items:
        t0 = time.perf_counter()
        first = None
        for ev in llm.chat(q["question"], kb=base, stream=True, temperature=0, max_new_tokens=64, provenance=False):
            if first is None and type(ev).__name__ == "TextDelta":
                first = time.perf_counter()
            if type(ev).__name__ == "Done":
                toks.append(ev.usage.prompt_tokens)
        lat.append(time.perf_counter() - t0)
        ttft.append((first or time.perf_counter()) - t0)
    return {"questions": len(items), "model": llm.model, "backend": llm.backend, "max_new_tokens": 64,
            "p50_s": round(statistics.median(lat), 2), "p95_s": round(pct(lat, 95), 2),
            "first_text_p50_s": round(statistics.median(ttft), 2), "mean_prompt_tokens": round(statistics.mean(toks))}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for index, style in (("flat-ip", "o-"), ("hnsw", "s--")):
        pts = [(r["chunks"], r["dense_p50_ms"]) for r in rows if r["index"] == index]
        if pts:
            ax.plot(*zip(*pts), style, label=f"{index} (dense search p50)")
    ax.set_xscale("log")
    ax.set_xlabel("chunks in the KB (dim 384)")
    ax.set_ylabel("ms per query")
    ax.set_title("Dense search latency, 2-core CPU")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--copies", type=int, default=4, help="corpus copies for the ingest figure")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench-rag.json"))
    args = ap.parse_args()
    import bm25s
    import faiss
    import sentence_transformers
    import torch

    env = {"cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
           "torch_threads": torch.get_num_threads(), "sentence_transformers": sentence_transformers.__version__,
           "faiss": faiss.__version__, "bm25s": bm25s.__version__, "load_avg_at_start": os.getloadavg()[0]}
    queries = [json.loads(x)["question"] for x in QA.read_text().splitlines() if x.strip()][:30]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        from phikit.rag.embed import load_embedder

        load_embedder()
        env["embedder_load_s"] = round(time.perf_counter() - t0, 1)
        ingest = bench_ingest(tmp, args.copies)
        print("ingest", ingest, flush=True)
        scale = bench_scale(tmp, [int(s) for s in args.sizes.split(",")], queries)
        answer = bench_answer(tmp, args.questions)
        print("answer", answer, flush=True)
    out = {"env": env, "ingest": ingest, "scale": scale, "answer": answer}
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot(scale, Path(args.out).with_suffix(".png"))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
