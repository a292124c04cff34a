"""How long a hostile calculator call takes, and whether the server stays responsive while it runs.

Measures (1) ``phikit tools run calculate '{"expression": "round(1, 10**9)"}'`` through the installed script,
wall clock, next to a trivial call (the difference is the call itself; the rest is start-up), and (2) the
same call through a live server's ``execute_tools`` while ``/health`` is polled every 20 ms: the slowest
``/health`` answer. The server's model is a scripted stand-in that emits the call, so only the tool path is
timed. Prints one JSON object; load average included, since a shared CPU inflates both figures.

Run: ``python bench/tools_isolation.py [--repeat 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from phikit.engines.local import LocalEngine
from phikit.llm import LLM
from phikit.serve import create_app
from phikit.serve.background import background

CALL = 'functools[{"name": "calculate", "arguments": {"expression": "round(1, 10**9)"}}]'


class CallingEngine(LocalEngine):
    """Characters are tokens; the first turn is the hostile call, the next one a short answer."""

    name = model_name = "scripted"
    context_length = 8192
    eos_ids = {0}

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i > 0)

    def token_steps(self, prompt_ids, params):
        reply = "done" if "CalculationError" in self.decode(prompt_ids) else CALL
        yield from (ord(c) for c in reply)
        yield 0


def cli_seconds(script: str, expression: str, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([script, "tools", "run", "calculate", json.dumps({"expression": expression})], env=env,
                   capture_output=True, timeout=120)
    return time.perf_counter() - t0


def server_health(repeat: int) -> dict:
    worst, calls = 0.0, []
    with background(create_app(LLM(CallingEngine()))) as url:
        for _ in range(repeat):
            lat, stop = [], threading.Event()

            def poll(lat=lat, stop=stop):
                with httpx.Client() as c:
                    while not stop.is_set():
                        t0 = time.perf_counter()
                        c.get(url + "/health")
                        lat.append(time.perf_counter() - t0)
                        time.sleep(0.02)

            t = threading.Thread(target=poll)
            t.start()
            t0 = time.perf_counter()
            httpx.post(url + "/v1/chat/completions", timeout=60, json={
                "messages": [{"role": "user", "content": "x"}], "max_tokens": 200,
                "tools": [{"type": "function", "function": {"name": "calculate"}}], "phikit": {"execute_tools": True}})
            calls.append(time.perf_counter() - t0)
            stop.set()
            t.join()
            worst = max(worst, max(lat))
    return {"execute_tools_request_s": round(min(calls), 3), "health_worst_ms": round(worst * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    script = shutil.which("phikit", path=str(Path(sys.executable).parent)) or "phikit"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PHIKIT_AUDIT_LOG": f"{tmp}/audit.jsonl", "PHIKIT_AUDIT_KEY": "bench"}
        huge = [cli_seconds(script, "round(1, 10**9)", env) for _ in range(args.repeat)]
        trivial = [cli_seconds(script, "1 + 1", env) for _ in range(args.repeat)]
    print(json.dumps({
        "cli_round_1_10e9_s": round(min(huge), 3), "cli_trivial_s": round(min(trivial), 3),
        **server_health(args.repeat), "load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
