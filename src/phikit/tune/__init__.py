"""LoRA / QLoRA knowledge injection: ``phikit tune``, adapters, knowledge evaluation (see docs/lora.md).

Heavy libraries (torch, peft, transformers) are imported inside the functions that need them.
"""

from ..adapters import AdapterError

__all__ = ["AdapterError"]
