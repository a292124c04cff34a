"""transformers backend: HF checkpoints (Phi-4-mini nf4/bf16 on CUDA, bf16/fp32 on CPU) and GGUF files.

The decode loop is gpt-fast's shape: :func:`prefill` and :func:`decode_one` are top-level functions with
shape comments, :func:`sample` picks the next token, and ``token_steps`` chains them. This is the backend
LoRA training and adapters use.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..cache import cache_root, cached_sha256, file_sha256  # noqa: F401 (file_sha256 re-exported)
from ..errors import BadRequestError, PhikitError
from ..models import ModelRef, local_snapshot
from .adapting import AdapterSwitch
from .base import SamplingParams
from .local import HFTokenizerEngine

PRECISIONS = ("auto", "nf4", "bf16", "fp32")


def note(message: str) -> None:
    """One-line notice on stderr (loading choices the user should know about)."""
    print(f"note: {message}", file=sys.stderr)


def pick_precision(precision: str, device: str, fmt: str) -> str:
    """Resolve ``auto`` and fall back from nf4 where bitsandbytes cannot run.

    ``auto`` is nf4 for checkpoints on CUDA (the seeds' recipe), bf16 for checkpoints on CPU and fp32 for
    the small dequantized GGUF models on CPU (fp32 matmuls are the fastest CPU path).

    Raises:
        BadRequestError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise BadRequestError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device == "cuda":
            return "nf4" if fmt == "hf" else "bf16"
        if fmt == "hf":
            note("no CUDA device: loading in bf16 on CPU (nf4 needs CUDA; --precision fp32 is faster if memory allows)")
            return "bf16"
        return "fp32"
    if precision == "nf4" and device != "cuda":
        note("nf4 needs CUDA and bitsandbytes; falling back to bf16 on CPU")
        return "bf16"
    return precision


def load_kwargs(precision: str, device: str, attn: str = "auto") -> dict:
    """``from_pretrained`` keyword arguments for a precision: nf4 exactly as the seeds describe, and the
    attention kernels for the device (:func:`phikit.engines.attention.choose_attn`).

    Source: the Phi-4-mini tutorial and guide (``BitsAndBytesConfig(load_in_4bit=True,
    bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)``).

    Raises:
        BadRequestError: an attention choice the device or precision cannot run.
    """
    from .attention import choose_attn

    return {**_precision_kwargs(precision, device), "attn_implementation": choose_attn(attn, device, precision)}


def _precision_kwargs(precision: str, device: str) -> dict:
    if precision == "nf4":
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        return {"quantization_config": quant, "device_map": "auto", "dtype": torch.bfloat16}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    kw = {"dtype": dtype}
    if device == "cuda":
        kw["device_map"] = "auto"
    return kw


def gguf_to_checkpoint(gguf: Path) -> Path:
    """Dequantize a GGUF file into a transformers checkpoint once, cached by the file's sha256.

    Loading GGUF through transformers dequantizes every tensor (about 18 s for the 135M model on 2 cores);
    the cached safetensors load in a second or two. The cache is written to a temporary directory and
    renamed into place, so an interrupted conversion never leaves a half-written checkpoint.

    Returns:
        Directory with config, tokenizer and ``model.safetensors``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_root() / "gguf" / cached_sha256(gguf)[:24]
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    note(f"converting {gguf.name} to a transformers checkpoint once (cached in {target})")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses GGUF-"quantized" models; the weights are plain tensors now, so save them directly.
        from safetensors.torch import save_model

        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        model.generation_config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except FileExistsError:  # another process won the race; theirs is complete
        pass
    except OSError as exc:
        if not (target / "config.json").exists():
            raise PhikitError(f"could not convert {gguf}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@torch.inference_mode()
def prefill(model, input_ids: torch.Tensor, cache) -> torch.Tensor:
    # input_ids: [1, T] -> logits of the last position: [V] (fp32)
    out = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[0, -1].float()


@torch.inference_mode()
def decode_one(model, token: torch.Tensor, cache) -> torch.Tensor:
    # token: [1, 1] -> logits: [V] (fp32)
    out = model(input_ids=token, past_key_values=cache, use_cache=True)
    return out.logits[0, -1].float()


def sample(
    logits: torch.Tensor, seen: Sequence[int], params: SamplingParams, generator: torch.Generator | None
) -> int:
    """Pick the next token from ``logits`` [V].

    Order, as in transformers' ``generate``: constraints (``params.logits_processors``), repetition penalty,
    then temperature, top-k and top-p via transformers' own warpers, then argmax or a multinomial draw.
    """
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    for proc in params.logits_processors:
        logits = proc(seen, logits)
    scores = logits.unsqueeze(0)  # [1, V]
    if params.repetition_penalty != 1.0:
        ids = torch.tensor([list(seen)], device=scores.device)
        scores = RepetitionPenaltyLogitsProcessor(params.repetition_penalty)(ids, scores)
    if params.greedy:
        return int(scores.argmax(-1))
    scores = TemperatureLogitsWarper(params.temperature)(None, scores)
    if params.top_k:
        scores = TopKLogitsWarper(params.top_k)(None, scores)
    if params.top_p < 1.0:
        scores = TopPLogitsWarper(params.top_p)(None, scores)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class TransformersEngine(AdapterSwitch, HFTokenizerEngine):
    """A transformers causal LM with its tokenizer.

    Args:
        ref: resolved model (``hf`` checkpoint or ``gguf`` file).
        adapter: a LoRA adapter (registered name or PEFT directory) applied to every request by default.
        attn: attention kernels, ``auto`` | ``flash`` | ``sdpa`` | ``eager`` (:mod:`phikit.engines.attention`:
            ``auto`` is eager on V100 and older GPUs, as the model card says).
        precision: ``auto`` | ``nf4`` | ``bf16`` | ``fp32`` (see :func:`pick_precision`).
        device: ``cuda`` or ``cpu``; None picks CUDA when available.
        model, tokenizer: already-loaded objects (tests, adapters); skips loading.

    Raises:
        ModelNotFoundError: the checkpoint is not on disk and the hub is unreachable.
        PhikitError: the checkpoint could not be loaded (the reason in one line).
        AdapterError: ``adapter`` is missing, corrupt or made for another base model.
    """

    name = "transformers"

    def __init__(self, ref: ModelRef, *, precision: str = "auto", device: str | None = None, model=None, tokenizer=None,
                 adapter: str | None = None, attn: str = "auto"):
        self.ref, self.model_name = ref, ref.name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.precision = pick_precision(precision, self.device, ref.format)
        from .attention import choose_attn

        choose_attn(attn, self.device, self.precision)  # a bad --attn fails here, before loading anything
        self.attn = attn
        if model is None:
            model, tokenizer = self._load(ref)
        self.model, self.tokenizer = model.eval(), tokenizer
        cfg = model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", 0) or 4096)
        self.chat_template = getattr(tokenizer, "chat_template", None)
        self.special_tokens = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}
        # LoRA adapters (phikit.tune): name -> directory of those loaded; which one a request gets is
        # :class:`AdapterSwitch`'s choice (per request, load-time default, or the registry's enabled one).
        self.adapters: dict[str, str] = {}
        self._active: str | None = None
        self.init_adapters(adapter, ref)

    def _load(self, ref: ModelRef):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = gguf_to_checkpoint(Path(ref.source)) if ref.is_gguf else local_snapshot(ref)
        hf_logging.disable_progress_bar()  # a 1-second bar on every load is noise; conversions keep theirs
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs(self.precision, self.device, self.attn))
        except ImportError as exc:
            raise PhikitError(f"loading {ref.source} in {self.precision} needs a missing package: {exc}") from None
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PhikitError(f"could not load {ref.source}: {first}") from None
        if "device_map" not in _precision_kwargs(self.precision, self.device):
            model.to(self.device)
        return model, tok

    @property
    def weight_bytes(self) -> int:
        """Bytes of the loaded weights (``get_memory_footprint``; nf4 counts packed 4-bit storage)."""
        return int(self.model.get_memory_footprint())

    def token_steps(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield one token id per step; stopping iteration frees the KV cache."""
        from transformers import DynamicCache

        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator(device=self.model.device).manual_seed(params.seed)
        cache = DynamicCache()
        seen = list(prompt_ids)
        logits = prefill(self.model, torch.tensor([prompt_ids], device=self.model.device), cache)
        while True:
            tok = sample(logits, seen, params, generator)
            yield tok
            seen.append(tok)
            logits = decode_one(self.model, torch.tensor([[tok]], device=self.model.device), cache)

    # LoRA adapters through peft: loaded once, switched per request without reloading the base.

    def load_adapter(self, spec: str) -> str:
        """Load a LoRA adapter (registered name or PEFT directory) if not loaded yet; return its name.

        The adapter is validated (files, manifest, base weights hash) before peft touches the model, so a
        bad one leaves the base serving.

        Raises:
            AdapterError: missing, corrupt, or trained on another base model.
        """
        from ..adapters import check_base, read_manifest, resolve_adapter

        name, path = resolve_adapter(spec)
        if self.adapters.get(name) == str(path):
            return name
        check_base(read_manifest(path), self.ref, name)
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            if name in self.adapters:  # same name, new directory: replace it
                self.model.delete_adapter(name)
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()
        self.adapters[name] = str(path)
        self._active = "\0"  # unknown: set on the next activate
        return name

    def activate(self, name: str | None) -> None:
        """Route the next forward passes through adapter ``name``, or the base model for None."""
        if name == self._active or not self.adapters:
            return
        if name is None:
            self.model.base_model.disable_adapter_layers()
        else:
            self.model.base_model.enable_adapter_layers()
            self.model.set_adapter(name)
        self._active = name

    def generate(self, messages, params: SamplingParams, *, tools=None, adapter: str | None = None):
        """As :meth:`LocalEngine.generate`, through ``adapter`` (a name, a directory, or ``"none"`` for the base)."""
        name = self.pick_adapter(adapter)
        events = super().generate(messages, params, tools=tools)
        return self.through(name, events) if self.adapters else events
