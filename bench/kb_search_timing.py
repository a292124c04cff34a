"""How long ``phikit kb search`` (and ``phikit ask --kb``) take from process start to output, as a user
runs them: a fresh ``phikit`` process each time, wall clock from spawn to the first byte on stdout and to
exit.

    .venv/bin/python bench/kb_search_timing.py                 # builds a KB of examples/support-bot/corpus
    .venv/bin/python bench/kb_search_timing.py --kb KB --runs 20 --ask

Rows: ``onnx`` (the default: the query embedder exported to ONNX at ``kb add``, no torch import) and
``torch`` (``PHIKIT_EMBED_ONNX=0``: sentence-transformers, as before). The load average is recorded
before each row: on a shared 2-core machine, other processes' load shows up directly in the wall-clock
figures; ``cpu_p50_s`` (user + system CPU seconds of the process) is what the command costs, and close to
its wall time on an idle machine, where its one busy thread has a core to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "support-bot" / "corpus"
QUERIES = ["thermostat warranty", "How much does express shipping cost?", "reset the Hub H2",
           "What are the phone support hours on Saturday?", "restocking fee"]


def phikit_bin() -> str:
    return shutil.which("phikit", path=str(Path(sys.executable).parent)) or "phikit"


def timed(cmd: list[str], env: dict) -> tuple[float, float, float, int]:
    """Seconds from spawn to the first stdout byte and to exit, CPU seconds (user + system) the process
    used, and the exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    proc.stdout.read()
    code = proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (t_first if first else float("nan")), time.perf_counter() - t0, cpu, code


def row(name: str, cmds: list[list[str]], env: dict, runs: int) -> dict:
    load = os.getloadavg()[0]
    firsts, totals, cpus = [], [], []
    for i in range(runs):
        f, t, cpu, code = timed(cmds[i % len(cmds)], env)
        if code != 0:
            raise SystemExit(f"{name}: {' '.join(cmds[i % len(cmds)])} exited {code}")
        firsts.append(f)
        totals.append(t)
        cpus.append(cpu)
    out = {"name": name, "runs": runs, "load_avg_before": round(load, 2),
           "first_byte_p50_s": round(statistics.median(firsts), 2), "first_byte_max_s": round(max(firsts), 2),
           "exit_p50_s": round(statistics.median(totals), 2), "exit_max_s": round(max(totals), 2),
           "within_2s": sum(x <= 2.0 for x in firsts), "cpu_p50_s": round(statistics.median(cpus), 2)}
    print(out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kb", help="an existing KB (default: build one from examples/support-bot/corpus)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ask", action="store_true", help="also time `phikit ask --kb` (first byte = first verified text)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench-kb-search.json"))
    args = ap.parse_args()
    exe = phikit_bin()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        kb = args.kb or str(Path(tmp) / "kb")
        if not args.kb:  # kb add loads torch anyway and exports the query embedder to ONNX
            subprocess.run([exe, "kb", "add", str(CORPUS), "--kb", kb], check=True, env=env,
                           stderr=subprocess.DEVNULL)
        search = [[exe, "kb", "search", q, "--kb", kb] for q in QUERIES]
        rows = [row("kb search (onnx)", search, env, args.runs),
                row("kb search (torch, PHIKIT_EMBED_ONNX=0)", search, {**env, "PHIKIT_EMBED_ONNX": "0"}, max(3, args.runs // 3))]
        if args.ask:
            ask = [[exe, "ask", q, "--kb", kb, "-t", "0", "-n", "64"] for q in QUERIES[1:]]
            rows.append(row("ask --kb (onnx, first verified text)", ask, env, max(3, args.runs // 3)))
    out = {"cpu_cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
           "python": platform.python_version(), "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
