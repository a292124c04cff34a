"""``phikit tune``: LoRA (CPU) or QLoRA (CUDA) with peft and transformers' Trainer.

Recipe from the seeds (Phi-4-mini guide and 4-bit tutorial): r=16, alpha=32, dropout 0.05; on CUDA the
base loads in nf4 with bf16 compute and is prepared for k-bit training (QLoRA, Dettmers et al. 2023:
gradient checkpointing, fp32 norms). On CPU the base is the embedded model in fp32 through the
transformers backend's cached checkpoint. Defaults: lr 2e-3, batch 4, 2 epochs (the best of the settings
measured on examples/zorblax, docs/lora.md; fewer steps, a lower rank, MLP-only or upper-layer-only adapters all
learned fewer facts), and on the CPU the adapter's A kept off everyday text's inputs (:mod:`.preserve`) with
LoRA+: over six runs 70-87% held-out recall of 30 facts, 9 of 10 general questions kept on five, general-text
perplexity 0.97-1.09x the base's (docs/lora.md, session 11).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import adapters as adapter_mod
from ..errors import BadRequestError, PhikitError
from ..models import ModelRef, resolve
from . import data as data_mod
from . import evaluate as eval_mod

# peft has no defaults for Phi-3 (its fused qkv_proj/gate_up_proj); these are the seeds' targets.
TARGET_MODULES = {
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass
class TuneConfig:
    """Training settings; every field is a ``phikit tune`` flag.

    Attributes:
        r, alpha, dropout: LoRA rank, scaling numerator (scale = alpha / r) and dropout.
        target_modules: module names to adapt; None picks :data:`TARGET_MODULES` by architecture.
        first_layer: adapt only decoder layers from this index on (0: all). Backward stops at the first
            adapted layer, so the layers below cost a forward pass only.
        learning_rate: AdamW peak rate (linear decay to 0).
        epochs: passes over the training split (ignored when ``max_steps`` > 0).
        max_steps: stop after this many optimizer steps (-1: use ``epochs``).
        batch_size: examples per step, packed into one padding-free row.
        pack_tokens: when > 0, fill each step with examples up to this many tokens instead (full-sequence
            packing, :mod:`phikit.tune.packing`), with the loss computed in chunks; the fast setting for
            QLoRA on a GPU (docs/lora.md). ``batch_size`` is then ignored.
        grad_accum: steps of gradient accumulation per optimizer step.
        max_length: tokens per example (longer ones are cut).
        seed: data order, held-out split and adapter init.
        preserve: keep each LoRA A orthogonal to the subspace holding this share of its module's input energy
            on everyday text (:mod:`phikit.tune.preserve`); 0 turns it off. None: 0.95 on the CPU, off on CUDA.
        loraplus_ratio: LoRA+ (Hayou et al. 2024): the B matrices learn this many times faster than A (peft's
            ``create_loraplus_optimizer``); 1 turns it off. None: 4 on the CPU, off on CUDA.
        eval_split: fraction of the chats held out for eval loss (0 disables it).
        save_steps: checkpoint every this many optimizer steps.
        precision: ``auto`` (nf4 on CUDA, fp32 for GGUF-derived and bf16 for checkpoints on CPU) | nf4 | bf16 | fp32.
        extra: other transformers ``TrainingArguments`` (Python API only), overriding phikit's.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | None = None
    first_layer: int = 0
    learning_rate: float = 2e-3
    epochs: float = 2.0
    max_steps: int = -1
    batch_size: int = 4
    pack_tokens: int = 0
    grad_accum: int = 1
    max_length: int = 1024
    seed: int = 0
    preserve: float | None = None
    loraplus_ratio: float | None = None
    eval_split: float = 0.0
    save_steps: int = 25
    precision: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        rules = [(self.r > 0, "r must be > 0"), (self.alpha > 0, "alpha must be > 0"),
                 (0 <= self.dropout < 1, "dropout must be in [0, 1)"), (self.learning_rate > 0, "lr must be > 0"),
                 (self.epochs > 0 or self.max_steps > 0, "give epochs > 0 or max_steps > 0"),
                 (self.batch_size > 0 and self.grad_accum > 0, "batch size and grad accumulation must be > 0"),
                 (self.max_length >= 16, "max_length must be >= 16"), (self.pack_tokens >= 0, "pack_tokens must be >= 0"), (self.save_steps > 0, "save_steps must be > 0"),
                 (self.first_layer >= 0, "first_layer must be >= 0"),
                 (self.preserve is None or 0 <= self.preserve < 1, "preserve must be in [0, 1) (0: off)"),
                 (self.loraplus_ratio is None or self.loraplus_ratio >= 1, "loraplus_ratio must be >= 1 (1: off)")]
        for ok, message in rules:
            if not ok:
                raise BadRequestError(message)


class TuneInterrupted(PhikitError):
    """Training was interrupted (Ctrl-C); the message names the checkpoint to resume from."""


def target_modules_for(model, override: list[str] | None) -> list[str]:
    """The configured modules, or the defaults for the model's architecture.

    Raises:
        BadRequestError: an unknown architecture without an override, or a name no module has.
    """
    kind = getattr(model.config, "model_type", "?")
    names = override or TARGET_MODULES.get(kind)
    if not names:
        raise BadRequestError(f"no default LoRA target modules for {kind!r}; pass --target-modules a,b,c")
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [n for n in names if n not in present]
    if missing:
        raise BadRequestError(f"{kind} has no module named {', '.join(missing)}; present: {', '.join(sorted(present)[:20])}")
    return list(names)


def load_base(ref: ModelRef, precision: str, device: str):
    """The base model and tokenizer for training (nf4 + k-bit preparation on CUDA)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..engines.transformers import gguf_to_checkpoint, load_kwargs
    from ..models import local_snapshot

    path = gguf_to_checkpoint(Path(ref.source)) if ref.is_gguf else local_snapshot(ref)
    tok = AutoTokenizer.from_pretrained(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs(precision, device))
    except ImportError as exc:
        raise PhikitError(f"training in {precision} needs a missing package: {exc}") from None
    if device == "cpu":
        model.to("cpu")
    if precision == "nf4":
        prepare_qlora(model)
    model.config.use_cache = False
    return model, tok


def prepare_qlora(model) -> None:
    """Prepare an nf4 base for QLoRA in place: every base weight frozen, gradient checkpointing on (non-reentrant).

    This is peft's ``prepare_model_for_kbit_training`` less its upcast of every weight bitsandbytes did not
    quantize to fp32: for Phi-4-mini the norms and the 200,064 x 3,072 embedding tied to the output head (2.46 GB
    in fp32 against 1.23 GB in bf16), which also makes the residual stream fp32. The weights are frozen; the
    RMSNorms compute in fp32 internally either way, and under bf16 autocast the head's matmul runs in bf16 on a
    copy of the upcast weight. Left in bf16, as Unsloth leaves them, the base computes as it does at inference,
    and the step's peak GPU memory drops (a memory profile: bench/qlora_memory.py, docs/lora.md).
    """
    for param in model.parameters():
        param.requires_grad_(False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def resolve_precision(precision: str, device: str, ref: ModelRef) -> str:
    if precision == "auto":
        return "nf4" if device == "cuda" else ("fp32" if ref.is_gguf else "bf16")
    if precision == "nf4" and device != "cuda":
        raise BadRequestError("nf4 (QLoRA) needs CUDA; on CPU use --precision fp32 or bf16")
    if precision not in ("nf4", "bf16", "fp32"):
        raise BadRequestError(f"unknown precision {precision!r}; use auto, nf4, bf16 or fp32")
    return precision


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint (``trainer_state.json`` is written last, so a half-saved one is skipped)."""
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def progress_callback(progress: bool):
    """A Trainer callback drawing one tqdm bar with the running loss."""
    from tqdm import tqdm
    from transformers import TrainerCallback

    class Bar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="tune", unit="step",
                            disable=not progress, file=sys.stderr, dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    return Bar()


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def serving_llm(ref: ModelRef, fallback):
    """The LLM that answers the held-out questions: llama.cpp for a GGUF base (the backend that serves it
    by default, and ~10x faster than transformers on CPU), else the training model itself (``fallback``)."""
    if not ref.is_gguf:
        return fallback
    from ..engines.llamacpp import LlamaCppEngine
    from ..llm import LLM

    engine = LlamaCppEngine(ref, n_ctx=2048)
    engine.use_registry = False  # before: the base exactly; after: the adapter just trained
    return LLM(engine, system_prompt=ref.system_prompt)


def use_trained_adapter(llm, with_adapter, where: Path, ref: ModelRef) -> None:
    """Make the freshly trained adapter ``llm``'s default: on llama.cpp through its GGUF conversion (saved to
    ``where`` first), on transformers it is already in the model."""
    if llm.backend != "llamacpp":
        return
    from ..engines.llamacpp_lora import gguf_lora

    with_adapter.save_pretrained(str(where))
    llm.engine.adapter = llm.engine.loras.attach("tuned", str(where), gguf_lora(where, llm.engine.llm.metadata))


def evaluate_all(llm, model, tokenizer, facts, heldout_loss) -> dict[str, Any]:
    model.eval()
    out: dict[str, Any] = {"perplexity_general": round(eval_mod.perplexity(model, tokenizer), 3)}
    if facts:
        r = eval_mod.knowledge_recall(llm, facts, progress=True)
        out.update(recall=r["recall"], hits=r["hits"], n=r["n"], answers=[x["answer"] for x in r["rows"]],
                   backend=llm.backend)
        g = eval_mod.knowledge_recall(llm, eval_mod.GENERAL_QUESTIONS)
        out.update(general_recall=g["recall"], general_answers=[x["answer"] for x in g["rows"]])
    if heldout_loss is not None:
        out["heldout_loss"] = heldout_loss()
    return out


def tune(data: str | Path, out: str | Path, *, model: str | None = None, config: TuneConfig | None = None,
         eval_facts: str | Path | None = None, resume: bool = False, checkpoints: str | Path | None = None,
         device: str | None = None, progress: bool = True, register: bool = True) -> dict[str, Any]:
    """Train a LoRA adapter on ``data`` and write it to ``out`` (PEFT format + manifest), atomically.

    Args:
        data: chat (``{"messages": [...]}``) or prompt/completion JSONL.
        out: adapter directory to write (replaced atomically if it exists).
        model: base model (default: ``$PHIKIT_MODEL`` or the embedded SmolLM2).
        config: :class:`TuneConfig`.
        eval_facts: held-out questions with expected keywords (:func:`phikit.tune.evaluate.read_facts`);
            recall is measured before and after training.
        resume: continue from the newest complete checkpoint in ``checkpoints``.
        checkpoints: checkpoint directory (default ``<out>.checkpoints``; removed after success).
        device: ``cuda`` or ``cpu``; None picks CUDA when available.
        register: record the adapter under its directory name for ``--adapter NAME``.

    Returns:
        The manifest written beside the adapter.

    Raises:
        BadRequestError: bad data or settings. TuneInterrupted: Ctrl-C (the last checkpoint stays usable).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, TrainingArguments, set_seed
    from transformers.utils import logging as hf_logging

    from ..engines.transformers import TransformersEngine
    from ..llm import LLM

    cfg = config or TuneConfig()
    cfg.check()
    out = Path(out).expanduser().resolve()
    examples = data_mod.read_examples(data)
    facts = eval_mod.read_facts(eval_facts) if eval_facts else []
    train_ex, held_ex = data_mod.split(examples, cfg.eval_split, cfg.seed)
    ref = resolve(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.precision, device, ref)
    ckpt_dir = Path(checkpoints).expanduser().resolve() if checkpoints else out.with_name(out.name + ".checkpoints")
    run = {"data_sha256": data_mod.file_hash(data), "config": dataclasses.asdict(cfg), "model": ref.source}
    resume_from = None
    if resume:
        resume_from = last_checkpoint(ckpt_dir)
        if resume_from is None:
            raise BadRequestError(f"nothing to resume: no complete checkpoint in {ckpt_dir}")
        old = json.loads((ckpt_dir / "run.json").read_text()) if (ckpt_dir / "run.json").is_file() else {}
        if old and old != run:
            raise BadRequestError(f"{ckpt_dir} was made with other data, model or settings; start afresh without --resume")

    set_seed(cfg.seed)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # one bar (ours) instead of loading bars
    started = time.perf_counter()
    base, tok = load_base(ref, precision, device)
    engine = TransformersEngine(ref, precision=precision, device=device, model=base, tokenizer=tok)
    engine.use_registry = False  # the model under training, never an enabled adapter from the registry
    llm = serving_llm(ref, LLM(engine, system_prompt=ref.system_prompt)) if facts else None
    build = lambda exs: data_mod.build_dataset(exs, tok, engine.chat_template, engine.special_tokens,  # noqa: E731
                                               cfg.max_length, ref.system_prompt)
    train_rows = build(train_ex)
    held_rows = build(held_ex) if held_ex else []
    weights_sha = adapter_mod.weights_hash(ref)

    targets = target_modules_for(base, cfg.target_modules)
    n_layers = base.config.num_hidden_layers
    if cfg.first_layer >= n_layers:
        raise BadRequestError(f"--first-layer {cfg.first_layer} is past the model's last layer ({n_layers - 1})")
    layers = list(range(cfg.first_layer, n_layers)) if cfg.first_layer > 0 else None
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      layers_to_transform=layers, task_type="CAUSAL_LM", bias="none")
    from .dropout import share_dropout
    from .packing import collate_groups, group_by_tokens, trainer_class

    example_rows = train_rows
    trainer_cls = trainer_class()  # logits only where there is a target, computed in chunks
    if cfg.pack_tokens:  # each dataset item is a step's worth of examples, up to pack_tokens tokens
        train_rows, collate, per_step = group_by_tokens(train_rows, cfg.pack_tokens), collate_groups, 1
    else:  # `batch_size` examples packed in one row
        collate, per_step = data_mod.pack, cfg.batch_size
    steps_per_epoch = math.ceil(len(train_rows) / (per_step * cfg.grad_accum))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.epochs)
    optim = "adamw_torch_fused" if device == "cpu" else "adamw_torch"  # fused: 2% of a CPU step; on CUDA it
    # added 6 MB of peak to a QLoRA step and no speed (docs/lora.md)
    args = TrainingArguments(**{  # cfg.extra: any other TrainingArguments, overriding these
        "output_dir": str(ckpt_dir), "per_device_train_batch_size": per_step,
        "per_device_eval_batch_size": cfg.batch_size, "prediction_loss_only": True,
        "gradient_accumulation_steps": cfg.grad_accum, "learning_rate": cfg.learning_rate, "max_steps": total_steps,
        "lr_scheduler_type": "linear", "warmup_steps": 0, "logging_steps": 1, "save_strategy": "steps",
        "save_steps": cfg.save_steps, "save_total_limit": 2, "report_to": [], "disable_tqdm": True, "seed": cfg.seed,
        "data_seed": cfg.seed, "bf16": precision in ("nf4", "bf16") and device == "cuda", "use_cpu": device == "cpu",
        "remove_unused_columns": False, "dataloader_num_workers": 0, "optim": optim, "eval_strategy": "no",
        **({"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
           if precision == "nf4" else {}),
        **cfg.extra,
    })

    with warnings.catch_warnings():  # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        with_adapter = get_peft_model(base, lora)
    if not args.gradient_checkpointing:  # q/k/v (and gate/up) draw one mask for their one input, as fused ones do
        share_dropout(with_adapter)  # (under checkpointing the held tensor cost 600 MB of GPU peak: docs/lora.md)
    from .preserve import loraplus_optimizer, projector_callback, resolve_recipe

    preserve, ratio = resolve_recipe(cfg, device)
    t_preserve = time.perf_counter()
    guard = projector_callback(with_adapter, preserve, build) if preserve else None
    preserve_s = time.perf_counter() - t_preserve
    trainer = trainer_cls(model=with_adapter, args=args, train_dataset=train_rows, data_collator=collate,
                          callbacks=[progress_callback(progress)] + ([guard] if guard else []),
                          optimizers=(loraplus_optimizer(with_adapter, ratio, args) if ratio > 1 else None, None))
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; our bar shows the loss
    held_items = group_by_tokens(held_rows, cfg.pack_tokens) if cfg.pack_tokens and held_rows else held_rows
    heldout_loss = (lambda: round(trainer.evaluate(held_items)["eval_loss"], 4)) if held_rows else None

    # Before: the adapter's B matrices start at zero, and disabling it is the base model exactly.
    with with_adapter.disable_adapter():
        before = evaluate_all(llm, with_adapter, tok, facts, heldout_loss)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    adapter_mod.write_json_atomic(ckpt_dir / "run.json", run)
    engine.model = with_adapter
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()  # peak of training, not of loading
    t0 = time.perf_counter()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        last = last_checkpoint(ckpt_dir)
        where = f"the last checkpoint is {last}; continue with --resume" if last else "no checkpoint was saved yet"
        raise TuneInterrupted(f"interrupted: {where}") from None
    train_s = time.perf_counter() - t0
    if facts:
        use_trained_adapter(llm, with_adapter, ckpt_dir / "final", ref)
    after = evaluate_all(llm, with_adapter, tok, facts, heldout_loss)

    trained_tokens = sum(len(r["input_ids"]) for r in example_rows) * total_steps / max(steps_per_epoch, 1)
    manifest = {
        "format": 1,
        "name": out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base": {"model": ref.name, "source": ref.source, "format": ref.format, "weights_sha256": weights_sha},
        "data": {"path": str(Path(data).resolve()), "sha256": run["data_sha256"], "examples": len(examples),
                 "train": len(example_rows), "heldout": len(held_rows),
                 "eval_facts": str(Path(eval_facts).resolve()) if eval_facts else None,
                 "eval_facts_sha256": data_mod.file_hash(eval_facts) if eval_facts else None},
        "config": {**dataclasses.asdict(cfg), "target_modules": targets, "precision": precision, "device": device,
                   "preserve": preserve, "loraplus_ratio": ratio},
        "training": {"steps": int(result.global_step), "train_loss": round(float(result.training_loss), 4),
                     "seconds": round(train_s, 1), "preserve_seconds": round(preserve_s, 1), "total_seconds": round(time.perf_counter() - started, 1),
                     "tokens": int(trained_tokens), "tokens_per_s": round(trained_tokens / max(train_s, 1e-9), 1),
                     "peak_memory_mb": round(peak_memory_mb(device), 1)},
        "eval": {"before": before, "after": after, "retention": eval_mod.retention(before, after)},
        "versions": versions(),
    }

    def write(tmp: Path) -> None:
        with_adapter.save_pretrained(str(tmp))
        (tmp / adapter_mod.MANIFEST).write_text(json.dumps(manifest, indent=2))

    adapter_mod.save_atomic(out, write)
    if register:
        adapter_mod.register(out.name, out)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return manifest
