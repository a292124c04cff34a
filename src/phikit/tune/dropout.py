"""LoRA dropout with one mask per input tensor, as a fused projection has.

peft gives every adapted module its own ``nn.Dropout``, so on Llama-style models (SmolLM2) the q, k and v
projections draw three masks for the one normed hidden state they all read, and gate and up two more: 7 masks
a layer. Phi-3's fused ``qkv_proj`` and ``gate_up_proj`` draw one each, 4 a layer. On a 2-core CPU drawing the
masks was 17% of a ``phikit tune`` step (py-spy, docs/lora.md); :func:`share_dropout` makes the split projections
share a mask the way the fused ones do, so each input is dropped once. The rate (the seeds' 0.05) is unchanged.
``phikit tune`` uses it without activation checkpointing only: on CUDA under checkpointing it raised a Phi-4-mini
QLoRA step's peak by ~600 MB, and fused projections have nothing to share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SharedDropout(nn.Module):
    """``nn.Dropout(p)`` that returns the same dropped tensor for the same input tensor.

    Consecutive calls with one tensor object (q, k and v's LoRA on one hidden state) get one mask; a new tensor
    gets a new mask. Under activation checkpointing the recompute draws in the same order from the restored RNG
    state, so it sees the same masks as the forward. Eval mode (and ``p == 0``) is the identity.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (input, its dropped copy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        out = F.dropout(x, self.p, training=True)
        self._last = (x, out)
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}, shared by the modules that read one input"


def share_dropout(model: nn.Module, adapter: str = "default") -> int:
    """Give every LoRA module of ``model`` (peft-wrapped) one :class:`SharedDropout` of its rate.

    Args:
        model: a peft model whose LoRA layers hold ``lora_dropout[adapter]``.
        adapter: the adapter's name in peft.

    Returns:
        How many modules now share a dropout (0 when the rate is 0: peft's identity is kept).
    """
    shared: dict[float, SharedDropout] = {}
    n = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict) or adapter not in drops:
            continue
        old = drops[adapter]
        if isinstance(old, nn.Dropout) and old.p > 0:
            drops[adapter] = shared.setdefault(old.p, SharedDropout(old.p))
            n += 1
    return n
