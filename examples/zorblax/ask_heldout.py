"""Ask every held-out Zorblax-7 question through the installed CLI, as a user would, and report the recall.

Runs ``phikit ask --adapter ADAPTER --temperature 0 "<question>"`` once per question (the default backend:
llama.cpp for the embedded model) and counts answers that contain every expected keyword.

    python examples/zorblax/ask_heldout.py [--adapter zorblax] [--phikit .venv/bin/phikit]
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="zorblax", help="registered name or folder ('none': the base model)")
    ap.add_argument("--phikit", default=shutil.which("phikit") or "phikit", help="the phikit script to run")
    ap.add_argument("--facts", default=str(Path(__file__).with_name("heldout.jsonl")))
    args = ap.parse_args()
    facts = [json.loads(line) for line in Path(args.facts).read_text().splitlines() if line.strip()]
    hits, t0 = 0, time.perf_counter()
    for f in facts:
        out = subprocess.run([args.phikit, "ask", "--adapter", args.adapter, "--temperature", "0", "-n", "48",
                              f["question"]], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr.strip(), file=sys.stderr)
            return out.returncode
        answer = out.stdout.strip()
        ok = all(k.lower() in answer.lower() for k in f["expected"])
        hits += ok
        print(f"{'ok ' if ok else 'MISS'} {f['question']}\n     -> {answer}")
    print(f"recall {hits}/{len(facts)} = {hits / len(facts):.0%} via `phikit ask --adapter {args.adapter}` "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
