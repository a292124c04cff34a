"""Versions of a knowledge base directory: one writer at a time, leftovers of crashed writers cleared, old
versions pruned, rollback by id. A mixin of :class:`phikit.rag.store.KnowledgeBase` (``self.root``,
``self.version`` and ``self._load`` come from there)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from datetime import UTC, datetime

from ..cache import atomic_write
from ..errors import BadRequestError, PhikitError

KEEP_VERSIONS = 10


class Versions:
    """Version bookkeeping of a KB directory (see the layout in :mod:`phikit.rag.store`)."""

    # ---- writing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self):
        """Hold an exclusive lock on the KB for one writer; clear leftovers of crashed writers."""
        (self.root / "versions").mkdir(parents=True, exist_ok=True)
        (self.root / "docs").mkdir(exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PhikitError(f"{self.root} is being changed by another process; try again when it ends") from None
            self._clear_leftovers()
            if (self.root / "CURRENT").exists():
                self._load((self.root / "CURRENT").read_text().strip())
            try:
                yield
            except BaseException:  # Ctrl-C or an error mid-write: leave no half-written version or blob
                self._clear_leftovers()
                self._drop_unused_blobs({v["version"] for v in self.versions()})
                raise

    def _clear_leftovers(self) -> None:
        for stale in (self.root / "versions").glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in (self.root / "docs").glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def _next_version(self) -> str:
        numbers = [int(p.name[1:7]) for p in (self.root / "versions").glob("v[0-9]*") if p.name[1:7].isdigit()]
        n = max(numbers, default=-1) + 1
        return f"v{n:06d}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"

    def _prune(self, keep: int = KEEP_VERSIONS) -> None:
        """Keep the newest ``keep`` versions (and the live one); drop document blobs no kept version uses."""
        versions = self.versions()
        kept = {v["version"] for v in versions[-keep:]} | {self.version}
        for v in versions:
            if v["version"] not in kept:
                shutil.rmtree(self.root / "versions" / v["version"], ignore_errors=True)
        self._drop_unused_blobs(kept)

    def _drop_unused_blobs(self, kept: set[str]) -> None:
        """Delete document blobs that none of the ``kept`` versions uses."""
        used = set()
        for v in kept:
            with contextlib.suppress(OSError, json.JSONDecodeError):
                m = json.loads((self.root / "versions" / v / "manifest.json").read_text())
                used |= {d["sha256"] for d in m["documents"]}
        for blob in (self.root / "docs").glob("*.jsonl"):
            if blob.stem not in used:
                blob.unlink(missing_ok=True)
                (self.root / "docs" / f"{blob.stem}.npy").unlink(missing_ok=True)

    def versions(self) -> list[dict]:
        """Every complete version, oldest first: ``{version, created, chunks, documents, change, live}``."""
        out = []
        for vdir in sorted((self.root / "versions").glob("v[0-9]*")):
            try:
                m = json.loads((vdir / "manifest.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            out.append({"version": m["version"], "created": m["created"], "chunks": m["chunks"],
                        "documents": len(m["documents"]), "change": m.get("change", ""),
                        "live": m["version"] == self.version})
        return out

    def rollback(self, version: str) -> str:
        """Make ``version`` (an id or a unique prefix such as ``v000003``) live again.

        Raises:
            BadRequestError: no such version, or the prefix is ambiguous.
        """
        with self._writing():
            ids = [v["version"] for v in self.versions()]
            match = [v for v in ids if v == version or v.startswith(version)]
            if len(match) != 1:
                raise BadRequestError(f"no single version matches {version!r}; see phikit kb versions ({', '.join(ids[-5:])})")
            self._load(match[0])
            atomic_write(self.root / "CURRENT", match[0] + "\n")
        return match[0]
