"""The signed audit log: a clean log verifies; every kind of tampering names its line."""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from phikit.cli import app
from phikit.tools.audit import AuditLog, load_key, verify

KEY = "test-key"


@pytest.fixture
def log_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, key=KEY)
    for i in range(5):
        log.append({"event": "tool_call", "tool": "calculate", "arguments": {"expression": f"{i} + 1"}, "result": str(i + 1)})
    return path, path.read_text().splitlines()


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")


def test_clean_log_verifies(log_lines):
    path, lines = log_lines
    v = verify(path, KEY)
    assert v.ok and v.entries == 5
    assert [json.loads(line)["seq"] for line in lines] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "tamper, line, reason",
    [
        ("edit", 3, "MAC mismatch"),
        ("delete", 3, "deleted"),
        ("insert", 2, "inserted"),
        ("reorder", 2, "reordered"),
        ("forge", 4, "MAC mismatch"),
        ("garbage", 2, "not a valid audit entry"),
    ],
)
def test_tampering_is_detected_at_its_line(log_lines, tamper, line, reason):
    path, L = log_lines
    if tamper == "edit":
        e = json.loads(L[2])
        e["result"] = "999"
        L[2] = json.dumps(e)
    elif tamper == "delete":
        del L[2]
    elif tamper == "insert":
        L.insert(1, L[3])  # a genuine, validly signed entry copied elsewhere
    elif tamper == "reorder":
        L[1], L[2] = L[2], L[1]
    elif tamper == "forge":  # a new entry signed with the wrong key, chained correctly
        other = path.parent / "other.jsonl"
        fake = AuditLog(other, key="wrong")
        for _ in range(4):
            fake.append({"event": "x"})
        L[3] = other.read_text().splitlines()[3]
    elif tamper == "garbage":
        L[1] = L[1][:-5]
    write(path, L)
    v = verify(path, KEY)
    assert not v.ok and v.line == line and reason in v.reason


def test_wrong_key_fails_on_the_first_line(log_lines):
    path, _ = log_lines
    v = verify(path, "another key")
    assert not v.ok and v.line == 1


def test_cli_verify_names_the_line_and_exits_nonzero(log_lines, monkeypatch):
    path, L = log_lines
    monkeypatch.setenv("PHIKIT_AUDIT_KEY", KEY)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", str(path)])
    assert ok.exit_code == 0 and "5 entries" in ok.output
    del L[1]
    write(path, L)
    bad = runner.invoke(app, ["audit", "verify", str(path)])
    assert bad.exit_code == 1 and "line 2" in bad.output


def test_key_file_is_created_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv("PHIKIT_AUDIT_KEY", raising=False)
    key_file = tmp_path / "cfg" / "audit.key"
    monkeypatch.setenv("PHIKIT_AUDIT_KEY_FILE", str(key_file))
    k1 = load_key()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_key() == k1 and len(k1) == 64


# --- intent/result, anchor, torn lines, constant-time appends, the real script ---------------------------------

import hashlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from phikit.tools import audit as audit_mod  # noqa: E402
from phikit.tools.audit import anchor_path  # noqa: E402

PHIKIT = shutil.which("phikit", path=str(Path(sys.executable).parent)) or shutil.which("phikit")


def script_verify(path, *extra):
    """`phikit audit verify` through the installed console script, as a user runs it."""
    out = subprocess.run([PHIKIT, "audit", "verify", str(path), *extra], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PHIKIT_AUDIT_KEY": KEY})
    return out.returncode, out.stdout + out.stderr


@pytest.mark.parametrize(
    "tamper, where",
    [("edit", "line 3: MAC mismatch"), ("delete", "line 3: entry seq 3 follows seq 1"),
     ("insert", "line 2:"), ("reorder", "line 2:"), ("truncate", "removed from the end"),
     ("truncate-mid-line", "removed from the end"), ("drop-anchor", "anchor file"), ("forge-anchor", "anchor")],
)
def test_the_installed_script_exits_1_naming_the_place(log_lines, tamper, where):
    path, L = log_lines
    assert script_verify(path) == (0, "ok: 5 entries, chain, MACs and anchor verified\n")
    if tamper == "edit":
        e = json.loads(L[2])
        e["result"] = "999"
        L[2] = json.dumps(e)
    elif tamper == "delete":
        del L[2]
    elif tamper == "insert":
        L.insert(1, L[3])
    elif tamper == "reorder":
        L[1], L[2] = L[2], L[1]
    elif tamper == "truncate":
        del L[3:]
    if tamper == "truncate-mid-line":
        path.write_bytes(path.read_bytes()[:-40])
    elif tamper == "drop-anchor":
        anchor_path(path).unlink()
    elif tamper == "forge-anchor":
        a = json.loads(anchor_path(path).read_text())
        anchor_path(path).write_text(json.dumps({**a, "seq": 2}))
    else:
        write(path, L)
    code, out = script_verify(path)
    assert code == 1 and where in out, out


def test_expect_seq_catches_a_rolled_back_anchor(log_lines):
    path, L = log_lines
    old_anchor = anchor_path(path).read_text()
    AuditLog(path, key=KEY).append({"event": "x"})
    write(path, L)  # cut the new entry and put the old anchor back: the log and anchor agree again
    anchor_path(path).write_text(old_anchor)
    assert verify(path, KEY).ok
    assert script_verify(path, "--expect-seq", "4")[0] == 0
    code, out = script_verify(path, "--expect-seq", "5")
    assert code == 1 and "before the expected seq 5" in out


def test_a_torn_last_line_is_reported_then_sealed_by_the_next_append(log_lines):
    path, _ = log_lines
    torn = b'{"event": "tool_call", "tool": "calc'
    with open(path, "ab") as f:
        f.write(torn)  # a crash mid-write
    v = verify(path, KEY)
    assert v.ok and "torn last line" in str(v)
    entry = AuditLog(path, key=KEY).append({"event": "after"})
    assert entry["seq"] == 6
    lines = path.read_bytes().split(b"\n")
    assert lines[5] == torn
    sealed = json.loads(lines[6])
    assert sealed["event"] == "torn" and sealed["seq"] == 5 and sealed["sha256"] == hashlib.sha256(torn).hexdigest()
    v = verify(path, KEY)
    assert v.ok and v.entries == 7 and "1 torn line(s) sealed" in str(v)
    lines[5] = b'{"event": "tool_call", "tool": "other'  # the sealed bytes cannot be swapped afterwards
    path.write_bytes(b"\n".join(lines))
    assert not verify(path, KEY).ok


def test_a_cut_log_stays_visibly_cut_after_more_appends(log_lines):
    path, L = log_lines
    write(path, L[:3])  # entries 3 and 4 removed
    AuditLog(path, key=KEY).append({"event": "later"})
    v = verify(path, KEY)
    assert not v.ok and v.line == 4 and "deleted" in v.reason


def test_intent_without_result_is_reported(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", key=KEY)
    log.append({"event": "intent", "tool": "calculate", "arguments": {}})
    v = verify(tmp_path / "a.jsonl", KEY)
    assert v.ok and "1 intent(s) without a result" in str(v)


def test_appends_read_only_the_tail(tmp_path, monkeypatch):
    """Constant-time appends: a fresh AuditLog reads a bounded window at the end, however long the log."""
    path = tmp_path / "big.jsonl"
    log = AuditLog(path, key=KEY)
    for i in range(300):
        log.append({"event": "x", "i": i, "pad": "y" * 500})
    read = []
    real = os.pread
    monkeypatch.setattr(audit_mod.os, "pread", lambda fd, n, off: read.append(n) or real(fd, n, off))
    monkeypatch.setattr(audit_mod.os, "fsync", lambda fd: None)
    assert AuditLog(path, key=KEY).append({"event": "y"})["seq"] == 300
    assert sum(read) <= 2 * audit_mod.MAX_ENTRY_BYTES + 2 < path.stat().st_size
    read.clear()
    log2 = AuditLog(path, key=KEY)
    for _ in range(50):
        log2.append({"event": "z"})
    assert len(read) <= 1  # after the first append the head is kept in memory
    assert verify(path, KEY).ok


def test_a_huge_record_is_capped(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", key=KEY)
    e = log.append({"event": "x", "result": "r" * 1_000_000})
    assert len(json.dumps(e)) < audit_mod.MAX_ENTRY_BYTES and verify(tmp_path / "a.jsonl", KEY).ok
