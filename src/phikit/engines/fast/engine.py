"""``--backend fast``: Phi-3-family checkpoints (Phi-4-mini) on CUDA through the CUDA-graph decode loop.

Same interface and events as the other local backends (streaming, stop strings, cancellation, logits
processors, messages rendered by the chat template and tokenized as data): only ``token_steps`` differs.
One generation runs at a time per engine (the KV cache is the model's) until :meth:`FastEngine.enable_batching`
(``phikit serve --parallel``) switches ``token_steps`` to slots decoded together (:mod:`.slots`).
LoRA adapters are applied unmerged (:mod:`.lora`), chosen per request as on the other backends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ...errors import BadRequestError, PhikitError
from ...models import ModelRef, local_snapshot
from ..adapting import AdapterSwitch
from ..base import SamplingParams
from ..batching import check_slots
from ..local import HFTokenizerEngine
from . import lora
from .generate import (
    COMPILE_MODES,
    DecodeGraphs,
    PrefillGraphs,
    bucket,
    compile_layers,
    compile_ops,
    compile_step,
    default_compile,
    prefill,
    recompute_at,
    uncompile_ops,
)
from .model import ModelArgs, Transformer
from .slots import FastBatcher

PRECISIONS = ("auto", "bf16", "int4", "nf4")
DEFAULT_SLOT_LEN = 8192  # positions per batching slot unless asked (Phi-4-mini: ~1.1 GB of bf16 KV per slot)
MAX_DEFAULT_SLOTS = 32
KV_SHARE = 0.5  # the slots' KV cache may take at most this share of free GPU memory
NEEDS_CUDA = "the fast backend needs CUDA (no CUDA device here); use --backend transformers or llamacpp"


def build(hf_config, state_dict: dict[str, torch.Tensor], device: str | torch.device,
          dtype: torch.dtype = torch.bfloat16) -> Transformer:
    """A :class:`Transformer` from a transformers ``Phi3Config`` and a ``Phi3ForCausalLM`` state dict.

    Raises:
        PhikitError: the state dict lacks tensors the model needs (not a Phi-3-family checkpoint).
    """
    if getattr(hf_config, "model_type", "phi3") != "phi3":
        raise PhikitError(f"the fast backend runs Phi-3-family models (Phi-4-mini); this is {hf_config.model_type!r}")
    with torch.device("meta"):
        model = Transformer(ModelArgs.from_hf(hf_config))
    sd = {k: v for k, v in state_dict.items() if not (k == "lm_head.weight" and model.lm_head is None)}
    missing, _unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing:
        raise PhikitError(f"the checkpoint lacks {len(missing)} tensors the fast backend needs, e.g. {missing[0]}")
    return model.to(device=device, dtype=dtype).eval()


def quantize(model: Transformer, precision: str) -> None:
    """Quantize the decoder's linear layers in place (embeddings and the tied output head stay bf16).

    ``int4``: torchao weight-only, ``Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")``
    (PyTorch's own tinygemm int4 kernels). ``nf4``: bitsandbytes ``Linear4bit`` (the seeds' QLoRA format).

    Raises:
        PhikitError: the quantization library is missing.
    """
    if precision == "int4":
        try:
            from torchao.quantization import Int4WeightOnlyConfig, quantize_
        except ImportError as exc:
            raise PhikitError(f"--precision int4 on the fast backend needs torchao: {exc}") from None
        quantize_(model.model.layers, Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"))
    elif precision == "nf4":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise PhikitError(f"--precision nf4 on the fast backend needs bitsandbytes: {exc}") from None
        for layer in model.model.layers:
            for parent, name in ((layer.self_attn, "qkv_proj"), (layer.self_attn, "o_proj"),
                                 (layer.mlp, "gate_up_proj"), (layer.mlp, "down_proj")):
                lin = getattr(parent, name)
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False,
                                      compute_dtype=torch.bfloat16, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, quant_type="nf4")
                setattr(parent, name, q.to(lin.weight.device))


class FastEngine(AdapterSwitch, HFTokenizerEngine):
    """A Phi-3-family checkpoint on CUDA, decoded through CUDA graphs.

    Args:
        ref: a resolved ``hf`` checkpoint (safetensors + config + tokenizer).
        precision: ``auto`` (= ``bf16``) | ``bf16`` | ``int4`` (torchao) | ``nf4`` (bitsandbytes).
        compile: ``True``/``"auto"``: :func:`.generate.default_compile` for the precision; ``"layers"``: compile
            one layer of the one-token step and reuse it for every layer (:func:`.generate.compile_layers`);
            ``"ops"``: only the elementwise pieces (:func:`.generate.compile_ops`);
            ``"step"``: the whole step (:func:`.generate.compile_step`: about ``layers``' speed, tens of seconds
            of compiling per batch/length bucket; process-wide); ``False``/``"none"``. A failed compile falls
            back to the eager step.
        adapter: a LoRA adapter (registered name or PEFT directory) every request gets unless it names
            another; adapters are applied unmerged over the bf16, int4 or nf4 base (:mod:`.lora`).

    Raises:
        PhikitError: no CUDA device, a GGUF file, or a checkpoint that is not Phi-3-family.
        BadRequestError: an unknown precision.
    """

    name = "fast"

    def __init__(self, ref: ModelRef, *, precision: str = "auto", compile: bool | str = True,
                 adapter: str | None = None):
        if not torch.cuda.is_available():
            raise PhikitError(NEEDS_CUDA)
        if compile not in (True, False, *COMPILE_MODES):
            raise BadRequestError(f"unknown compile mode {compile!r} for the fast backend; use {', '.join(COMPILE_MODES)}")
        if precision not in PRECISIONS:
            raise BadRequestError(f"unknown precision {precision!r} for the fast backend; use one of {', '.join(PRECISIONS)}")
        if ref.is_gguf:
            raise PhikitError("the fast backend loads transformers checkpoints (safetensors), not GGUF files")
        from transformers import AutoConfig, AutoTokenizer

        path = local_snapshot(ref)
        try:
            cfg = AutoConfig.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = build(cfg, load_safetensors(path, "cuda"), "cuda")
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PhikitError(f"could not load {ref.source}: {first}") from None
        self.precision = "bf16" if precision == "auto" else precision
        if self.precision != "bf16":
            quantize(model, self.precision)
        eos = _eos_ids(path)
        self._setup(model, tokenizer, ref.name, eos, compile=compile)
        self.init_adapters(adapter, ref)

    @classmethod
    def from_model(cls, model: Transformer, tokenizer, *, name: str = "fast", eos_ids: Sequence[int] = (),
                   compile: bool = False) -> FastEngine:
        """An engine over an already-built model (tests, adapters); on CPU it runs the same loop without graphs."""
        self = cls.__new__(cls)
        self.precision = str(model.dtype).removeprefix("torch.")
        self._setup(model, tokenizer, name, set(eos_ids), compile=compile)
        self.use_registry = False  # only adapters given explicitly
        return self

    def _setup(self, model: Transformer, tokenizer, name: str, eos: set[int], *, compile: bool | str) -> None:
        self.model, self.tokenizer, self.model_name = model, tokenizer, name
        self.context_length = model.args.max_position
        self.chat_template = getattr(tokenizer, "chat_template", None)
        self.special_tokens = {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}
        self.eos_ids = {i for i in [*eos, tokenizer.eos_token_id] if i is not None}
        mode = {True: "auto", False: "none"}.get(compile, compile)
        mode = default_compile(self.precision) if mode == "auto" else mode
        on_gpu = model.device.type == "cuda"
        if mode == "step" and on_gpu:
            compile_step()
        self.compiled = on_gpu and (mode == "step" or (mode == "ops" and compile_ops())
                                    or (mode == "layers" and compile_layers()))
        self.graphs = DecodeGraphs(model)
        self.prefills = PrefillGraphs(model)
        self._lock = threading.Lock()
        self.adapters: dict[str, tuple[str, dict]] = {}  # name -> (directory, LoRA weights on the CPU)
        self._applied: str | None = None  # the adapter whose weights are in the LoRA buffers
        self._wanted = threading.local()  # the adapter the calling thread's next generation runs through
        self.adapter_base, self.adapter, self._registry_seen, self._registry_default = None, None, None, None
        if self.compiled:  # compile and capture the common bucket now, so the first request is not slow
            try:
                # layers: one compile serves both lengths (dynamic in the length); the second's graphs are captured now
                for kv_len in (2 * bucket(1), bucket(1)) if mode == "layers" else (bucket(1),):
                    self._warm(kv_len)
            except Exception:  # noqa: BLE001 - a failed compile only costs speed
                uncompile_ops()
                self.compiled = False
                self.graphs = DecodeGraphs(model)

    def _warm(self, kv_len: int) -> None:
        self.model.setup_caches(1, kv_len)
        self.graphs.step(torch.zeros(1, 1, dtype=torch.long, device=self.model.device), 0, kv_len)
        self.prefills.warm(kv_len)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the loaded weights (packed storage for int4/nf4)."""
        return sum(_nbytes(t) for t in [*self.model.parameters(), *self.model.buffers()])

    # LoRA adapters: AdapterSwitch picks the name per request; the weights go into the LoRA buffers when a
    # generation starts (under the lock, so a running generation never sees another request's adapter).

    def load_adapter(self, spec: str) -> str:
        """Read a LoRA adapter (registered name or PEFT directory) once; return its name.

        Raises:
            AdapterError: missing, corrupt, or trained on another base model. PhikitError: it adapts
                modules the fast path does not (:data:`.lora.TARGETS`).
        """
        from ...adapters import check_base, read_manifest, resolve_adapter

        name, path = resolve_adapter(spec)
        if name in self.adapters and self.adapters[name][0] == str(path):
            return name
        if self.adapter_base is not None:
            check_base(read_manifest(path), self.adapter_base, name)
        rank, weights = lora.read_peft(path, self.model.args.n_layer)
        with self._lock:
            if lora.attach(self.model, rank):
                self.model.cache_version += 1  # new modules: graphs captured before must be captured again
            self.adapters[name] = (str(path), weights)
            self._applied = "\0"  # unknown: written on the next generation
        return name

    def activate(self, name: str | None) -> None:
        """The calling thread's next generation runs through adapter ``name`` (None: the base model)."""
        self._wanted.name = name

    def generate(self, messages, params: SamplingParams, *, tools=None, adapter: str | None = None):
        """As :meth:`LocalEngine.generate`, through ``adapter`` (a name, a directory, or ``"none"`` for the base)."""
        name = self.pick_adapter(adapter)
        events = super().generate(messages, params, tools=tools)
        return self.through(name, events) if self.adapters else events

    def _apply(self, name: str | None) -> None:
        """Put adapter ``name``'s weights (None: zeros, the base) into the LoRA buffers; caller holds the lock."""
        if name != self._applied and self.adapters:
            lora.apply(self.model, self.adapters[name][1] if name else None)
            self._applied = name

    batcher: FastBatcher | None = None
    max_concurrency = 1  # what the server's worker may run at once (serve/app.py reads it)

    def enable_batching(self, n_slots: int | None = None, cache_len: int | None = None) -> int:
        """Decode up to ``n_slots`` requests together from now on; returns the number of slots.

        Args:
            n_slots: slots (None: as many as fit :data:`KV_SHARE` of free GPU memory, at most
                :data:`MAX_DEFAULT_SLOTS`).
            cache_len: positions per slot (None: the context window, at most :data:`DEFAULT_SLOT_LEN`).

        Raises:
            BadRequestError: ``n_slots`` < 1.
        """
        if self.batcher is not None:
            return self.batcher.n_slots
        check_slots(n_slots)
        cache_len = cache_len or min(self.context_length, DEFAULT_SLOT_LEN)
        if n_slots is None:
            a = self.model.args
            per_slot = 2 * a.n_layer * a.n_kv_head * a.head_dim * self.model.dtype.itemsize * cache_len
            free = torch.cuda.mem_get_info()[0] if self.model.device.type == "cuda" else 8 * per_slot
            n_slots = max(1, min(MAX_DEFAULT_SLOTS, int(free * KV_SHARE) // per_slot))
        self.batcher = FastBatcher(self.model, self.graphs, n_slots=n_slots, cache_len=cache_len, lock=self._lock,
                                   eos_ids=self.eos_ids, on_group=self._apply)
        self.batcher.warm()
        self.max_concurrency = self.batcher.n_slots
        return self.batcher.n_slots

    def token_steps(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield one token id per step: prefill, then one graph replay per token; sampling on the GPU.

        With batching on, the request joins the batcher's slots in this thread's adapter group instead.
        """
        if self.batcher is not None:
            yield from self.batcher.submit(prompt_ids, params, group=getattr(self._wanted, "name", None))
            return
        # the same logits processors, repetition penalty and warpers as the transformers backend, on the GPU
        from ..transformers import sample

        dev = self.model.device
        with self._lock:
            self._apply(getattr(self._wanted, "name", None))
            t = len(prompt_ids)
            kv_len = bucket(t + params.max_new_tokens, self.context_length)
            self.model.setup_caches(1, kv_len)
            generator = None
            if params.seed is not None and not params.greedy:
                generator = torch.Generator(device=dev).manual_seed(params.seed)
            seen = list(prompt_ids)
            # inference mode per block, never across a yield (it is thread state the caller would inherit)
            with torch.inference_mode():
                logits = self.prefills.prefill(list(prompt_ids), 0, 0)  # one graph replay when the prompt is short
                cur = torch.zeros(1, 1, dtype=torch.long, device=dev)
            for pos in range(t, kv_len):
                with torch.inference_mode():
                    tok = sample(logits, seen, params, generator)
                yield tok
                seen.append(tok)
                with torch.inference_mode():
                    if recompute_at(self.model, pos):  # as transformers' generate at LongRoPE's switch
                        logits = prefill(self.model, torch.tensor([seen], device=dev), torch.arange(pos + 1, device=dev))[0]
                        continue
                    cur.fill_(tok)
                    logits = self.graphs.step(cur, pos, kv_len)[0]


def load_safetensors(path: Path, device: str) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory's ``*.safetensors`` files, read straight onto ``device``."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise PhikitError(f"{path} has no .safetensors files (the fast backend reads safetensors checkpoints)")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(str(f), device=device))
    return out


def _eos_ids(path: Path) -> set[int]:
    gen = Path(path) / "generation_config.json"
    if not gen.exists():
        return set()
    eos = json.loads(gen.read_text()).get("eos_token_id")
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def _nbytes(t: torch.Tensor) -> int:
    if hasattr(t, "__tensor_flatten__"):  # a tensor subclass (torchao int4): count its packed inner tensors
        return sum(_nbytes(getattr(t, name)) for name in t.__tensor_flatten__()[0])
    return t.numel() * t.element_size()
