"""Streaming detokenization cost per token: the byte table (`ByteDetokenizer`) against re-decoding a window of
ids (`IncrementalDetokenizer`), on the embedded model's tokenizer (SmolLM2, byte-level BPE, 49,152 tokens).

    .venv/bin/python bench/detok_bench.py [--tokens 2000]
"""

from __future__ import annotations

import argparse
import random
import time

from phikit.engines.base import ByteDetokenizer, IncrementalDetokenizer
from phikit.engines.local import byte_table
from phikit.models import resolve
from phikit.tune.train import load_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2000, help="random token ids streamed through each")
    args = ap.parse_args()
    _, tok = load_base(resolve(None), "fp32", "cpu")
    t0 = time.perf_counter()
    table = byte_table(tok)
    built = time.perf_counter() - t0
    decode = lambda ids: tok.decode(list(ids), skip_special_tokens=False)  # noqa: E731
    ids = [random.Random(0).randrange(len(tok)) for _ in range(args.tokens)]
    cost = {}
    for name, detok in (("byte table", ByteDetokenizer(table, decode)), ("window decode", IncrementalDetokenizer(decode))):
        t0 = time.perf_counter()
        text = "".join(detok.add(i) for i in ids) + detok.flush()
        cost[name] = (time.perf_counter() - t0) / len(ids) * 1e6
        assert text == decode(ids)
    print(f"table built and checked against the tokenizer in {built:.2f} s ({len(table):,} tokens)")
    for name, us in cost.items():
        print(f"{name}: {us:.1f} us a token")
    print(f"ratio: {cost['window decode'] / cost['byte table']:.1f}x")


if __name__ == "__main__":
    main()
