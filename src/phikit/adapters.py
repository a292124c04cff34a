"""Adapters on disk: PEFT format plus phikit's manifest, written atomically; a small registry for names.

An adapter directory is exactly what ``peft``'s ``save_pretrained`` writes (``adapter_config.json``,
``adapter_model.safetensors``; loadable by peft and by vLLM's LoRA serving) plus ``phikit_adapter.json``:
base model id and weights hash, data hash, config, training figures, eval scores, created time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cache import cache_root, file_sha256
from .errors import PhikitError
from .models import ModelRef

MANIFEST = "phikit_adapter.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(PhikitError):
    """An adapter is missing, corrupt, or made for another base model."""




def weights_files(ref: ModelRef) -> list[Path]:
    """The files that hold a model's weights: the GGUF file, or a checkpoint's safetensors/bin files."""
    if ref.is_gguf:
        return [Path(ref.source)]
    from .models import local_snapshot

    d = local_snapshot(ref)
    files = sorted([*d.glob("*.safetensors"), *d.glob("*.bin"), *d.glob("*.gguf")])
    if not files:
        raise AdapterError(f"no weight files in {d}")
    return files


def weights_hash(ref: ModelRef) -> str:
    """sha256 over the base model's weight files (each file's sha256, in name order).

    Hashing Phi-4-mini's 7.7 GB takes seconds, so results are cached by path, size and mtime in
    ``<cache>/hashes.json``.
    """

    store = cache_root() / "hashes.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    h = hashlib.sha256()
    changed = False
    for f in weights_files(ref):
        st = f.stat()
        key = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in known:
            known[key] = file_sha256(f)
            changed = True
        h.update(known[key].encode())
    if changed:
        store.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(store, known)
    return h.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file, fsync, rename; :func:`phikit.cache.atomic_write`)."""
    from .cache import atomic_write

    atomic_write(path, json.dumps(data, indent=2))


def save_atomic(out: Path, write: Callable[[Path], None]) -> Path:
    """Let ``write(tmp_dir)`` fill a temporary directory beside ``out``, then move it into place.

    A reader sees the old adapter or the new one, never a half-written one: the old directory is renamed
    aside first and removed only after the new one is in place; an interrupted ``write`` leaves ``out``
    untouched.
    """
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    old = None
    try:
        write(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def read_manifest(path: str | Path) -> dict:
    """Check an adapter directory and return its manifest.

    Raises:
        AdapterError: the directory, a PEFT file or the manifest is missing, or a file is unreadable.
    """
    d = Path(path)
    if not d.is_dir():
        raise AdapterError(f"adapter {str(path)!r} not found: no such directory or registered name "
                           f"(see `phikit adapters list`)")
    missing = [f for f in (*PEFT_FILES, MANIFEST) if not (d / f).is_file()]
    if missing:
        raise AdapterError(f"adapter {d} is incomplete or corrupt: missing {', '.join(missing)}")
    try:
        manifest = json.loads((d / MANIFEST).read_text())
        json.loads((d / "adapter_config.json").read_text())
        from safetensors import safe_open

        with safe_open(str(d / "adapter_model.safetensors"), "pt") as f:
            if not list(f.keys()):
                raise ValueError("no tensors")
    except Exception as exc:  # JSON or safetensors header errors
        raise AdapterError(f"adapter {d} is corrupt: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return manifest


def check_base(manifest: dict, ref: ModelRef, where: str) -> None:
    """Refuse an adapter trained on other weights than ``ref``'s.

    Raises:
        AdapterError: the weights hash differs.
    """
    want = (manifest.get("base") or {}).get("weights_sha256")
    have = weights_hash(ref)
    if want != have:
        trained_on = (manifest.get("base") or {}).get("model", "another model")
        raise AdapterError(f"adapter {where} was trained on {trained_on} (weights {str(want)[:12]}), not on "
                           f"{ref.name} (weights {have[:12]}); load it with --model {trained_on}")


# The registry: names -> adapter directories, the enabled one, and the enable history for rollback.


def registry_path() -> Path:
    return Path(os.environ.get("PHIKIT_ADAPTERS") or cache_root() / "adapters.json")


def read_registry() -> dict:
    try:
        reg = json.loads(registry_path().read_text())
    except (OSError, ValueError):
        reg = {}
    return {"adapters": reg.get("adapters", {}), "enabled": reg.get("enabled"), "history": reg.get("history", [])}


def write_registry(reg: dict) -> None:
    p = registry_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(p, reg)


def register(name: str, path: Path) -> None:
    """Record ``name`` -> ``path`` (replacing an earlier entry of that name)."""
    reg = read_registry()
    reg["adapters"][name] = str(Path(path).resolve())
    write_registry(reg)


def resolve_adapter(spec: str) -> tuple[str, Path]:
    """A registered name or a directory -> (name, directory).

    Raises:
        AdapterError: neither a registered name nor an adapter directory.
    """
    reg = read_registry()["adapters"]
    if spec in reg:
        return spec, Path(reg[spec])
    p = Path(spec).expanduser()
    if p.is_dir():
        return p.resolve().name, p.resolve()
    known = ", ".join(sorted(reg)) or "none registered"
    raise AdapterError(f"adapter {spec!r} not found: not a directory nor a registered name ({known})")


def enable_adapter(spec: str | None) -> str | None:
    """Make ``spec`` the default adapter (None: the base model), remembering the previous one for rollback.

    Raises:
        AdapterError: ``spec`` is not a valid adapter.
    """
    reg = read_registry()
    name = None
    if spec is not None:
        name, path = resolve_adapter(spec)
        read_manifest(path)
        reg["adapters"][name] = str(path)
    if reg["enabled"] != name:
        reg["history"] = [*reg["history"], reg["enabled"]][-20:]
    reg["enabled"] = name
    write_registry(reg)
    return name


def rollback_adapter() -> str | None:
    """Re-enable the previously enabled adapter (or the base model); returns what is enabled now."""
    reg = read_registry()
    while reg["history"]:
        prev = reg["history"].pop()
        if prev is None or prev in reg["adapters"]:
            reg["enabled"] = prev
            write_registry(reg)
            return prev
    reg["enabled"] = None
    write_registry(reg)
    return None


def unregister(name: str, *, delete: bool = False) -> Path:
    """Forget ``name`` (and with ``delete`` remove its directory); disables it if enabled.

    Raises:
        AdapterError: no adapter is registered under ``name``.
    """
    reg = read_registry()
    if name not in reg["adapters"]:
        raise AdapterError(f"no adapter named {name!r} is registered (see `phikit adapters list`)")
    path = Path(reg["adapters"].pop(name))
    if reg["enabled"] == name:
        reg["enabled"] = None
    reg["history"] = [h for h in reg["history"] if h != name]
    write_registry(reg)
    if delete:
        shutil.rmtree(path, ignore_errors=True)
    return path


