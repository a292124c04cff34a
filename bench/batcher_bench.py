"""The fast path's continuous batcher without the server: N threads stream requests straight through the engine,
as ``phikit serve``'s generation threads do, with no HTTP, event loop or SSE.

Set beside ``bench/serve_bench.py``'s figure at the same concurrency, it splits the server's cost in two: what
the batcher and its consumer threads reach alone, and what the HTTP layer takes on top. ``--mode events``
runs ``engine.generate`` (chat template, detokenization, stop strings: the server's per-token work short of
SSE); ``--mode tokens`` reads bare token ids from ``engine.token_steps``.

    python bench/batcher_bench.py --random-weights /tmp/phi4r --clients 32 --requests 128 --max-tokens 128 \\
        [--mode events,tokens] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from serve_bench import PROMPTS, run_clients, summarize  # bench/ is the script's directory, so on sys.path


def run_level(engine, clients: int, per_client: int, max_tokens: int, mode: str) -> dict:
    """``clients`` threads, each streaming ``per_client`` requests back to back; aggregate figures, as
    ``serve_bench.summarize`` computes them for the server."""
    from phikit.engines.base import Done, SamplingParams

    params = SamplingParams(max_new_tokens=max_tokens, temperature=0)
    results: list[dict] = []  # per request, in serve_bench's shape

    def client(c: int) -> None:
        for j in range(per_client):
            messages = [{"role": "user", "content": PROMPTS[(c * per_client + j) % len(PROMPTS)]}]
            start, stamps, tokens = time.perf_counter(), [], 0
            if mode == "tokens":
                for _ in engine.token_steps(engine.encode_prompt(messages), params):
                    stamps.append(time.perf_counter())
                tokens = len(stamps)
            else:
                for ev in engine.generate(messages, params):
                    if isinstance(ev, Done):
                        tokens = ev.usage.completion_tokens
                    else:
                        stamps.append(time.perf_counter())
            results.append({"status": 200, "tokens": tokens, "ttft": stamps[0] - start if stamps else 0.0,
                            "gaps": [b - a for a, b in zip(stamps, stamps[1:])]})

    wall = run_clients(client, clients)
    return dict(summarize(clients, [{"results": results, "wall_s": wall}]), mode=mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random-weights", metavar="DIR", required=True, help="Phi-4-mini's shape, random weights (made if missing)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=128, help="requests in all (per level)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--mode", default="events,tokens")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    import phikit
    from phikit.stand_in import save_random_phi4_mini

    if not (Path(args.random_weights) / "config.json").exists():
        save_random_phi4_mini(args.random_weights, device="cuda", text_only=True)
    engine = phikit.load(args.random_weights, backend="fast").engine
    engine.enable_batching(args.parallel)
    run_level(engine, args.clients, 1, 8, "tokens")  # warm-up: graphs of every batch size in use
    rows = []
    for mode in args.mode.split(","):
        row = run_level(engine, args.clients, max(1, args.requests // args.clients), args.max_tokens, mode)
        rows.append(row)
        print(f"{mode:>6}: {row['tok_s']:7.1f} tok/s, TTFT p50 {row['ttft_p50_ms']:5.0f} ms, "
              f"ITL p95 {row['itl_p95_ms']:4.1f} ms ({row['requests']} requests)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
