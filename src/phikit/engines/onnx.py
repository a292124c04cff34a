"""ONNX Runtime GenAI backend: a model directory written by ``phikit export onnx`` (or onnxruntime-genai's
model builder) run by ``onnxruntime_genai``.

onnxruntime-genai runs the forward pass and holds the KV cache; phikit keeps everything around it: the
prompt is rendered with the model's chat template and tokenized by its ``tokenizer.json`` (the same
transformers tokenizer as the transformers backend, so special-token markers in a message stay data), and
each next token is picked by the same :func:`~phikit.engines.transformers.sample` as the transformers
backend, from the logits ``Generator.get_logits`` returns. The chosen token goes back with
``append_tokens``. So sampling, constraints (phikit's xgrammar logits processors: JSON schema and tool
calls work here as on the other backends, instead of onnxruntime-genai's own guidance), stop strings and
cancellation behave exactly as elsewhere, and ``stream_tokens`` makes the events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import BadRequestError, PhikitError
from ..models import ModelRef
from .base import SamplingParams
from .local import HFTokenizerEngine

CONFIG = "genai_config.json"


def is_onnx_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding an onnxruntime-genai model (``genai_config.json``)."""
    return (Path(path) / CONFIG).is_file()


class OnnxEngine(HFTokenizerEngine):
    """A model directory run by onnxruntime-genai on the CPU.

    Args:
        ref: a resolved model whose source is a directory with ``genai_config.json``, ``model.onnx`` and
            ``tokenizer.json`` (what ``phikit export onnx`` writes).

    Raises:
        BadRequestError: ``ref`` is not such a directory (a GGUF file or a transformers checkpoint: export
            it first with ``phikit export onnx``).
        PhikitError: onnxruntime-genai or the tokenizer could not load the directory.
    """

    name = "onnx"

    def __init__(self, ref: ModelRef):
        path = Path(ref.source).expanduser()
        if not is_onnx_dir(path):
            raise BadRequestError(
                f"the onnx backend needs a directory written by `phikit export onnx` (with {CONFIG}), but "
                f"{ref.source!r} is not one; export it first: phikit export onnx --model {ref.source} --out DIR"
            )
        import onnxruntime_genai as og
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            self.model = og.Model(str(path))
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeErrors; say which file, in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PhikitError(f"onnxruntime-genai could not load {path}: {first}") from None
        self._og = og
        self.path = path
        cfg = json.loads((path / CONFIG).read_text())["model"]
        self.model_name = ref.name
        self.context_length = int(cfg.get("context_length") or 4096)
        self.logits_width = int(cfg.get("vocab_size") or len(self.tokenizer))  # logits are [V] of this V
        self.vocab_size = self.logits_width  # token ids are below this (phikit bench draws random prompts)
        tok = self.tokenizer
        self.chat_template = getattr(tok, "chat_template", None)
        self.special_tokens = {"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""}
        eos = cfg.get("eos_token_id")
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(i) for i in [*eos, tok.eos_token_id] if i is not None}

    def _generator(self, max_length: int):
        """A fresh generator whose KV buffer holds ``max_length`` tokens (prompt + reply)."""
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=min(max_length, self.context_length))
        return self._og.Generator(self.model, params)

    @staticmethod
    def _last_logits(gen):
        """The next-token logits after the tokens appended so far: float32 numpy [V]."""
        import numpy as np

        return np.asarray(gen.get_logits(), dtype=np.float32).reshape(-1)

    def token_steps(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield one token id per step; closing the iterator frees the generator and its KV cache."""
        import torch

        from .transformers import sample

        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator().manual_seed(params.seed)
        limit = min(len(prompt_ids) + params.max_new_tokens, self.context_length)
        gen = self._generator(limit)
        gen.append_tokens(list(prompt_ids))
        seen = list(prompt_ids)
        while True:
            tok = sample(torch.from_numpy(self._last_logits(gen)), seen, params, generator)
            yield tok
            seen.append(tok)
            if len(seen) >= limit:
                return
            gen.append_tokens([tok])

    def teacher_forced_logits(self, prompt_ids: Sequence[int], forced_ids: Sequence[int]):
        """Next-token logits at each position of ``forced_ids`` after ``prompt_ids``.

        Returns:
            float32 numpy [len(forced_ids), V]: row i is the distribution over the token at position i of
            ``forced_ids``, given the prompt and ``forced_ids[:i]``.
        """
        import numpy as np

        gen = self._generator(len(prompt_ids) + len(forced_ids) + 1)
        gen.append_tokens(list(prompt_ids))
        rows = [self._last_logits(gen)]
        for tok in list(forced_ids)[:-1]:
            gen.append_tokens([int(tok)])
            rows.append(self._last_logits(gen))
        return np.stack(rows) if forced_ids else np.zeros((0, self.logits_width), np.float32)
