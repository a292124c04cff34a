"""Loading each backend for the matrix, and how it runs one cell.

- ``transformers``: the baseline, plain HF ``generate`` on the transformers backend's model (any batch).
- ``fast``: :class:`~phikit.engines.fast.FastEngine` on CUDA (bf16, int4, nf4), its model and CUDA graphs
  driven batched as ``bench/gpu_fast_bench.py`` does; without CUDA the same model and loop run eagerly on
  the CPU (bf16 only), so ``--random-weights --quick`` checks this code on any machine.
- ``llamacpp``: GGUF files; batch 1 through its own loop, larger batches through its slots
  (``enable_batching``) where the engine has them, else "n/a".
- ``onnx``: an onnxruntime-genai directory (``phikit export onnx``, or phikit's cached export); batch 1.

A backend that cannot run this model here raises :class:`Skip` with the reason, and the run goes on.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..models import ModelRef
from .cells import fast_cell, hf_cell, prompt_ids, stream_cell

# Phi-4-mini's shape cut down for CPU runs (--random-weights --quick): head_dim 128 as the real one, so the 48
# LongRoPE factors fit; the real vocabulary (bench/gpu_fast_bench.py --smoke uses the same).
TINY = dict(num_hidden_layers=1, hidden_size=256, num_attention_heads=2, num_key_value_heads=1, intermediate_size=256)
PRECISIONS = {"transformers": ("bf16", "fp32", "nf4"), "fast": ("bf16", "int4", "nf4")}


class Skip(Exception):
    """This backend cannot run this model on this machine (the message says why)."""


@dataclass
class Loaded:
    """A backend ready to time.

    Attributes:
        name: the row's label, e.g. ``fast-int4``; device: ``cuda`` or ``cpu`` (which price applies).
        cell: ``(batch, prompt_tokens, new_tokens, runs) -> figures`` (see :mod:`phikit.bench.cells`).
        max_batch: the largest batch it runs (None: any); weights_gb: loaded weights, GB.
        close: frees what it holds.
    """

    name: str
    backend: str
    precision: str
    device: str
    load_s: float
    weights_gb: float
    cell: Callable[[int, int, int, int], dict]
    close: Callable[[], None]
    max_batch: int | None = None
    notes: list[str] = field(default_factory=list)


def random_checkpoint(path: Path, dev: str, tiny: bool) -> ModelRef:
    """Write a random-weight Phi-4-mini-shaped checkpoint (``phikit.stand_in``) to ``path``; tiny: :data:`TINY`."""
    from ..stand_in import save_random_phi4_mini

    save_random_phi4_mini(path, device=dev, **(TINY if tiny else {}))
    return ModelRef("phi4-mini-random-tiny" if tiny else "phi4-mini-random", str(path), "hf")


def load(backend: str, precision: str, ref: ModelRef, *, dev: str, n_ctx: int, max_batch: int,
         fast_compile: str = "auto") -> Loaded:
    """Load ``ref`` on ``backend`` at ``precision`` (``auto``: the backend's own) and time the load.

    ``fast_compile``: what the fast backend compiles (``auto`` | ``layers`` | ``ops`` | ``step`` | ``none``, :class:`FastEngine`).

    Raises:
        Skip: the backend cannot run this model here.
        PhikitError: loading failed (the reason in one line).
    """
    fast = functools.partial(_fast, compile=fast_compile)
    fn = {"transformers": _transformers, "fast": fast, "llamacpp": _llamacpp, "onnx": _onnx}[backend]
    notes = []
    if backend == "onnx" and ref.format != "onnx":  # phikit's cached fp32 export (written once, not timed)
        from ..artifacts import cached_onnx

        ref = ModelRef(f"{ref.name} (onnx fp32)", str(cached_onnx(ref.source)), "onnx")
        notes.append("phikit's cached fp32 ONNX export")
    t0 = time.perf_counter()
    loaded = fn(ref, precision, dev, n_ctx, max_batch)
    loaded.load_s = round(time.perf_counter() - t0, 2)
    loaded.notes += notes
    return loaded


def _transformers(ref: ModelRef, precision: str, dev: str, n_ctx: int, max_batch: int) -> Loaded:
    from ..engines.transformers import TransformersEngine

    if precision == "nf4" and dev != "cuda":
        raise Skip("nf4 needs CUDA (bitsandbytes)")
    eng = TransformersEngine(ref, precision=precision, device=dev)
    model, vocab = eng.model, eng.model.config.vocab_size

    def cell(batch: int, length: int, new: int, runs: int) -> dict:
        # HF batch > 1 runs once (as bench/gpu_fast_bench.py): a batch of 32 at 2,048 tokens takes long
        return hf_cell(model, prompt_ids(batch, length, vocab, dev=str(model.device.type)), new,
                       runs if batch == 1 else 1, dev)

    def close() -> None:
        nonlocal model
        eng.model = model = None

    return Loaded(f"transformers-{eng.precision}", "transformers", eng.precision, dev, 0.0,
                  round(eng.weight_bytes / 1e9, 2), cell, close)


def _fast(ref: ModelRef, precision: str, dev: str, n_ctx: int, max_batch: int, compile: str = "auto") -> Loaded:
    precision = "bf16" if precision == "auto" else precision
    if ref.is_gguf or ref.format != "hf":
        raise Skip(f"needs a Phi-3-family safetensors checkpoint (Phi-4-mini); {ref.name} is {ref.format}")
    from ..models import local_snapshot

    path = Path(local_snapshot(ref))
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type != "phi3":
        raise Skip(f"runs Phi-3-family checkpoints (Phi-4-mini); {ref.name} is {model_type!r}")
    from ..engines.fast import generate as gen
    from ..engines.fast.engine import FastEngine, _nbytes, build, load_safetensors

    notes = []
    if dev == "cuda":
        eng = FastEngine(ref, precision=precision, compile=compile)  # loads, quantizes, compiles, captures
        model, graphs, prefills = eng.model, eng.graphs, eng.prefills
        notes.append({"step": "the whole one-token step compiled", "ops": "only the elementwise pieces compiled",
                      "layers": "one layer of the step compiled, reused by every layer",
                      "none": "nothing compiled"}[gen.default_compile(precision) if compile == "auto" else compile])
    else:
        if precision != "bf16":
            raise Skip(f"{precision} on the fast backend needs CUDA")
        import torch
        from transformers import AutoConfig

        model = build(AutoConfig.from_pretrained(path), load_safetensors(path, "cpu"), "cpu", torch.bfloat16)
        graphs, prefills = gen.DecodeGraphs(model), gen.PrefillGraphs(model)  # no CUDA: the same steps, eagerly
        notes.append("CPU, no CUDA graphs (the loop's logic, not its speed)")
    vocab = model.args.vocab_size
    weights = sum(_nbytes(t) for t in model.parameters())

    def cell(batch: int, length: int, new: int, runs: int) -> dict:
        return fast_cell(model, graphs, prompt_ids(batch, length, vocab, dev=dev), new, runs, dev, prefills)

    def close() -> None:
        nonlocal model, graphs, prefills
        graphs.graphs.clear()
        prefills.graphs.clear()
        model.max_batch = model.max_len = 0
        for layer in model.model.layers:
            layer.self_attn.k_cache = layer.self_attn.v_cache = None
        model = graphs = prefills = None

    label = f"fast-{precision}" + ("" if compile == "auto" or dev != "cuda" else f"-{compile}")
    return Loaded(label, "fast", precision, dev, 0.0, round(weights / 1e9, 2), cell, close,
                  notes=notes)


def _llamacpp(ref: ModelRef, precision: str, dev: str, n_ctx: int, max_batch: int) -> Loaded:
    if not ref.is_gguf:
        raise Skip(f"needs a GGUF file; {ref.name} is a {ref.format} checkpoint")
    from ..engines.base import SamplingParams
    from ..engines.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(ref, n_ctx=n_ctx, prefix_cache=False)
    vocab = eng.llm.n_vocab()
    state = {"batched": False}
    batching = hasattr(eng, "enable_batching")  # engines/llamacpp_batch.py: slots decoded together

    def cell(batch: int, length: int, new: int, runs: int) -> dict:
        if batch > 1 and not state["batched"]:  # from now on every request goes through the slots
            eng.eos_ids = set()  # rows run their full length, as in the other backends' cells
            eng.enable_batching(max_batch)
            state["batched"] = True
        params = SamplingParams(max_new_tokens=new, temperature=0)
        return stream_cell(lambda ids: eng.token_steps(ids, params), batch, length, vocab, new, runs)

    def close() -> None:
        try:
            eng.llm.close()
        except Exception:  # noqa: BLE001 - older llama-cpp-python: freed when collected
            pass

    size = Path(ref.source).stat().st_size
    return Loaded("llamacpp", "llamacpp", "gguf", "cpu", 0.0, round(size / 1e9, 2), cell, close,
                  max_batch=None if batching else 1,
                  notes=[] if batching else ["batch > 1: n/a (this llama.cpp engine has no slots)"])


def _onnx(ref: ModelRef, precision: str, dev: str, n_ctx: int, max_batch: int) -> Loaded:
    from ..engines.base import SamplingParams
    from ..engines.onnx import OnnxEngine

    eng = OnnxEngine(ref)

    def cell(batch: int, length: int, new: int, runs: int) -> dict:
        params = SamplingParams(max_new_tokens=new, temperature=0)
        return stream_cell(lambda ids: eng.token_steps(ids, params), batch, length, eng.vocab_size, new, runs)

    size = sum(f.stat().st_size for f in Path(ref.source).glob("*.onnx*"))
    return Loaded("onnx", "onnx", "onnx", "cpu", 0.0, round(size / 1e9, 2), cell, lambda: None, max_batch=1,
                  notes=["batch > 1: n/a (one sequence per generator)"])
