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
