"""phikit's cache directory and content hashes of the files it derives from.

Light on purpose (no torch, no numpy): :mod:`phikit.models` uses it while resolving a name, which must stay
fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """``$PHIKIT_CACHE``, else the platform's user cache directory for phikit."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("PHIKIT_CACHE") or user_cache_dir("phikit"))


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_sha256(path: Path) -> str:
    """:func:`file_sha256`, remembered in ``<cache>/hashes.json`` by resolved path, size and mtime.

    Hashing the 100 MB embedded model takes a few hundred milliseconds; a lookup takes none, so a name can
    be resolved to its sha256-keyed cache entry on every start.
    """
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    store = cache_root() / "hashes.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = file_sha256(path)
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=store.parent, prefix=".hashes.")
            with os.fdopen(fd, "w") as f:
                json.dump(known, f, indent=2)
            os.replace(tmp, store)
        except OSError:  # a read-only cache only costs the hash next time
            pass
    return known[key]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` via a temp file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
