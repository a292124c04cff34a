"""A signed, append-only audit log of tool calls (JSON Lines, HMAC-SHA256 chained, anchored).

Each line is one JSON object ``{..., "seq", "ts", "prev", "mac"}``: ``mac`` is HMAC-SHA256 (RFC 2104) over the
canonical JSON of the entry without ``mac`` — which includes ``prev``, the previous entry's MAC — so editing,
deleting, inserting or reordering a line breaks the chain at that line (the hash-chain idea of Schneier &
Kelsey, "Secure Audit Logs to Support Computer Forensics", 1999).

What a plain chain cannot show, and how this log shows it:

- **Removing entries from the end** leaves a valid shorter chain. After every append the chain head (last
  ``seq`` and ``mac``, itself MAC'd) is written to an *anchor* file beside the log, atomically (temp file +
  ``os.replace``); :func:`verify` fails when the log ends before its anchor. ``--expect-seq N`` checks against
  a number kept elsewhere (a rolled-back anchor file cannot fool that).
- **A crash mid-write** leaves a torn last line. The next append seals it: the torn bytes stay, and a ``torn``
  entry recording their length and SHA-256 joins the chain, so the log stays verifiable and the loss is
  recorded.
- **A crash during a tool run**: callers write an ``intent`` entry before executing and a ``result`` entry
  after (:func:`phikit.tools.execute.run_call`); an intent without a result is reported.

Appends take an exclusive ``flock``, are fsynced, and take constant time: the head is read from the end of the
file (entries are capped at :data:`MAX_ENTRY_BYTES`), never by re-reading the log.

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
MAX_ENTRY_BYTES = 64 * 1024  # a longer record has its long strings cut, so the head can be read from the tail
_FIELD_CHARS = 8_000


def default_log_path() -> Path:
    """``$PHIKIT_AUDIT_LOG``, else ``audit.jsonl`` in phikit's user data directory."""
    from platformdirs import user_data_dir

    return Path(os.environ.get("PHIKIT_AUDIT_LOG") or Path(user_data_dir("phikit")) / "audit.jsonl")


def anchor_path(log: str | Path) -> Path:
    """The anchor file of a log: ``audit.jsonl`` -> ``audit.jsonl.anchor``."""
    return Path(f"{log}.anchor")


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


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def _mac(key: bytes, entry: dict) -> str:
    return hmac.new(key, _canonical({k: v for k, v in entry.items() if k != "mac"}), hashlib.sha256).hexdigest()


def _anchor_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.new(key, f"phikit-audit-anchor|{seq}|{mac}".encode(), hashlib.sha256).hexdigest()


def _cap(value: Any) -> Any:
    """Cut long strings inside a record so one entry stays under :data:`MAX_ENTRY_BYTES`."""
    if isinstance(value, str) and len(value) > _FIELD_CHARS:
        return value[:_FIELD_CHARS] + f"…[{len(value) - _FIELD_CHARS} more characters]"
    if isinstance(value, dict):
        return {str(k): _cap(v) for k, v in list(value.items())[:200]}
    if isinstance(value, (list, tuple)):
        return [_cap(v) for v in list(value)[:200]]
    return value


def _read_tail(fd: int, size: int) -> tuple[bytes, bytes]:
    """The last complete line and whatever follows it (a torn line, or b""), reading only the file's end."""
    window = min(size, 2 * MAX_ENTRY_BYTES + 2)
    data = os.pread(fd, window, size - window)
    cut = data.rfind(b"\n")
    torn = data[cut + 1 :]
    if cut < 0:
        return b"", torn
    start = data.rfind(b"\n", 0, cut) + 1
    return data[start:cut], torn


class AuditLog:
    """Append signed entries to a JSONL file and keep its anchor current.

    Args:
        path: the log file (created with its directory if missing).
        key: HMAC key (see :func:`load_key`).
    """

    def __init__(self, path: str | Path | None = None, key: bytes | str | None = None):
        self.path = Path(path) if path else default_log_path()
        self.anchor = anchor_path(self.path)
        self.key = load_key(key)
        self._head: tuple[int, int, str] | None = None  # (file size, next seq, last mac) after our last append

    def _entry_from(self, line: bytes) -> dict | None:
        """A parsed, correctly MAC'd entry, or None."""
        try:
            e = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if isinstance(e, dict) and isinstance(e.get("seq"), int) and hmac.compare_digest(_mac(self.key, e), str(e.get("mac"))):
            return e
        return None

    def _find_head(self, f) -> tuple[int, str, list[dict]]:
        """``(next seq, last mac, entries to write first)`` from the file's tail and the anchor."""
        size = os.fstat(f.fileno()).st_size
        if self._head and self._head[0] == size:
            return self._head[1], self._head[2], []
        seq, prev, extra = 0, GENESIS, []
        if size:
            last, torn = _read_tail(f.fileno(), size)
            good = self._entry_from(last) if last else None
            if good:
                seq, prev = good["seq"] + 1, good["mac"]
            if torn:
                whole = self._entry_from(torn)
                if whole and whole.get("prev") == prev:  # only the newline was lost
                    f.write("\n")
                    seq, prev = whole["seq"] + 1, whole["mac"]
                else:
                    f.write("\n")
                    extra.append({"event": "torn", "bytes": len(torn), "sha256": hashlib.sha256(torn).hexdigest(),
                                  "note": "a partial line (a crash mid-write) was sealed here"})
        anchored = read_anchor(self.anchor, self.key)
        if anchored and anchored[0] + 1 > seq:  # the log was cut below its anchor: keep the gap visible
            seq, prev = anchored[0] + 1, anchored[1]
        return seq, prev, extra

    def append(self, record: dict[str, Any]) -> dict:
        """Sign ``record`` (JSON-serializable fields) onto the end of the chain; fsync, then update the anchor.

        Returns:
            The entry as written (with ``seq``, ``ts``, ``prev`` and ``mac``).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                seq, prev, entries = self._find_head(f)
                for rec in [*entries, _cap(record)]:
                    entry = {**rec, "seq": seq, "ts": round(time.time(), 3), "prev": prev}
                    entry["mac"] = _mac(self.key, entry)
                    f.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
                    seq, prev = seq + 1, entry["mac"]
                f.flush()
                os.fsync(f.fileno())
                write_anchor(self.anchor, self.key, seq - 1, prev)
                self._head = (os.fstat(f.fileno()).st_size, seq, prev)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return entry


def write_anchor(path: Path, key: bytes, seq: int, mac: str) -> None:
    """Write the chain head atomically: temp file, fsync, ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"seq": seq, "mac": mac, "anchor_mac": _anchor_mac(key, seq, mac)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_anchor(path: Path, key: bytes) -> tuple[int, str] | None:
    """``(last seq, last mac)`` from a valid anchor file; None when there is none.

    Raises:
        PhikitError: the anchor exists but is not valid (edited, or signed with another key).
    """
    try:
        a = json.loads(path.read_text(encoding="utf-8"))
        seq, mac = int(a["seq"]), str(a["mac"])
        ok = hmac.compare_digest(_anchor_mac(key, seq, mac), str(a["anchor_mac"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise PhikitError(f"the audit anchor {path} is not valid (edited, or signed with another key)")
    return seq, mac


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`verify`: ``ok``, the entry count, and for a bad log the first bad line (1-based)."""

    ok: bool
    entries: int
    line: int | None = None
    reason: str = ""
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.ok:
            extra = "".join(f"; {n}" for n in self.notes)
            return f"ok: {self.entries} entries, chain, MACs and anchor verified{extra}"
        return f"line {self.line}: {self.reason}"


def verify(path: str | Path, key: bytes | str | None = None, *, expect_seq: int | None = None) -> Verdict:
    """Check every MAC and link of the chain and the anchor; name the first line that was edited, deleted,
    inserted, moved or cut off.

    Args:
        path: the log.
        key: the HMAC key (see :func:`load_key`).
        expect_seq: a sequence number known to have been written (kept outside this machine); the log must
            reach it.

    Raises:
        PhikitError: the log file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise PhikitError(f"no audit log at {path}")
    k = load_key(key)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    unsealed = lines.pop() if lines else b""  # bytes after the last newline: a torn, not yet sealed line
    entries: list[tuple[int, dict]] = []
    skip_torn: dict[int, bytes] = {}
    for i, line in enumerate(lines, 1):
        try:
            e = json.loads(line)
            assert isinstance(e, dict) and isinstance(e.get("seq"), int) and "mac" in e and "prev" in e
        except (json.JSONDecodeError, UnicodeDecodeError, AssertionError):
            skip_torn[i] = line
            continue
        entries.append((i, e))
    for idx, (i, e) in enumerate(entries):  # a non-entry line is allowed only right before the torn entry sealing it
        if i - 1 in skip_torn:
            torn = skip_torn.pop(i - 1)
            if not (e.get("event") == "torn" and e.get("sha256") == hashlib.sha256(torn).hexdigest()):
                return Verdict(False, idx, i - 1, "not a valid audit entry (edited or corrupted)")
    if skip_torn:
        return Verdict(False, len(entries), min(skip_torn), "not a valid audit entry (edited or corrupted)")
    seqs = [e["seq"] for _, e in entries]
    prev, intents, sealed = GENESIS, {}, 0
    for n, (line, e) in enumerate(entries):
        if not hmac.compare_digest(_mac(k, e), str(e["mac"])):
            return Verdict(False, n, line, "MAC mismatch: the entry was edited (or signed with another key)")
        if e["seq"] != n or e["prev"] != prev:
            if e["seq"] < n or seqs.count(e["seq"]) > 1:
                why = f"entry seq {e['seq']} appears again or out of order: a line was inserted or moved here"
            elif n in seqs[n + 1 :]:
                why = f"entry seq {e['seq']} comes before seq {n}: lines were reordered"
            else:
                why = f"entry seq {e['seq']} follows seq {n - 1}: the line(s) before it were deleted"
            return Verdict(False, n, line, why)
        prev = e["mac"]
        if e.get("event") == "intent":
            intents[e["seq"]] = line
        elif e.get("event") == "result":
            intents.pop(e.get("intent"), None)
        elif e.get("event") == "torn":
            sealed += 1
    count, end_line = len(entries), (entries[-1][0] + 1 if entries else 1)
    try:
        anchored = read_anchor(anchor_path(path), k)
    except PhikitError as exc:
        return Verdict(False, count, end_line, str(exc))
    last = count - 1
    if anchored is None and count:
        return Verdict(False, count, end_line, f"the anchor file {anchor_path(path)} is missing: "
                       "the end of the log cannot be checked (was it deleted?)")
    if anchored is not None:
        a_seq, a_mac = anchored
        if a_seq > last:
            return Verdict(False, count, end_line, f"the log ends at seq {last} but its anchor records seq {a_seq}: "
                           f"{a_seq - last} entr{'y was' if a_seq - last == 1 else 'ies were'} removed from the end")
        if entries[a_seq][1]["mac"] != a_mac:
            return Verdict(False, count, entries[a_seq][0], "the entry the anchor points to was replaced")
    if expect_seq is not None and last < expect_seq:
        return Verdict(False, count, end_line, f"the log ends at seq {last}, before the expected seq {expect_seq}: "
                       "entries were removed from the end")
    notes = []
    if sealed:
        notes.append(f"{sealed} torn line(s) sealed")
    if unsealed:
        notes.append("a torn last line (a crash mid-write) will be sealed by the next append")
    if intents:
        notes.append(f"{len(intents)} intent(s) without a result (a crash during a tool run?) at line(s) "
                     + ", ".join(map(str, intents.values())))
    return Verdict(True, count, notes=tuple(notes))
