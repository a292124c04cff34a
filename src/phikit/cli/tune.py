"""``phikit tune``, ``phikit adapters list|show|enable|disable|rollback|remove|merge`` and ``phikit eval knowledge``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import app
from .kb import eval_app

adapters_app = typer.Typer(help="LoRA adapters trained with phikit tune: list, enable, disable, roll back.",
                           no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def print_report(manifest: dict) -> None:
    """The before/after table on stdout (recall, held-out loss, general perplexity); training figures on stderr."""
    b, a = manifest["eval"]["before"], manifest["eval"]["after"]
    t = manifest["training"]
    rows = []
    if "recall" in b:
        rows.append(("held-out recall", f"{_pct(b['recall'])} ({b['hits']}/{b['n']})", f"{_pct(a['recall'])} ({a['hits']}/{a['n']})"))
    if "heldout_loss" in b:
        rows.append(("held-out loss", f"{b['heldout_loss']:.3f}", f"{a['heldout_loss']:.3f}"))
    if "general_recall" in b:
        rows.append(("general questions", _pct(b["general_recall"]), _pct(a["general_recall"])))
    rows.append(("general perplexity", f"{b['perplexity_general']:.2f}", f"{a['perplexity_general']:.2f}"))
    print(f"{'':22}{'before':>16}{'after':>16}")
    for name, x, y in rows:
        print(f"{name:22}{x:>16}{y:>16}")
    kept = manifest["eval"].get("retention")
    if kept:
        print(f"retention {'kept' if kept['ok'] else 'LOST: ' + kept['why']} (perplexity x{kept['ppl_ratio']:.2f}, "
              f"general questions {-kept['general_drop']:+.0%})" + (f" · recall on {b['backend']}" if "backend" in b else ""))
    setup = f" (+{t['preserve_seconds']:.0f} s for --preserve)" if t.get("preserve_seconds", 0) >= 0.5 else ""
    print(f"adapter {manifest['name']} · {t['steps']} steps · loss {t['train_loss']:.3f} · {t['seconds']:.0f} s "
          f"training{setup} · {t['tokens_per_s']:.0f} tokens/s · peak {t['peak_memory_mb']:.0f} MB", file=sys.stderr)


@app.command()
def tune(
    data: Annotated[str, typer.Argument(help="Chat JSONL ({\"messages\": [...]}), prompt/completion JSONL, and/or plain-text lines ({\"text\": ...}, loss on every token).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Adapter directory to write (registered under its name).")],
    eval_facts: Annotated[Optional[str], typer.Option("--eval", help="Held-out questions JSONL {question, expected}: recall before and after.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model (default: the embedded one).")] = None,
    r: Annotated[int, typer.Option("--rank", "-r", help="LoRA rank.")] = 16,
    alpha: Annotated[int, typer.Option("--alpha", help="LoRA alpha (scale = alpha / rank).")] = 32,
    dropout: Annotated[float, typer.Option("--dropout", help="LoRA dropout.")] = 0.05,
    target_modules: Annotated[Optional[str], typer.Option("--target-modules", help="Comma-separated module names (default per architecture).")] = None,
    first_layer: Annotated[int, typer.Option("--first-layer", help="Adapt only decoder layers from this index on (faster: backward stops there). 0: all.")] = 0,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 2e-3,
    epochs: Annotated[float, typer.Option("--epochs", help="Passes over the training split (ignored with --max-steps).")] = 2.0,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop after N steps (overrides --epochs).")] = -1,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Examples per step, packed padding-free.")] = 4,
    pack_tokens: Annotated[int, typer.Option("--pack-tokens", help="Fill each step with examples up to this many tokens (full-sequence packing, chunked loss; fast QLoRA on a GPU). 0: --batch-size examples per step.")] = 0,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Steps of gradient accumulation per optimizer step.")] = 1,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per example.")] = 1024,
    seed: Annotated[int, typer.Option("--seed", help="Seed for data order, held-out split and adapter init.")] = 0,
    preserve: Annotated[Optional[float], typer.Option("--preserve", help="Keep LoRA's A off this share of everyday text's input energy, so general answers and perplexity stay the base's (0: off; default 0.95 on CPU, off on CUDA).")] = None,
    loraplus_ratio: Annotated[Optional[float], typer.Option("--loraplus-ratio", help="LoRA+: B learns this many times faster than A (1: off; default 4 on CPU, off on CUDA).")] = None,
    eval_split: Annotated[float, typer.Option("--eval-split", help="Fraction of chats held out for eval loss.")] = 0.0,
    save_steps: Annotated[int, typer.Option("--save-steps", help="Checkpoint every N steps.")] = 25,
    precision: Annotated[str, typer.Option("--precision", help="auto (nf4 on CUDA) | nf4 | bf16 | fp32")] = "auto",
    device: Annotated[Optional[str], typer.Option("--device", help="cuda | cpu (default: CUDA when present)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    checkpoints: Annotated[Optional[str], typer.Option("--checkpoints", help="Checkpoint folder (default <out>.checkpoints).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Teach the model facts with a LoRA adapter (QLoRA on CUDA); prints held-out scores before and after."""
    from ..tune.train import TuneConfig, TuneInterrupted
    from ..tune.train import tune as run_tune

    cfg = TuneConfig(r=r, alpha=alpha, dropout=dropout, learning_rate=lr, epochs=epochs, max_steps=max_steps,
                     batch_size=batch_size, pack_tokens=pack_tokens, grad_accum=grad_accum, max_length=max_length, seed=seed,
                     eval_split=eval_split, save_steps=save_steps, precision=precision,
                     target_modules=[t.strip() for t in target_modules.split(",") if t.strip()] if target_modules else None,
                     first_layer=first_layer, preserve=preserve, loraplus_ratio=loraplus_ratio)
    cfg.check()  # a bad flag fails before anything loads
    try:
        manifest = run_tune(data, out, model=model, config=cfg, eval_facts=eval_facts, resume=resume,
                            checkpoints=checkpoints, device=device, progress=sys.stderr.isatty())
    except TuneInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        raise SystemExit(130) from None
    if as_json:
        print(json.dumps(manifest))
    else:
        print_report(manifest)
    print(f"wrote {Path(out).resolve()} · use it with: phikit ask --adapter {manifest['name']} \"...\"", file=sys.stderr)


@adapters_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """Registered adapters, the enabled one marked."""
    from ..adapters import read_registry

    reg = read_registry()
    if as_json:
        print(json.dumps(reg))
        return
    if not reg["adapters"]:
        print("no adapters registered (train one with phikit tune DATA --out NAME)", file=sys.stderr)
    for name, path in sorted(reg["adapters"].items()):
        print(f"{'*' if name == reg['enabled'] else ' '} {name}\t{path}")


@adapters_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Registered name or adapter directory.")]) -> None:
    """An adapter's manifest: base model, data hash, config, training figures, eval scores."""
    from ..adapters import read_manifest, resolve_adapter

    _, path = resolve_adapter(name)
    print(json.dumps(read_manifest(path), indent=2))


@adapters_app.command("enable")
def enable(name: Annotated[str, typer.Argument(help="Registered name or adapter directory.")]) -> None:
    """Apply this adapter to every request that names none (a running server follows, no restart)."""
    from ..adapters import enable_adapter

    enable_adapter(name)
    print(f"enabled {name}", file=sys.stderr)


@adapters_app.command("disable")
def disable() -> None:
    """Back to the base model (no reload; a running server follows on its next request)."""
    from ..adapters import enable_adapter

    enable_adapter(None)
    print("adapters disabled: the base model answers", file=sys.stderr)


@adapters_app.command("rollback")
def rollback() -> None:
    """Re-enable the adapter that was enabled before the current one (or the base model)."""
    from ..adapters import rollback_adapter

    now = rollback_adapter()
    print(f"rolled back to {now or 'the base model'}", file=sys.stderr)


@adapters_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="Registered name.")],
           delete: Annotated[bool, typer.Option("--delete", help="Also delete the adapter's files.")] = False) -> None:
    """Forget a registered adapter (disabling it if enabled)."""
    from ..adapters import unregister

    path = unregister(name, delete=delete)
    print(f"removed {name}" + (f" and deleted {path}" if delete else f" (files kept in {path})"), file=sys.stderr)


@adapters_app.command("merge")
def merge(name: Annotated[str, typer.Argument(help="Registered name or adapter directory.")],
          out: Annotated[str, typer.Option("--out", "-o", help="Directory for the merged checkpoint.")]) -> None:
    """Write base + adapter merged into one transformers checkpoint (atomically)."""
    from ..tune.merge import merge_adapter

    print(f"wrote {merge_adapter(name, out)}", file=sys.stderr)


@eval_app.command("knowledge")
def eval_knowledge(
    facts: Annotated[str, typer.Argument(help="JSONL: {question, expected: [keywords]} (held-out paraphrases).")],
    adapter: Annotated[Optional[str], typer.Option("--adapter", help="Registered name or adapter directory.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model (default: the adapter's base, else the embedded one).")] = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="auto (llama.cpp for GGUF) | llamacpp | transformers")] = "auto",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most tokens per answer.")] = 48,
    as_json: JsonOpt = False,
) -> None:
    """Fact recall without and with the adapter; with --adapter, exit 1 if recall drifted below the stored score."""
    from ..tune.evaluate import check_drift

    report = check_drift(facts, adapter=adapter, model=model, backend=backend, max_new_tokens=max_tokens,
                         progress=sys.stderr.isatty())
    if as_json:
        print(json.dumps(report))
    else:
        print(f"{'':18}{'base':>10}{'adapter':>10}{'stored':>10}")
        print(f"{'recall':18}{_pct(report['base']['recall']):>10}{_pct((report.get('adapter') or {}).get('recall')):>10}"
              f"{_pct(report.get('stored_recall')):>10}")
        print(f"{'general questions':18}{_pct(report['base'].get('general_recall')):>10}"
              f"{_pct((report.get('adapter') or {}).get('general_recall')):>10}")
        print(f"{'general ppl':18}{report['base']['perplexity_general']:>10.2f}"
              f"{(report.get('adapter') or {}).get('perplexity_general', float('nan')):>10.2f}")
    if report.get("drift"):
        print(f"drift: {report['drift']}", file=sys.stderr)
        raise SystemExit(1)
