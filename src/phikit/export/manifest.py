"""The manifest written next to every exported artifact: where its weights came from and what made it.

A GGUF file ``model.gguf`` gets ``model.gguf.manifest.json`` beside it; an ONNX model directory gets
``phikit-manifest.json`` inside it (the directory is the artifact, and it travels whole). Both are JSON:

    {"artifact": ..., "format": "gguf" | "onnx", "type": "f16" | "q4_k_m" | "fp32" | "int4" | ...,
     "source": {"model": ..., "path": ..., "sha256": ...}, "adapter": null | {"name", "path", "sha256"},
     "tools": {"phikit": ..., "gguf": ..., "llama-cpp-python": ..., "onnxruntime-genai": ..., ...},
     "created": ISO-8601 UTC, "parity": null | the parity report's summary}

Written with :func:`phikit.cache.atomic_write`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..cache import atomic_write

TOOLS = ("phikit", "torch", "transformers", "gguf", "llama-cpp-python", "onnx", "onnx-ir", "onnxruntime",
         "onnxruntime-genai", "peft")


def tool_versions() -> dict[str, str]:
    """Installed versions of the packages that read or write exported artifacts (missing ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in TOOLS:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def manifest_path(artifact: str | Path) -> Path:
    """Where ``artifact``'s manifest lives: inside a directory, beside a file."""
    artifact = Path(artifact)
    return artifact / "phikit-manifest.json" if artifact.is_dir() else artifact.with_name(artifact.name + ".manifest.json")


def write_manifest(artifact: str | Path, *, format: str, type: str, source: dict, adapter: dict | None = None,
                   parity: dict | None = None) -> Path:
    """Write ``artifact``'s manifest atomically and return its path.

    Args:
        artifact: the exported file or directory (must exist).
        format: ``"gguf"`` or ``"onnx"``.
        type: the weights' encoding (``f16``, ``q8_0``, ``q4_k_m``, ``fp32``, ``int4``).
        source: ``{"model", "path", "sha256"}`` of the weights exported (sha256 of the file, or of the
            safetensors for a checkpoint directory).
        adapter: ``{"name", "path", "sha256"}`` of a LoRA adapter merged in, or None.
        parity: the parity report's summary (``phikit.parity``), or None when parity was not run.
    """
    path = manifest_path(artifact)
    doc = {
        "artifact": Path(artifact).name,
        "format": format,
        "type": type,
        "source": source,
        "adapter": adapter,
        "tools": tool_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "parity": parity,
    }
    atomic_write(path, json.dumps(doc, indent=2) + "\n")
    return path


def read_manifest(artifact: str | Path) -> dict | None:
    """``artifact``'s manifest, or None when it has none (or it is unreadable)."""
    try:
        return json.loads(manifest_path(artifact).read_text())
    except (OSError, ValueError):
        return None
