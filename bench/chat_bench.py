"""A scripted 10-turn `phikit chat` with long messages: time to first token per turn.

Runs the real CLI (`python -m phikit chat`) in a subprocess, feeds it N user messages of 300-600 words on
stdin (excerpts of the support-bot corpus, each with a question), and reads the per-turn stats line from
stderr. Any `error:` line, a traceback or a non-zero exit fails the run. Prints one row per turn: prompt
tokens, tokens taken from the KV cache, TTFT, and whether older turns were dropped before that turn.

    python bench/chat_bench.py                      # 10 turns, the default context (8192 for SmolLM2)
    python bench/chat_bench.py --no-prefix-cache    # the same with a full prefill every turn
    python bench/chat_bench.py --ctx 4096 --json bench/results/chat_bench.json

"Done when" (issue 9): no errors, and turn 10's TTFT is within 2x turn 1's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "support-bot" / "corpus"
QUESTIONS = [
    "Summarize the main point of this text in one sentence.",
    "Which product does this text talk about most?",
    "What should a customer do first, according to this text?",
    "Is there a time limit mentioned in this text? Answer briefly.",
    "Write a one-line title for this text.",
]
STATS = re.compile(r"· (\d+)\+(\d+) tokens · TTFT (\d+) ms · ([\d.]+) tok/s · (\w+)(?: · (\d+) cached)?")


def corpus_words() -> list[str]:
    words: list[str] = []
    for path in sorted(CORPUS.rglob("*")):
        if path.suffix in (".md", ".txt"):
            words += re.sub(r"[#*`|>]+", " ", path.read_text("utf-8")).split()
    return words


# Words per message, 300-600. The first and the tenth are the same length, so that turn 10 / turn 1 compares
# the same amount of new text and measures only what the history costs.
LENGTHS = [450, 300, 600, 380, 520, 340, 560, 420, 480, 450]


def messages(turns: int) -> list[str]:
    """``turns`` user messages of 300-600 words (:data:`LENGTHS`): corpus excerpts, then a question."""
    words = corpus_words()
    out, pos = [], 0
    for i in range(turns):
        n = LENGTHS[i % len(LENGTHS)]
        excerpt = [words[(pos + j) % len(words)] for j in range(n)]
        pos += n
        out.append(f"Please read this text. {' '.join(excerpt)} {QUESTIONS[i % len(QUESTIONS)]}")
    return out


def run(turns: int, max_tokens: int, ctx: int | None, prefix_cache: bool, threads: str | None) -> dict:
    lines = messages(turns)
    cmd = [sys.executable, "-m", "phikit", "chat", "--temperature", "0", "--max-tokens", str(max_tokens)]
    if ctx:
        cmd += ["--ctx", str(ctx)]
    env = {**os.environ, "PHIKIT_PREFIX_CACHE": "1" if prefix_cache else "0"}
    if threads:
        env["PHIKIT_THREADS"] = threads
    started = time.perf_counter()
    p = subprocess.run(cmd, input="\n".join(lines) + "\n/exit\n", capture_output=True, text=True, env=env,
                       timeout=3600)
    wall = time.perf_counter() - started
    rows, dropped_before = [], False
    for line in p.stderr.splitlines():
        if line.startswith("note: dropped"):
            dropped_before = True
            continue
        m = STATS.search(line)
        if m:
            rows.append({
                "turn": len(rows) + 1, "words": len(lines[len(rows)].split()), "prompt_tokens": int(m[1]),
                "completion_tokens": int(m[2]), "ttft_ms": int(m[3]), "decode_tok_s": float(m[4]),
                "finish": m[5], "cached_tokens": int(m[6]) if m[6] else None, "dropped_before": dropped_before,
            })
            dropped_before = False
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:") or "Traceback" in line]
    return {"returncode": p.returncode, "errors": errors, "turns": rows, "wall_s": round(wall, 1),
            "drop_notes": [line for line in p.stderr.splitlines() if line.startswith("note: dropped")],
            "stderr_tail": p.stderr[-2000:] if p.returncode or errors or len(rows) != turns else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=None, help="context window (default: the model's trained context)")
    ap.add_argument("--no-prefix-cache", action="store_true", help="prefill the whole history every turn")
    ap.add_argument("--threads", default=None, help="PHIKIT_THREADS for llama.cpp")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = run(args.turns, args.max_tokens, args.ctx, not args.no_prefix_cache, args.threads)
    out.update(device=f"{platform.machine()}, {os.cpu_count()} cores", load_avg_at_start=load,
               max_tokens=args.max_tokens, ctx=args.ctx, prefix_cache=not args.no_prefix_cache)
    print(f"{'turn':>4} {'words':>5} {'prompt':>6} {'cached':>6} {'TTFT ms':>8}  note")
    for r in out["turns"]:
        note = "older turns dropped first" if r["dropped_before"] else ""
        print(f"{r['turn']:>4} {r['words']:>5} {r['prompt_tokens']:>6} {r['cached_tokens'] or 0:>6} {r['ttft_ms']:>8}  {note}")
    rows = out["turns"]
    ok = out["returncode"] == 0 and not out["errors"] and len(rows) == args.turns
    if rows:
        ratio = rows[-1]["ttft_ms"] / max(rows[0]["ttft_ms"], 1)
        out["last_over_first"] = round(ratio, 2)
        print(f"turn {len(rows)} TTFT / turn 1 TTFT = {ratio:.2f} (target <= 2); drops: {len(out['drop_notes'])}; "
              f"wall {out['wall_s']} s; load average at start {load}")
    if not ok:
        print(f"FAILED: exit {out['returncode']}, {len(rows)}/{args.turns} turns, errors: {out['errors']}\n"
              f"{out['stderr_tail']}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
