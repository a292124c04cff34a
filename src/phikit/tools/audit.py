"""A signed, append-only audit log of executed tool calls (JSON Lines, HMAC-SHA256 chained).

Each line is one JSON object ``{"seq", "ts", ..., "prev", "mac"}``: ``mac`` is HMAC-SHA256 (RFC 2104) over
the canonical JSON of the entry without ``mac`` — which includes ``prev``, the previous line's MAC — so
editing, deleting, inserting or reordering a line breaks the chain at that line (the hash-chain idea of
Schneier & Kelsey, "Secure Audit Logs to Support Computer Forensics", 1999). Appends take an exclusive
``flock`` and are fsynced.

Limit: removing lines from the *end* leaves a valid shorter chain; compare the entry count with what you
expect (``verify`` reports it), or ship the log elsewhere as it grows.

The key comes from ``$PHIKIT_AUDIT_KEY``, else a 32-byte key file created once with mode 0600
(``$PHIKIT_AUDIT_KEY_FILE``, default ``audit.key`` in phikit's config directory).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PhikitError

GENESIS = "0" * 64


def default_log_path() -> Path:
    """``$PHIKIT_AUDIT_LOG``, else ``audit.jsonl`` in phikit's user data directory."""
    from platformdirs import user_data_dir

    return Path(os.environ.get("PHIKIT_AUDIT_LOG") or Path(user_data_dir("phikit")) / "audit.jsonl")


def load_key(key: bytes | str | None = None) -> bytes:
    """The HMAC key: ``key`` if given, else ``$PHIKIT_AUDIT_KEY``, else the key file (created 0600 once).

    Raises:
        PhikitError: the key file exists but is empty or readable by others.
    """
    if key is None:
        key = os.environ.get("PHIKIT_AUDIT_KEY") or None
    if key is not None:
        return key.encode() if isinstance(key, str) else key
    from platformdirs import user_config_dir

    path = Path(os.environ.get("PHIKIT_AUDIT_KEY_FILE") or Path(user_config_dir("phikit")) / "audit.key")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # atomic create, owner-only
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
    except FileExistsError:
        pass
    if path.stat().st_mode & 0o077:
        raise PhikitError(f"audit key file {path} is readable by others; run: chmod 600 {path}")
    data = path.read_text().strip()
    if not data:
        raise PhikitError(f"audit key file {path} is empty; delete it to create a new key")
    return data.encode()


def _mac(key: bytes, entry: dict) -> str:
    body = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()


class AuditLog:
    """Append signed entries to a JSONL file.

    Args:
        path: the log file (created with its directory if missing).
        key: HMAC key (see :func:`load_key`).
    """

    def __init__(self, path: str | Path | None = None, key: bytes | str | None = None):
        self.path = Path(path) if path else default_log_path()
        self.key = load_key(key)

    def append(self, record: dict[str, Any]) -> dict:
        """Sign ``record`` (any JSON-serializable fields) onto the end of the chain; fsync before returning.

        Returns:
            The entry as written (with ``seq``, ``ts``, ``prev`` and ``mac``).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                seq, prev = 0, GENESIS
                for line in f:
                    if line.strip():
                        last = json.loads(line)
                        seq, prev = last["seq"] + 1, last["mac"]
                entry = {**record, "seq": seq, "ts": round(time.time(), 3), "prev": prev}
                entry["mac"] = _mac(self.key, entry)
                f.seek(0, os.SEEK_END)
                f.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return entry


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`verify`: ``ok``, the entry count, and for a bad log the first bad line (1-based)."""

    ok: bool
    entries: int
    line: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.entries} entries, chain and MACs verified"
        return f"line {self.line}: {self.reason}"


def verify(path: str | Path, key: bytes | str | None = None) -> Verdict:
    """Check every MAC and link of the chain; name the first line that was edited, deleted, inserted or
    moved.

    Raises:
        PhikitError: the log file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise PhikitError(f"no audit log at {path}")
    k = load_key(key)
    lines = path.read_text(encoding="utf-8").splitlines()
    entries = []
    for i, line in enumerate(lines, 1):
        try:
            e = json.loads(line)
            assert isinstance(e, dict) and isinstance(e.get("seq"), int) and "mac" in e and "prev" in e
        except (json.JSONDecodeError, AssertionError):
            return Verdict(False, i - 1, i, "not a valid audit entry (edited or corrupted)")
        entries.append(e)
    seqs = [e["seq"] for e in entries]
    prev = GENESIS
    for i, e in enumerate(entries):
        line = i + 1
        if not hmac.compare_digest(_mac(k, e), str(e["mac"])):
            return Verdict(False, i, line, "MAC mismatch: the entry was edited (or signed with another key)")
        if e["seq"] != i or e["prev"] != prev:
            if e["seq"] < i or seqs.count(e["seq"]) > 1:
                why = f"entry seq {e['seq']} appears again or out of order: a line was inserted or moved here"
            elif i in seqs[i + 1 :]:
                why = f"entry seq {e['seq']} comes before seq {i}: lines were reordered"
            else:
                why = f"entry seq {e['seq']} follows seq {i - 1}: the line(s) before it were deleted"
            return Verdict(False, i, line, why)
        prev = e["mac"]
    return Verdict(True, len(entries))
