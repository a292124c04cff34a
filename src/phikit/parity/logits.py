"""Teacher-forced next-token logits from each backend, for comparing their distributions position by position.

One function, :func:`teacher_forced`, dispatched on the engine's backend name; every backend returns the
same thing: a float32 numpy array [len(forced), V] whose row i is the next-token logits after
``prompt + forced[:i]``. How each gets them:

- transformers: one forward pass over ``prompt + forced[:-1]`` (causal, so every row at once);
- llama.cpp: ``Llama.eval`` token by token and ``llama_get_logits_ith(ctx, -1)`` after each (the engine's
  context is created without ``logits_all``, so only the last row exists); the context is reset afterwards
  and the engine's prefix-cache slot forgotten, so the next ``generate`` starts clean;
- onnx: ``OnnxEngine.teacher_forced_logits`` (``append_tokens`` + ``get_logits``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import BadRequestError


def _transformers(engine, prompt: Sequence[int], forced: Sequence[int]) -> np.ndarray:
    import torch

    ids = list(prompt) + list(forced)[:-1]
    with torch.inference_mode():
        out = engine.model(input_ids=torch.tensor([ids], device=engine.model.device))
    return out.logits[0, len(prompt) - 1 :].float().cpu().numpy()  # [len(forced), V]


def _llamacpp(engine, prompt: Sequence[int], forced: Sequence[int]) -> np.ndarray:
    import llama_cpp

    llm = engine.llm
    n_vocab = llm.n_vocab()

    def last() -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32, copy=True)

    llm.reset()
    try:
        llm.eval(list(prompt))
        rows = [last()]
        for tok in list(forced)[:-1]:
            llm.eval([int(tok)])
            rows.append(last())
    finally:
        llm.reset()
        if hasattr(engine, "_slot"):
            engine._slot = []  # the KV cache no longer holds the engine's last prompt
    return np.stack(rows)


def teacher_forced(engine, prompt: Sequence[int], forced: Sequence[int]) -> np.ndarray:
    """Next-token logits at each position of ``forced`` after ``prompt``: float32 numpy [len(forced), V].

    Raises:
        BadRequestError: a backend without access to its logits (``openai``, ``fast``), or empty ``forced``.
    """
    if not forced:
        raise BadRequestError("teacher forcing needs at least one token")
    if engine.name == "transformers":
        return _transformers(engine, prompt, forced)
    if engine.name == "llamacpp":
        return _llamacpp(engine, prompt, forced)
    if engine.name == "onnx":
        return engine.teacher_forced_logits(prompt, forced)
    raise BadRequestError(
        f"parity needs next-token logits, which the {engine.name!r} backend does not expose; "
        "use llamacpp, transformers or onnx"
    )


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64: [N, V] -> [N, V]."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl_divergence(ref_logits: np.ndarray, cand_logits: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) of the next-token distributions, in nats, one value per row: [N].

    The reference is the distribution the candidate should reproduce, as in llama.cpp's ``perplexity
    --kl-divergence``. Vocabularies of different sizes (padded embeddings) are cut to the shorter.
    """
    v = min(ref_logits.shape[-1], cand_logits.shape[-1])
    p, q = log_softmax(ref_logits[:, :v]), log_softmax(cand_logits[:, :v])
    return np.maximum((np.exp(p) * (p - q)).sum(axis=-1), 0.0)
