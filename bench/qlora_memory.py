"""What sets a QLoRA step's peak GPU memory: a memory profile of ``phikit tune`` on Phi-4-mini's shape.

PyTorch's allocator history (``torch.cuda.memory._record_memory_history``) is recorded from before the model
loads to the end of a few training steps; the trace is then replayed to the moment of the training peak and
the tensors alive at that moment are grouped by where they were allocated (the innermost frames in phikit,
peft, transformers or bitsandbytes). ``--prep peft`` swaps phikit's QLoRA preparation
(:func:`phikit.tune.train.prepare_qlora`) for peft's ``prepare_model_for_kbit_training`` to show what the
difference is made of.

    python bench/qlora_memory.py --model-dir DIR --data chats.jsonl --pack-tokens 2048 --steps 4 \
        [--prep phikit|peft] [--json out.json] [--snapshot out.pickle]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

OURS = ("phikit/", "peft/", "transformers/", "bitsandbytes/", "bench/")


def where(frames: list[dict], depth: int = 3) -> str:
    """The innermost ``depth`` Python frames of an allocation in the libraries that matter, innermost first."""
    picked = [f"{f['filename'].split('site-packages/')[-1].split('src/')[-1]}:{f['line']} {f['name']}"
              for f in frames if any(k in f["filename"] for k in OURS)]
    return " < ".join(picked[:depth]) or (frames[0]["name"] if frames else "?")


def live_at_peak(trace: list[dict], start: int = 0) -> tuple[int, int, dict[int, dict]]:
    """Replay an allocator trace; returns (peak bytes among the traced allocations after event ``start``, the
    event index of that peak, the blocks alive then as addr -> event)."""
    live: dict[int, dict] = {}
    cur = peak = 0
    at = -1
    for i, e in enumerate(trace):
        if e["action"] == "alloc":
            live[e["addr"]] = e
            cur += e["size"]
        elif e["action"] == "free_completed" and e["addr"] in live:
            cur -= live.pop(e["addr"])["size"]
        if i >= start and cur > peak:
            peak, at = cur, i
    live = {}
    for e in trace[: at + 1]:
        if e["action"] == "alloc":
            live[e["addr"]] = e
        elif e["action"] == "free_completed":
            live.pop(e["addr"], None)
    return peak, at, live


VOCAB, HIDDEN = 200_064, 3_072  # Phi-4-mini
KNOWN = {VOCAB * HIDDEN * 2: "embedding/head, bf16", VOCAB * HIDDEN * 4: "embedding/head, fp32",
         1024 * VOCAB * 4: "logits of 1,024 tokens, fp32", 1024 * VOCAB * 2: "logits of 1,024 tokens, bf16"}


def known(size: int) -> str:
    """A name for a block of ``size`` bytes when it is one of Phi-4-mini's big tensors (blocks round up to 2 MB)."""
    return next((name for b, name in KNOWN.items() if b <= size < b + 2**21), "")


def table(live: dict[int, dict], top: int = 15) -> list[dict]:
    """The blocks alive at the peak grouped by where they were allocated (or by size, without stacks)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for e in live.values():
        frames = e.get("frames") or []
        key = where(frames) if frames else f"{e['size'] / 2**20:.1f} MB blocks {known(e['size'])}".rstrip()
        groups[key].append(e["size"])
    rows = [{"mb": round(sum(s) / 2**20, 1), "tensors": len(s), "where": k,
             "known": sorted({known(x) for x in s} - {""})} for k, s in groups.items()]
    return sorted(rows, key=lambda r: -r["mb"])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data", default=str(ROOT / "examples" / "lora" / "train.jsonl"))
    ap.add_argument("--pack-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prep", choices=["phikit", "peft"], default="phikit")
    ap.add_argument("--json")
    ap.add_argument("--no-stacks", action="store_true", help="Record sizes only (no Python stacks): group by size.")
    ap.add_argument("--snapshot", help="Also write the raw snapshot (for pytorch.org/memory_viz).")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this profile needs a CUDA GPU (QLoRA's nf4 base)")

    from phikit.tune import train

    if args.prep == "peft":
        from peft import prepare_model_for_kbit_training

        train.prepare_qlora = lambda m: prepare_model_for_kbit_training(
            m, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
    marks: dict[str, int] = {}
    reset = torch.cuda.reset_peak_memory_stats

    def mark_training_start(*a, **k):  # tune() resets the peak right before training: note where that is
        marks["train"] = len(torch.cuda.memory._snapshot()["device_traces"][0])
        return reset(*a, **k)

    torch.cuda.reset_peak_memory_stats = mark_training_start
    torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python",
                                            context=None if args.no_stacks else "alloc")
    cfg = train.TuneConfig(max_steps=args.steps, pack_tokens=args.pack_tokens, save_steps=10**6)
    manifest = train.tune(args.data, Path(tempfile.mkdtemp()) / "adapter", model=args.model_dir, config=cfg,
                          progress=False, register=False)
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    trace = snap["device_traces"][0]
    peak, at, live = live_at_peak(trace, marks.get("train", 0))
    rows = table(live)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "prep": args.prep,
              "pack_tokens": args.pack_tokens, "steps": args.steps,
              "peak_memory_mb_allocator": manifest["training"]["peak_memory_mb"],
              "peak_memory_mb_trace": round(peak / 2**20, 1), "trace_events": len(trace), "training_from_event": marks.get("train"), "peak_event": at,
              "tokens_per_s": manifest["training"]["tokens_per_s"], "alive_at_peak": rows}
    print(f"prep={args.prep}: peak {result['peak_memory_mb_allocator']} MB (allocator), "
          f"{result['peak_memory_mb_trace']} MB (trace), {result['tokens_per_s']} tok/s")
    for r in rows:
        print(f"{r['mb']:>9.1f} MB {r['tensors']:>5}  {r['where']}  {', '.join(r['known'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.snapshot:
        Path(args.snapshot).write_bytes(pickle.dumps(snap))


if __name__ == "__main__":
    main()
