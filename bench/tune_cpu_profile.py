"""Where a CPU `phikit tune` step's time goes: the embedded model with phikit's default LoRA (r=16, alpha=32,
dropout 0.05, the 7 Llama projections), 4 Zorblax chats packed into one row per step, the same loss as
`phikit tune` (logits only where there is a target); 4 timed steps after 2 warm-up steps, then
`torch.profiler` over 2 more.

    .venv/bin/python bench/tune_cpu_profile.py [--steps 4] [--no-profile] [--compare-dropout ROUNDS] [--compile]

``--compare-dropout 4`` times ``--steps`` steps with phikit's shared LoRA dropout masks
(:mod:`phikit.tune.dropout`), then as many with peft's one mask per module, alternating for 4 rounds in this
one process (so both see the same machine), and prints the mean step time of each. ``--compile``
``torch.compile``s each decoder layer (dynamic shapes: the packed rows' lengths vary); the warm-up's time then
holds the compile.

The OpenMP settings are read when torch loads, so compare them across runs, e.g.
``OMP_WAIT_POLICY=PASSIVE python bench/tune_cpu_profile.py --steps 16 --no-profile`` against
``GOMP_SPINCOUNT=1000000 ...`` (what ``phikit tune`` sets).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from peft import LoraConfig, get_peft_model
from torch.profiler import ProfilerActivity, profile

from phikit.models import resolve
from phikit.tune import data as data_mod
from phikit.tune.dropout import share_dropout
from phikit.tune.packing import chunked_lm_loss
from phikit.tune.train import TARGET_MODULES, load_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler table")
    ap.add_argument("--compare-dropout", type=int, default=0, metavar="ROUNDS",
                    help="alternate shared and per-module dropout masks for ROUNDS rounds of --steps steps")
    ap.add_argument("--compile", action="store_true", help="torch.compile each decoder layer (dynamic shapes)")
    args = ap.parse_args()
    ref = resolve(None)
    model, tok = load_base(ref, "fp32", "cpu")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGET_MODULES["llama"],
                      task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    per_module = {m: m.lora_dropout["default"] for m in peft_model.modules()
                  if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)}
    share_dropout(peft_model)  # as phikit tune does
    if args.compile:
        for layer in peft_model.get_base_model().model.layers:
            layer.compile(dynamic=True)
    shared = {m: m.lora_dropout["default"] for m in per_module}
    peft_model.train()
    examples = data_mod.read_examples("examples/zorblax/train.jsonl")[: 4 * (args.steps + 4)]
    special = {"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""}
    rows = data_mod.build_dataset(examples, tok, tok.chat_template, special, 1024, ref.system_prompt)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    base = peft_model.get_base_model()

    def step(i: int) -> int:
        batch = data_mod.pack(rows[4 * i: 4 * i + 4])
        hidden = base.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                            use_cache=False).last_hidden_state
        chunked_lm_loss(hidden, base.lm_head, batch["labels"]).backward()
        opt.step()
        opt.zero_grad()
        return batch["input_ids"].shape[1]

    t_warm = time.perf_counter()
    for i in range(2):
        step(i)
    print(f"warm-up, 2 steps: {time.perf_counter() - t_warm:.1f} s", flush=True)
    if args.compare_dropout:
        times: dict[str, list[float]] = {"shared masks": [], "one mask per module (peft)": []}
        for _ in range(args.compare_dropout):
            for name, masks in zip(times, (shared, per_module)):
                for m, drop in masks.items():
                    m.lora_dropout["default"] = drop
                t0 = time.perf_counter()
                for i in range(2, 2 + args.steps):
                    step(i)
                times[name].append((time.perf_counter() - t0) / args.steps)
        for name, ts in times.items():
            print(f"{name}: {sum(ts) / len(ts) * 1000:.0f} ms a step (rounds: {', '.join(f'{t * 1000:.0f}' for t in ts)})")
        return
    t0 = time.perf_counter()
    tokens = sum(step(i) for i in range(2, 2 + args.steps))
    dt = (time.perf_counter() - t0) / args.steps
    omp = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if os.environ.get(k)}
    print(f"{torch.get_num_threads()} threads, attention {model.config._attn_implementation}, OpenMP {omp or 'defaults'}: "
          f"{dt * 1000:.0f} ms a step, {tokens / args.steps:.0f} tokens a step")
    if args.no_profile:
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(2 + args.steps, 4 + args.steps):
            step(i)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
