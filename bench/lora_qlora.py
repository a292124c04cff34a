"""QLoRA on one GPU: ``phikit tune`` (packed, padding-free) against plain HF+PEFT QLoRA (padded batches).

Both train the same LoRA (r=16, alpha=32, dropout 0.05 on qkv_proj, o_proj, gate_up_proj, down_proj) over
the same nf4 + bf16-compute base (prepare_model_for_kbit_training, gradient checkpointing) on the same
chats, for the same number of optimizer steps, and report step time, training tokens/s (real tokens, no
padding) and peak GPU memory. The base is a random-weight model of Phi-4-mini's exact shape
(:mod:`phikit.stand_in`): speed and memory depend on shapes, not on weight values. ``--profile`` adds a
torch.profiler table of one training step (top CUDA ops) to say what bounds the step.

    python bench/lora_qlora.py --json bench/results/lora_qlora.json [--layers 32] [--steps 20] [--profile]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from phikit.tune import data as data_mod  # noqa: E402
from phikit.tune.train import TARGET_MODULES, TuneConfig, tune  # noqa: E402


def padded(features: list[dict]) -> dict:
    """The usual collator: pad every example to the batch's longest (right padding, masked)."""
    n = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), n, dtype=torch.long)
    labels = torch.full((len(features), n), data_mod.IGNORE)
    mask = torch.zeros(len(features), n, dtype=torch.long)
    for i, f in enumerate(features):
        k = len(f["input_ids"])
        ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(f["input_ids"]), torch.tensor(f["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def load_qlora(model_dir: Path):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, device_map="auto",
                                                 dtype=torch.bfloat16)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGET_MODULES["phi3"], task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def plain_hf_peft(model_dir: Path, rows: list[dict], steps: int, batch: int, lr: float) -> dict:
    """Plain HF+PEFT QLoRA: Trainer with padded batches."""
    from transformers import Trainer, TrainingArguments

    model = load_qlora(model_dir)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=lr, bf16=True, gradient_checkpointing=True,
                             gradient_checkpointing_kwargs={"use_reentrant": False}, logging_steps=1,
                             save_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=padded)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t0
    tokens = real_tokens(rows, steps, batch)
    figures = {"steps": steps, "seconds": round(seconds, 2), "step_ms": round(1000 * seconds / steps, 1),
               "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1), "train_loss": round(out.training_loss, 4),
               "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    return {"figures": figures, "model": model}


def real_tokens(rows: list[dict], steps: int, batch: int) -> int:
    per_epoch = sum(len(r["input_ids"]) for r in rows)
    return int(per_epoch * steps * batch / len(rows))


def profile_step(model, batch: dict, label: str, top: int = 12) -> str:
    """torch.profiler over one forward+backward of ``batch``: the top CUDA ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    batch = {k: v.to("cuda") for k, v in batch.items()}
    model.train()
    for _ in range(2):  # warm-up
        model(**batch).loss.backward()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        model(**batch).loss.backward()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=top, max_name_column_width=60)
    return f"== {label} ==\n{table}"


def run_phikit(model_dir: Path, work: Path, args) -> dict:
    cfg = TuneConfig(max_steps=args.steps, batch_size=args.batch, pack_tokens=args.pack_tokens, learning_rate=args.lr,
                     save_steps=10**6)
    if args.warmup:  # a few steps first, so the timed run pays no CUDA/cuBLAS/bitsandbytes start-up
        tune(args.data, work / "warmup", model=str(model_dir), progress=False, register=False,
             config=TuneConfig(max_steps=3, batch_size=args.batch, pack_tokens=args.pack_tokens, save_steps=10**6))
        gc.collect()  # the Trainer holds reference cycles: free the warm-up's model before the timed run
        torch.cuda.empty_cache()
    manifest = tune(args.data, work / "adapter", model=str(model_dir), config=cfg, progress=False, register=False)
    t = manifest["training"]
    return {"steps": t["steps"], "seconds": t["seconds"], "step_ms": round(1000 * t["seconds"] / t["steps"], 1),
            "tokens": t["tokens"], "tokens_per_s": t["tokens_per_s"], "train_loss": t["train_loss"],
            "peak_memory_mb": t["peak_memory_mb"], "pack_tokens": args.pack_tokens,
            "batch": None if args.pack_tokens else args.batch}


def run_plain(model_dir: Path, rows: list[dict], args) -> dict:
    if args.warmup:
        warm = plain_hf_peft(model_dir, rows, 3, args.batch, args.lr)
        del warm
        gc.collect()
        torch.cuda.empty_cache()
    return {**plain_hf_peft(model_dir, rows, args.steps, args.batch, args.lr)["figures"], "batch": args.batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", help="An existing checkpoint (default: a random Phi-4-mini-shaped one, written once).")
    ap.add_argument("--layers", type=int, default=32, help="Decoder layers of the stand-in (Phi-4-mini: 32).")
    ap.add_argument("--data", default=str(ROOT / "examples" / "lora" / "train.jsonl"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4, help="Examples per step (plain; phikit without --pack-tokens).")
    ap.add_argument("--pack-tokens", type=int, default=0, help="phikit: fill each step up to this many tokens.")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--only", choices=["phikit", "plain"], help="Run one side (each in its own process gives a "
                    "like-for-like peak memory); without it both run here, phikit first.")
    ap.add_argument("--profile", action="store_true", help="Profile one step of each collator on the same model.")
    ap.add_argument("--warmup", action="store_true", help="Train 3 untimed steps first (start-up costs).")
    ap.add_argument("--json", help="Write the results here.")
    ap.add_argument("--profile-out", help="Write the profiler tables here.")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU (QLoRA's nf4 base)")

    import bitsandbytes
    import peft
    import transformers

    from phikit.stand_in import save_random_phi4_mini

    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    model_dir = Path(args.model_dir) if args.model_dir else work / "phi4-mini-random"
    t0 = time.perf_counter()
    if not model_dir.exists():
        save_random_phi4_mini(model_dir, device="cuda", num_hidden_layers=args.layers)
    write_s = time.perf_counter() - t0

    from transformers import AutoTokenizer

    from phikit.prompt import effective_template

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = data_mod.build_dataset(data_mod.read_examples(args.data), tok, effective_template(tok.chat_template),
                                  {"eos_token": tok.eos_token or ""}, 1024)
    result = {
        "device": torch.cuda.get_device_name(0),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "bitsandbytes": bitsandbytes.__version__},
        "model": f"random Phi-4-mini shape, {args.layers} layers, nf4 + bf16 compute",
        "data": {"path": args.data, "examples": len(rows), "mean_tokens": round(sum(len(r["input_ids"]) for r in rows) / len(rows), 1),
                 "steps": args.steps},
        "checkpoint_write_s": round(write_s, 1),
    }
    if args.only != "plain":
        result["phikit"] = run_phikit(model_dir, work, args)
        torch.cuda.empty_cache()
    base = None
    if args.only != "phikit":
        base = plain_hf_peft(model_dir, rows, args.steps, args.batch, args.lr) if args.profile else None
        result["plain_hf_peft_padded"] = base["figures"] | {"batch": args.batch} if base else run_plain(model_dir, rows, args)
    if "phikit" in result and "plain_hf_peft_padded" in result:
        ours, plain = result["phikit"], result["plain_hf_peft_padded"]
        result["speedup_tokens_per_s"] = round(ours["tokens_per_s"] / plain["tokens_per_s"], 3)
        result["memory_ratio"] = round(ours["peak_memory_mb"] / plain["peak_memory_mb"], 3)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.profile and base:
        sample = rows[: args.batch]
        text = profile_step(base["model"], data_mod.pack(sample), "packed (phikit)") + "\n" + \
            profile_step(base["model"], padded(sample), "padded (plain)")
        print(text)
        if args.profile_out:
            Path(args.profile_out).write_text(text)


if __name__ == "__main__":
    main()
