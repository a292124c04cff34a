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
    (``phikit export onnx``) and transformers for checkpoints.

    Args:
        ref: a resolved model.
        backend: ``auto`` | ``llamacpp`` | ``transformers`` | ``onnx`` | ``fast`` (CUDA only) | ``openai``.
        **opts: backend options (``precision``/``device`` for transformers, ``n_ctx``/``n_threads`` for llama.cpp).

    Raises:
        BadRequestError: unknown backend, or options the backend does not take.
    """
    if backend == "auto" and ref is not None:
        backend = "llamacpp" if ref.is_gguf else "onnx" if ref.format == "onnx" else "transformers"
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
    unknown = sorted(set(opts) - set(inspect.signature(cls).parameters))
    if unknown:
        raise BadRequestError(f"backend {backend!r} does not take the option(s) {', '.join(unknown)}")
    return cls(ref, **opts)
