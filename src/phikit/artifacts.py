"""Exported artifacts: a model (and optionally a LoRA adapter) -> a GGUF file or an ONNX model directory, with
a manifest and, by default, a parity report against the transformers reference next to it.

``phikit export gguf`` and ``phikit export onnx`` call :func:`export_gguf` and :func:`export_onnx`. The writers
themselves live in :mod:`phikit.export` (``gguf`` requantize / llama.cpp k-quants, onnxruntime-genai's model
builder, the manifest); this module finds the source weights:

- a GGUF source (the embedded model, any ``.gguf``) goes to GGUF directly; to ONNX through the transformers
  checkpoint the transformers backend already caches for it (``gguf_to_checkpoint``: fp32, dequantized once);
- a transformers checkpoint goes to ONNX directly;
- an adapter is merged into its base first (:func:`phikit.tune.merge.merge_adapter`) and the merged
  checkpoint exported (ONNX only: phikit has no transformers-to-GGUF converter).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from .errors import BadRequestError

ONNX_CACHE_PRECISION = "fp32"


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _checkpoint_sha256(path: Path) -> str:
    """sha256 of a checkpoint directory's weights: the files' hashes, in name order, hashed together."""
    import hashlib

    from .cache import cached_sha256

    files = sorted([*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.gguf")])
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{cached_sha256(f)}\n".encode())
    return h.hexdigest()


def _source_info(model: str | None):
    """(ModelRef, {"model", "path", "sha256", "format"}) of the weights ``model`` names.

    Raises:
        ModelNotFoundError: as :func:`phikit.models.resolve`.
        BadRequestError: an ONNX directory as the source (it is already an export).
    """
    from .cache import cached_sha256
    from .models import local_snapshot, resolve

    ref = resolve(model)
    if ref.format == "onnx":
        raise BadRequestError(f"{ref.source} is already an ONNX export; export from a GGUF file or a checkpoint")
    path = Path(ref.source) if ref.is_gguf else local_snapshot(ref)
    sha = cached_sha256(path) if ref.is_gguf else _checkpoint_sha256(path)
    return ref, {"model": ref.name, "path": str(path), "format": ref.format, "sha256": sha}


def _adapter_info(adapter: str) -> dict:
    from .adapters import resolve_adapter

    name, path = resolve_adapter(adapter)
    return {"name": name, "path": str(path), "sha256": _checkpoint_sha256(Path(path))}


def record_parity(artifact: str | Path, reference: str, *, prompts: str | None = None, tokens: int = 32,
                  limit: int | None = None) -> dict:
    """Run :func:`phikit.parity.run_parity` of an exported ``artifact`` against ``transformers:<reference>``,
    write ``parity.json``/``parity.md`` next to it (inside an ONNX directory, ``<file>.parity.*`` beside a
    GGUF) and record the summary in its manifest.

    Returns:
        The manifest's ``parity`` entry: ``{"passed", "tier", "failures", "summary", "report"}``.

    Raises:
        BadRequestError: ``artifact`` has no manifest (not written by phikit's export).
    """
    from .export.manifest import read_manifest, write_manifest
    from .parity import run_parity
    from .parity.report import write_reports

    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    if manifest is None:
        raise BadRequestError(f"{artifact} has no phikit manifest; export it with phikit export first")
    kind = "onnx" if manifest["format"] == "onnx" else "llamacpp"
    _note(f"parity against transformers:{reference} ({tokens} tokens per prompt)")
    report = run_parity(f"transformers:{reference}", f"{kind}:{artifact}", prompts=prompts, tokens=tokens,
                        limit=limit)
    prefix = artifact / "parity" if artifact.is_dir() else artifact.with_name(artifact.name + ".parity")
    js, md = write_reports(report, prefix)
    doc = {"passed": report.passed, "tier": report.tier, "failures": report.failures, "summary": report.summary,
           "reference": f"transformers:{reference}", "report": [js.name, md.name]}
    write_manifest(artifact, format=manifest["format"], type=manifest["type"], source=manifest["source"],
                   adapter=manifest["adapter"], parity=doc)
    return doc


def export_onnx(model: str | None, out: str | Path, *, precision: str = "fp32", adapter: str | None = None,
                parity: bool = True, parity_prompts: str | None = None, parity_tokens: int = 32,
                parity_limit: int | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Export ``model`` (with ``adapter`` merged in) as an onnxruntime-genai directory ``out``.

    Returns:
        (``out``, the manifest written inside it as ``phikit-manifest.json``).

    Raises:
        BadRequestError: an ONNX source, an unsupported precision or architecture.
        ModelNotFoundError, AdapterError: the model or adapter is not there.
        PhikitError: the builder failed.
    """
    from .engines.transformers import gguf_to_checkpoint
    from .export.manifest import read_manifest, write_manifest
    from .export.onnx import build_onnx, check_precision

    check_precision(precision)
    ref, source = _source_info(model)
    out = Path(out).expanduser()
    adapter_doc = _adapter_info(adapter) if adapter else None
    tmp = None
    try:
        if adapter:
            from .tune.merge import merge_adapter

            tmp = Path(tempfile.mkdtemp(prefix="phikit-merge-"))
            checkpoint = merge_adapter(adapter, tmp / "merged")
        else:
            checkpoint = gguf_to_checkpoint(Path(ref.source)) if ref.is_gguf else Path(source["path"])
        build_onnx(checkpoint, out, precision, progress=progress)
        write_manifest(out, format="onnx", type=precision, source=source, adapter=adapter_doc)
        if parity:  # against the weights exported: the merged checkpoint when there is an adapter
            record_parity(out, str(checkpoint) if adapter else (model or ref.name), prompts=parity_prompts,
                          tokens=parity_tokens, limit=parity_limit)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return out, read_manifest(out)


def export_gguf(model: str | None, out: str | Path, *, type: str = "f16", adapter: str | None = None,
                parity: bool = True, parity_prompts: str | None = None, parity_tokens: int = 32,
                parity_limit: int | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Export ``model`` as a GGUF file ``out`` (``f16``, ``q8_0`` or a llama.cpp k-quant such as ``q4_k_m``).

    Returns:
        (``out``, the manifest written beside it as ``<out>.manifest.json``).

    Raises:
        BadRequestError: a source that is not GGUF, an adapter (not supported for GGUF yet), an unknown type.
        PhikitError: the writer failed.
    """
    from .export.gguf import write_gguf
    from .export.manifest import read_manifest, write_manifest

    if adapter:
        raise BadRequestError(
            "GGUF export with --adapter is not supported yet (phikit has no transformers-to-GGUF converter); "
            "export the merged model to ONNX (phikit export onnx --adapter ...) or serve the adapter with "
            "--backend transformers"
        )
    ref, source = _source_info(model)
    if not ref.is_gguf:
        raise BadRequestError(f"GGUF export needs a GGUF source; {ref.source} is a transformers checkpoint "
                              "(convert it with llama.cpp's convert_hf_to_gguf.py)")
    out = Path(out).expanduser()
    write_gguf(ref.source, out, type, progress=progress)
    write_manifest(out, format="gguf", type=type, source=source)
    if parity:
        record_parity(out, model or ref.name, prompts=parity_prompts, tokens=parity_tokens, limit=parity_limit)
    return out, read_manifest(out)


def cached_onnx(model: str | None, precision: str = ONNX_CACHE_PRECISION) -> Path:
    """An ONNX export of ``model`` in phikit's cache (written once, keyed by the source's sha256), for running
    a registry model or GGUF file on ``--backend onnx`` (``phikit bench``) without exporting by hand."""
    from .cache import cache_root

    ref, source = _source_info(model)
    target = cache_root() / "onnx-genai" / f"{source['sha256'][:24]}-{precision}"
    if not (target / "genai_config.json").is_file():
        _note(f"exporting {ref.name} to ONNX {precision} once (cached in {target})")
        export_onnx(model, target, precision=precision, parity=False, progress=False)
    return target
