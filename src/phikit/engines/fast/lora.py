"""LoRA adapters on the fast path, unmerged and switchable per request without recapturing graphs.

Each adapted projection becomes ``y = base(x) + (x Aᵀ) Bᵀ`` with ``A`` [R, in] and ``B`` [out, R] held in
buffers of one fixed rank ``R``; the adapter's ``alpha / r`` scale is folded into ``B`` and ranks below ``R``
are zero-padded. A CUDA graph captured once reads those buffers at fixed addresses, so switching adapters
(or back to the base: all zeros) is a copy into them between requests — the idea of vLLM's and S-LoRA's
fixed-size LoRA slots, for one adapter at a time. The base weights (bf16, int4 or nf4) are never touched, so
a QLoRA adapter runs over the same nf4 base it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import PhikitError

TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")  # Phi-3's linear layers (phikit tune's default)


class LoraLinear(nn.Module):
    """A projection plus a low-rank delta: x [..., in] -> [..., out]."""

    def __init__(self, base: nn.Module, rank: int):
        super().__init__()
        self.base = base
        dev = next(base.parameters()).device
        dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        self.register_buffer("lora_a", torch.zeros(rank, base.in_features, dtype=dtype, device=dev))
        self.register_buffer("lora_b", torch.zeros(base.out_features, rank, dtype=dtype, device=dev))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = F.linear(F.linear(x.to(self.lora_a.dtype), self.lora_a), self.lora_b)
        return self.base(x) + delta.to(x.dtype)


def _projections(model) -> list[tuple[int, nn.Module, str]]:
    out = []
    for i, layer in enumerate(model.model.layers):
        out += [(i, layer.self_attn, n) for n in ("qkv_proj", "o_proj")] + [(i, layer.mlp, n) for n in ("gate_up_proj", "down_proj")]
    return out


def attach(model, rank: int) -> bool:
    """Wrap every Phi-3 projection in a :class:`LoraLinear` of ``rank`` (grown if an adapter needs more).

    Returns:
        True when modules changed (captured CUDA graphs must then be captured again).
    """
    changed = False
    for _, parent, name in _projections(model):
        mod = getattr(parent, name)
        if isinstance(mod, LoraLinear):
            if mod.lora_a.shape[0] >= rank:
                continue
            mod = mod.base
        setattr(parent, name, LoraLinear(mod, rank))
        changed = True
    return changed


def read_peft(path: str | Path, n_layer: int) -> tuple[int, dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]]:
    """A PEFT LoRA adapter as ``(rank, {(layer, module): (A [r, in], B·scale [out, r])})`` on the CPU.

    Raises:
        PhikitError: the adapter targets modules the fast path does not adapt, or its files are unreadable.
    """
    from safetensors.torch import load_file

    path = Path(path)
    try:
        cfg = json.loads((path / "adapter_config.json").read_text())
        tensors = load_file(str(path / "adapter_model.safetensors"), device="cpu")
    except (OSError, ValueError) as exc:
        raise PhikitError(f"could not read the adapter in {path}: {exc}") from None
    targets = cfg.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    other = sorted(set(targets) - set(TARGETS))
    if other:
        raise PhikitError(f"the fast backend applies LoRA to {', '.join(TARGETS)}; this adapter also adapts "
                          f"{', '.join(other)}: use --backend transformers")
    r = int(cfg["r"])
    scale = float(cfg.get("lora_alpha", r)) / r
    weights = {}
    for i in range(n_layer):
        for part, name in (("self_attn", "qkv_proj"), ("self_attn", "o_proj"), ("mlp", "gate_up_proj"), ("mlp", "down_proj")):
            stem = f"base_model.model.model.layers.{i}.{part}.{name}"
            a, b = tensors.get(f"{stem}.lora_A.weight"), tensors.get(f"{stem}.lora_B.weight")
            if a is not None and b is not None:
                weights[(i, name)] = (a.float(), b.float() * scale)
    if not weights:
        raise PhikitError(f"{path} has no LoRA weights for this model's layers")
    return r, weights


@torch.no_grad()
def apply(model, weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] | None) -> None:
    """Copy ``weights`` into the LoRA buffers in place (None: zeros, the base model exactly)."""
    for i, parent, name in _projections(model):
        mod = getattr(parent, name)
        if not isinstance(mod, LoraLinear):
            continue
        mod.lora_a.zero_()
        mod.lora_b.zero_()
        if weights and (i, name) in weights:
            a, b = weights[(i, name)]
            mod.lora_a[: a.shape[0]].copy_(a)
            mod.lora_b[:, : b.shape[1]].copy_(b)
