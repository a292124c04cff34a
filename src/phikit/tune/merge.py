"""Merge an adapter into its base model's weights (``phikit adapters merge``)."""

from __future__ import annotations

from pathlib import Path

from ..adapters import check_base, read_manifest, resolve_adapter, save_atomic


def merge_adapter(spec: str, out: str | Path) -> Path:
    """Merge an adapter into its base model's weights and save a transformers checkpoint at ``out`` atomically.

    Raises:
        AdapterError: the adapter is missing or corrupt, or its base model is not here.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..engines.transformers import gguf_to_checkpoint
    from ..models import local_snapshot, resolve

    _, path = resolve_adapter(spec)
    manifest = read_manifest(path)
    ref = resolve(manifest["base"]["source"] if manifest["base"]["format"] == "gguf" else manifest["base"]["model"])
    check_base(manifest, ref, str(path))
    src = gguf_to_checkpoint(Path(ref.source)) if ref.is_gguf else local_snapshot(ref)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32 if ref.is_gguf else torch.bfloat16)
    merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload()

    def write(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(src).save_pretrained(str(tmp))

    return save_atomic(Path(out), write)
