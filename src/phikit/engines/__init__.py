"""Backends, loaded by name. Each module imports its heavy library only when chosen."""

from __future__ import annotations

import inspect

from ..errors import BadRequestError
from ..models import ModelRef
from .base import Done, Engine, Event, SamplingParams, TextDelta, Usage

BACKENDS = ("auto", "llamacpp", "transformers", "onnx", "fast", "openai")

__all__ = ["BACKENDS", "Done", "Engine", "Event", "SamplingParams", "TextDelta", "Usage", "load_engine"]


def load_engine(ref: ModelRef, backend: str = "auto", **opts) -> Engine:
    """Load ``ref`` on a backend.

    ``auto`` picks llama.cpp for GGUF files (fast on CPU), onnxruntime-genai for ONNX model directories
    (``phikit export onnx``), the CUDA-graph fast path for Phi-3-family checkpoints (Phi-4-mini) on a CUDA
    GPU when no option needs transformers (a device or attention choice), and transformers for
    other checkpoints.

    Args:
        ref: a resolved model.
        backend: ``auto`` | ``llamacpp`` | ``transformers`` | ``onnx`` | ``fast`` (CUDA only) | ``openai``.
        **opts: backend options (``precision``/``device`` for transformers, ``n_ctx``/``n_threads`` for llama.cpp).

    Raises:
        BadRequestError: unknown backend, or options the backend does not take.
    """
    if backend == "auto" and ref is not None:
        backend = "llamacpp" if ref.is_gguf else "onnx" if ref.format == "onnx" else "transformers"
        if backend == "transformers" and _fast_suits(ref, opts):
            backend = "fast"
            if opts.get("precision") in (None, "auto"):
                opts = {**opts, "precision": "nf4"}  # the seeds' CUDA default: 4-bit nf4, bf16 compute
    if backend == "llamacpp":
        from .llamacpp import LlamaCppEngine as cls
    elif backend == "transformers":
        from .transformers import TransformersEngine as cls
    elif backend == "onnx":  # a directory from `phikit export onnx` (engines/onnx.py)
        from .onnx import OnnxEngine as cls
    elif backend == "fast":  # Phi-3-family checkpoints on CUDA, CUDA-graph decoding (engines/fast)
        from .fast import FastEngine as cls
    elif backend == "openai":  # a remote OpenAI-compatible server; ``ref`` is the server's model id (or None)
        from .remote import OpenAIEngine as cls
    else:
        raise BadRequestError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    opts = {k: v for k, v in opts.items() if v is not None}
    if opts.get("adapter") == "none" and "adapter" not in inspect.signature(cls).parameters:
        del opts["adapter"]  # "none" is the base model, which a backend without adapters always gives
    unknown = sorted(set(opts) - set(inspect.signature(cls).parameters))
    if unknown:
        raise BadRequestError(f"backend {backend!r} does not take the option(s) {', '.join(unknown)}")
    return cls(ref, **opts)


def _fast_suits(ref: ModelRef, opts: dict) -> bool:
    """The fast backend is the default for a local Phi-3-family checkpoint on CUDA, unless an option asks
    for what only transformers does (``device``, ``attn``); LoRA adapters run on both."""
    import json
    from pathlib import Path

    if any(opts.get(k) is not None for k in ("device", "attn", "model", "tokenizer")):
        return False
    if opts.get("precision") not in (None, "auto", "bf16", "int4", "nf4"):
        return False
    config = Path(ref.source) / "config.json"
    try:
        if json.loads(config.read_text()).get("model_type") != "phi3":
            return False
    except (OSError, ValueError):
        return False
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()
