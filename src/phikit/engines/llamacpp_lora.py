"""LoRA adapters on llama.cpp: a PEFT adapter converted to a GGUF LoRA once, applied per context at run time.

Conversion follows llama.cpp's ``convert_lora_to_gguf.py`` (ggml-org/llama.cpp), kept small: each PEFT
``lora_A`` / ``lora_B`` pair becomes ``<gguf tensor name>.lora_a`` / ``.lora_b`` (names from the ``gguf``
library's tensor-name map, the one ``convert_hf_to_gguf.py`` uses), with ``general.type = adapter``,
``adapter.type = lora`` and ``adapter.lora.alpha``; llama.cpp scales by ``alpha / rank`` as peft does. For
the LLaMA architecture ``convert_hf_to_gguf.py`` permutes the rows of ``q_proj`` and ``k_proj`` (rotary
halves interleaved), so ``lora_B`` of those modules gets the same row permutation (``W' = P W`` needs
``B' = P B``; ``A`` is unchanged).

At run time llama.cpp's adapter API (``llama_adapter_lora_init`` per model, ``llama_set_adapters_lora`` per
context) switches adapters without reloading the base. Adapters are per *context*: every sequence a
context evaluates in one step goes through the same adapter, so requests with different adapters cannot
share a batched decode step; they take turns.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

from ..adapters import AdapterError, check_base, read_manifest, resolve_adapter
from ..cache import cache_root, file_sha256
from ..models import ModelRef
from .adapting import AdapterSwitch

# Architectures whose GGUF conversion permutes q/k rows (convert_hf_to_gguf.py: LlamaModel.modify_tensors).
PERMUTED_QK = {"llama"}
PEFT_PREFIX = "base_model.model."


def _permute(rows, n_head: int, n_head_kv: int | None = None):
    """llama.cpp's q/k row permutation (``LlamaModel.permute`` in convert_hf_to_gguf.py) on a [out, ...] array."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def _header(meta: dict) -> dict:
    """Architecture, layer and head counts from a GGUF header (``llama_cpp.Llama.metadata``: strings)."""
    arch = meta["general.architecture"]
    n_head = int(meta[f"{arch}.attention.head_count"])
    return {"arch": arch, "n_layer": int(meta[f"{arch}.block_count"]), "n_head": n_head,
            "n_head_kv": int(meta.get(f"{arch}.attention.head_count_kv") or n_head)}


def convert_to_gguf(adapter_dir: str | Path, base_meta: dict, out: str | Path) -> Path:
    """Write a PEFT LoRA adapter as a GGUF LoRA file for the base model's architecture (atomically).

    Args:
        adapter_dir: a PEFT adapter (``adapter_config.json``, ``adapter_model.safetensors``).
        base_meta: the base GGUF's header keys (``llama_cpp.Llama.metadata``): architecture, layer and head counts.
        out: the ``.gguf`` file to write; written to a temporary file beside it and renamed into place.

    Tensors are written in float32 (an r=16 adapter of the 135M model: 4.9 M values, 20 MB).

    Raises:
        AdapterError: options llama.cpp cannot express (DoRA, ``modules_to_save``, per-module alpha), or a
            module name with no GGUF counterpart.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    d = Path(adapter_dir)
    cfg = json.loads((d / "adapter_config.json").read_text())
    if cfg.get("use_dora") or cfg.get("modules_to_save") or cfg.get("alpha_pattern"):
        raise AdapterError(f"adapter {d} uses DoRA, modules_to_save or per-module alpha, which llama.cpp's LoRA "
                           "cannot apply; use --backend transformers")
    alpha = float(cfg["lora_alpha"])
    if cfg.get("use_rslora"):  # peft scales by alpha/sqrt(r); llama.cpp by alpha/r
        alpha *= float(cfg["r"]) ** 0.5
    h = _header(base_meta)
    arch = next((a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == h["arch"]), None)
    if arch is None:
        raise AdapterError(f"the gguf library does not know the base model's architecture {h['arch']!r}")
    names = gguf.get_tensor_name_map(arch, h["n_layer"])
    tensors = load_file(str(d / "adapter_model.safetensors"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), h["arch"])
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    pairs = 0
    try:
        for key in sorted(tensors):
            if ".lora_A." not in key:
                continue
            module = key.split(".lora_A.")[0].removeprefix(PEFT_PREFIX)
            a = tensors[key].astype(np.float32)  # [r, in]
            b = tensors[key.replace(".lora_A.", ".lora_B.")].astype(np.float32)  # [out, r]
            name = names.get_name(module + ".weight", try_suffixes=(".weight",))
            if name is None:
                raise AdapterError(f"adapter {d}: no {h['arch']} GGUF tensor for module {module!r}")
            if h["arch"] in PERMUTED_QK and module.endswith("q_proj"):
                b = _permute(b, h["n_head"], h["n_head"])
            elif h["arch"] in PERMUTED_QK and module.endswith("k_proj"):
                b = _permute(b, h["n_head"], h["n_head_kv"])
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
            pairs += 1
        if not pairs:
            raise AdapterError(f"adapter {d} holds no LoRA tensors")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out


def gguf_lora(adapter_dir: str | Path, base_meta: dict) -> Path:
    """The GGUF LoRA for a PEFT adapter, converted on first use and cached by content.

    The cache key is the sha256 of the adapter's config and weights plus the base's architecture, so a
    retrained adapter under the same name gets a new file: ``<cache>/lora-gguf/<key>.gguf``.
    """
    import hashlib

    d = Path(adapter_dir)
    key = hashlib.sha256()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        key.update(file_sha256(d / f).encode())
    key.update(json.dumps(_header(base_meta), sort_keys=True).encode())
    target = cache_root() / "lora-gguf" / f"{key.hexdigest()[:24]}.gguf"
    if not target.is_file():
        convert_to_gguf(d, base_meta, target)
    return target


class LlamaLoras:
    """The adapters loaded into one llama.cpp model, and the one set on its context.

    Args:
        llm: a ``llama_cpp.Llama``.
        ref: its model (for the base weights check).
    """

    def __init__(self, llm, ref: ModelRef):
        self.llm, self.ref = llm, ref
        self.loaded: dict[str, tuple[str, ctypes.c_void_p]] = {}  # name -> (directory, llama_adapter_lora *)
        self.active: str | None = None

    def load(self, spec: str) -> str:
        """Load an adapter (registered name or PEFT directory) if not loaded yet; return its name.

        Checks the folder and base weights hash first, converts to GGUF once (cached), then
        ``llama_adapter_lora_init``. Nothing changes on failure: the base keeps serving.

        Raises:
            AdapterError: missing, corrupt, made for another base, or rejected by llama.cpp.
        """
        name, path = resolve_adapter(spec)
        if name in self.loaded and self.loaded[name][0] == str(path):
            return name
        check_base(read_manifest(path), self.ref, name)
        try:
            lora_file = gguf_lora(path, self.llm.metadata)
        except (OSError, ValueError, KeyError) as exc:
            raise AdapterError(f"adapter {name} could not be converted for llama.cpp: {exc}") from None
        return self.attach(name, str(path), lora_file)

    def attach(self, name: str, key: str, lora_file: str | Path) -> str:
        """Load a GGUF LoRA file under ``name`` (``key``: where it came from), replacing one of that name.

        Raises:
            AdapterError: llama.cpp rejected the file (shapes or architecture of another model).
        """
        import llama_cpp

        handle = llama_cpp.llama_adapter_lora_init(self.llm._model.model, str(lora_file).encode())
        if not handle:
            raise AdapterError(f"llama.cpp could not load adapter {name} ({lora_file}): tensor shapes or "
                               "architecture do not match the base model")
        if name in self.loaded:  # same name, new directory: replace the old one
            if self.active == name:
                self.set(None)
            llama_cpp.llama_adapter_lora_free(self.loaded[name][1])
        self.loaded[name] = (key, handle)
        return name

    def set(self, name: str | None) -> bool:
        """Apply adapter ``name`` (scale 1) to the context, or none for the base; True if this changed it.

        Raises:
            PhikitError: llama.cpp refused (an adapter made for another model).
        """
        if name == self.active:
            return False
        self.apply(self.llm._ctx.ctx, name)
        self.active = name
        return True

    def apply(self, ctx, name: str | None) -> None:
        """Apply loaded adapter ``name`` (scale 1), or none (None: the base), to llama.cpp context ``ctx``: the
        model's own (:meth:`set`) or another on the same model (the batcher's), with ``llama_set_adapters_lora``.

        Raises:
            PhikitError: llama.cpp refused (an adapter made for another model).
        """
        import llama_cpp

        from ..errors import PhikitError

        if name is None:
            rc = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.loaded[name][1])
            rc = llama_cpp.llama_set_adapters_lora(ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        if rc:
            raise PhikitError(f"llama.cpp could not apply adapter {name} (error {rc})")


class LlamaCppAdapters(AdapterSwitch):
    """Mixin for :class:`phikit.engines.llamacpp.LlamaCppEngine`: ``adapter=`` per request or at load.

    Switching adapters drops the prefix cache (its KV was computed through the other adapter), so the
    next prompt is prefilled afresh; requests with the same adapter keep reusing it.
    """

    loras: LlamaLoras | None = None

    def init_loras(self, ref: ModelRef, adapter: str | None) -> None:
        """Call at the end of ``__init__``, once ``self.llm`` is loaded.

        Raises:
            AdapterError: ``adapter`` is missing, corrupt or made for another base model.
        """
        self.loras = LlamaLoras(self.llm, ref)
        self.init_adapters(adapter, ref)

    def load_adapter(self, spec: str) -> str:
        """Load a LoRA adapter (registered name or PEFT directory) into the model once; return its name."""
        return self.loras.load(spec)

    def activate(self, name: str | None) -> None:
        """Set adapter ``name`` (None: the base) on the context; a change invalidates the prefix cache."""
        if self.loras.set(name):
            self._slot = []

    def generate(self, messages, params, *, tools=None, adapter: str | None = None):
        """As :meth:`LocalEngine.generate`, through ``adapter`` (a name, a directory, or ``"none"`` for the base).

        Raises:
            AdapterError: the adapter is missing, corrupt or made for another base (the base keeps serving).
        """
        name = self.pick_adapter(adapter)
        events = super().generate(messages, params, tools=tools)
        return self.through(name, events) if self.loras.loaded else events
