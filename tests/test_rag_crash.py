"""Crash safety: ``kill -9`` while a new KB version is being written leaves the previous version live and
loadable, and the next writer cleans up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "support-bot" / "corpus"

WRITER = textwrap.dedent("""
    import os, sys, time
    import faiss
    from phikit.rag.store import KnowledgeBase

    real = faiss.write_index

    def half_then_hang(index, path):
        real(index, path)
        with open(path, "r+b") as f:  # leave a torn file behind, as a crash mid-write would
            f.truncate(os.path.getsize(path) // 2)
        print("WRITING", flush=True)
        time.sleep(120)

    faiss.write_index = half_then_hang
    KnowledgeBase.create(sys.argv[1]).add([sys.argv[2]], progress=False)
""")


@pytest.fixture()
def kb_v1(tmp_path):
    from phikit.rag.store import KnowledgeBase

    base = KnowledgeBase.create(tmp_path / "kb")
    base.add([CORPUS / "policies" / "warranty.md"], progress=False)
    return base


def test_sigkill_mid_write_leaves_previous_version_loadable(kb_v1, tmp_path):
    from phikit.rag.retrieve import search
    from phikit.rag.store import KnowledgeBase

    v1, n1 = kb_v1.version, len(kb_v1.chunks)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(kb_v1.root), str(CORPUS / "manuals")],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert list((kb_v1.root / "versions").glob(".tmp-*")), "the torn version was left behind"

    again = KnowledgeBase.open(kb_v1.root)
    assert again.version == v1 and len(again.chunks) == n1 and again.index.ntotal == n1
    assert search(again, "warranty period of the thermostat", k=1)[0].chunk.source.endswith("warranty.md")

    report = again.add([CORPUS / "manuals"], progress=False)  # the next writer succeeds and cleans up
    assert report.version != v1 and not list((kb_v1.root / "versions").glob(".tmp-*"))
    assert any(c.source.endswith(".pdf") for c in KnowledgeBase.open(kb_v1.root).chunks)


def test_sigkill_at_the_moment_the_cli_starts_writing(kb_v1, tmp_path):
    """An unpatched ``phikit kb add`` killed as soon as its temp version appears (or, if it already finished,
    at any later point): whatever CURRENT names must load completely."""
    from phikit.rag.store import KnowledgeBase

    v1 = kb_v1.version
    docs = tmp_path / "docs"
    shutil.copytree(CORPUS / "faq", docs)
    phikit = Path(sys.executable).parent / "phikit"
    proc = subprocess.Popen([str(phikit), "kb", "add", str(docs), "--kb", str(kb_v1.root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    versions = kb_v1.root / "versions"
    deadline = time.monotonic() + 120
    caught = False
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.name.startswith(".tmp-") for p in versions.iterdir()):
            proc.send_signal(signal.SIGKILL)
            caught = True
            break
        time.sleep(0.0005)
    proc.wait(timeout=60)
    after = KnowledgeBase.open(kb_v1.root)
    assert after.index.ntotal == len(after.chunks) > 0
    if caught and (kb_v1.root / "CURRENT").read_text().strip() == v1:
        assert after.version == v1
    else:  # the writer finished (or had already switched): the new version is complete
        assert any(c.source.startswith(str(docs)) for c in after.chunks)
