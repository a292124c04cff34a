"""Which attention kernels a GPU backend uses, chosen per device (``--attn`` overrides).

Phi-4-mini's model card: flash attention needs an Ampere or newer GPU (A100, A6000, H100); "If you want to run
the model on: NVIDIA V100 or earlier generation GPUs: call AutoModelForCausalLM.from_pretrained() with
attn_implementation="eager"". So ``auto`` is ``eager`` below compute capability 8.0, flash attention where
the ``flash_attn`` package is installed (Ampere and newer, 16-bit weights), else PyTorch's SDPA (which itself
picks its flash, memory-efficient or math kernel per device and shape).
"""

from __future__ import annotations

import importlib.util

from ..errors import BadRequestError

CHOICES = ("auto", "flash", "sdpa", "eager")
_HF_NAMES = {"flash": "flash_attention_2", "sdpa": "sdpa", "eager": "eager"}


def choose_attn(requested: str, device: str, precision: str) -> str:
    """transformers' ``attn_implementation`` for ``requested`` on ``device`` at ``precision``.

    Args:
        requested: ``auto`` | ``flash`` | ``sdpa`` | ``eager``.
        device: ``cuda`` or ``cpu``.
        precision: the weights' precision (flash attention takes 16-bit activations only: bf16 or nf4).

    Returns:
        ``flash_attention_2`` | ``sdpa`` | ``eager``.

    Raises:
        BadRequestError: an unknown choice, or ``flash`` where it cannot run (no CUDA, fp32, package missing).
    """
    if requested not in CHOICES:
        raise BadRequestError(f"unknown attention {requested!r}; use one of {', '.join(CHOICES)}")
    capability = _capability() if device == "cuda" else None
    sixteen_bit = precision in ("bf16", "nf4", "fp16")
    if requested == "flash":
        if capability is None or capability < (8, 0) or not sixteen_bit:
            raise BadRequestError("--attn flash needs an Ampere or newer GPU and 16-bit weights; use --attn sdpa")
        if importlib.util.find_spec("flash_attn") is None:
            raise BadRequestError("--attn flash needs the flash-attn package (pip install flash-attn); or use --attn sdpa")
        return _HF_NAMES["flash"]
    if requested != "auto":
        return _HF_NAMES[requested]
    if capability is not None and capability < (8, 0):
        return "eager"  # the model card's advice for V100 and earlier
    if capability is not None and sixteen_bit and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def _capability() -> tuple[int, int] | None:
    import torch

    return tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else None
