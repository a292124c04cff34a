"""What the in-process backends share: messages -> prompt -> token ids -> :func:`stream_tokens`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .. import prompt as prompt_mod
from .base import Event, SamplingParams, check_context, stream_tokens


class LocalEngine:
    """Base for backends that hold the weights in this process.

    Subclasses set ``name``, ``model_name``, ``context_length``, ``chat_template``, ``special_tokens``
    (``bos_token``/``eos_token`` strings for the template) and ``eos_ids``, and implement ``encode``,
    ``decode`` and ``token_steps``.
    """

    name = "local"
    model_name = ""
    context_length = 2048
    chat_template: str | None = None
    special_tokens: dict[str, str] = {}
    eos_ids: set[int] = set()

    def encode(self, text: str) -> list[int]:
        """Text -> ids as *data*: special-token markers in ``text`` are ordinary characters."""
        raise NotImplementedError

    def encode_special(self, text: str) -> list[int]:
        """Text -> ids with special-token markers parsed (the chat template's own text, raw prompts)."""
        return self.encode(text)

    def encode_prompt(self, messages: Any, tools: list[dict] | None = None) -> list[int]:
        """Render ``messages`` and tokenize them: the template's markers as special tokens, every message's
        text as data (:func:`phikit.prompt.render_segments`), so a message cannot open or close a turn."""
        pieces = prompt_mod.render_segments(messages, self.chat_template, tools=tools, **self.special_tokens)
        ids: list[int] = []
        for text, is_template in pieces:
            ids += self.encode_special(text) if is_template else self.encode(text)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def token_bytes(self) -> Sequence[bytes] | None:
        """Each token id's bytes, for :class:`~phikit.engines.base.ByteDetokenizer`; None: decode ids instead."""
        return None

    def token_steps(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[int]:
        raise NotImplementedError

    def render(self, messages: Any, tools: list[dict] | None = None) -> str:
        """The prompt text for ``messages`` under this model's chat template (Phi-4-mini's if it has none)."""
        return prompt_mod.render(messages, self.chat_template, tools=tools, **self.special_tokens)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def generate(self, messages: Any, params: SamplingParams, *, tools: list[dict] | None = None) -> Iterator[Event]:
        """Stream a reply to ``messages``: :class:`TextDelta` events, then one :class:`Done`.

        Raises:
            BadRequestError: invalid messages, or a prompt that does not fit the context window.
        """
        started = time.perf_counter()
        ids = self.encode_prompt(messages, tools)
        check_context(len(ids), params, self.context_length)
        room = self.context_length - len(ids)
        if params.max_new_tokens > room:  # stop with "length" at the window's end instead of failing there
            params = dataclasses.replace(params, max_new_tokens=room)
        return stream_tokens(
            self.token_steps(ids, params),
            decode=self.decode,
            eos_ids=self.eos_ids,
            prompt_tokens=len(ids),
            params=params,
            started=started,
            token_bytes=self.token_bytes(),
        )


class HFTokenizerEngine(LocalEngine):
    """An in-process backend that holds a transformers ``tokenizer`` (the transformers and fast backends)."""

    tokenizer: Any

    def encode(self, text: str) -> list[int]:
        # data: "<|im_start|>" typed in a message is split into ordinary tokens, never the control token
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    def encode_special(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self) -> Sequence[bytes] | None:
        if getattr(self, "_token_bytes", False) is False:
            self._token_bytes = byte_table(self.tokenizer)
        return self._token_bytes


def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet (``bytes_to_unicode`` in its ``encoder.py``), inverted: character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    others = [b for b in range(256) if b not in printable]
    chars = printable + [256 + k for k in range(len(others))]
    return {chr(c): b for b, c in zip(printable + others, chars)}


def byte_table(tokenizer: Any, chunk: int = 512) -> list[bytes] | None:
    """Each token id's bytes for a byte-level BPE tokenizer (GPT-2, Llama 3, SmolLM2, Phi-4-mini's o200k), or None.

    Ordinary tokens are spelled in GPT-2's byte alphabet (``bytes_to_unicode`` in GPT-2's ``encoder.py``);
    added and special tokens are their text. The table is used only if decoding the whole vocabulary, ``chunk``
    ids at a time, gives exactly ``tokenizer.decode`` of the same ids (so a SentencePiece tokenizer, or one that
    cleans up spaces, keeps the slow path).

    Returns:
        ``len(tokenizer)`` byte strings, or None when the tokenizer is not byte-level.
    """
    to_byte = _unicode_to_byte()
    added = {i: t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    n = len(tokenizer)
    table: list[bytes] = []
    for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(n)))):
        if i in added:
            table.append(added[i].encode())
        elif tok is None or any(c not in to_byte for c in tok):
            return None
        else:
            table.append(bytes(to_byte[c] for c in tok))
    for start in range(0, n, chunk):
        ids = list(range(start, min(start + chunk, n)))
        if tokenizer.decode(ids, skip_special_tokens=False) != b"".join(table[i] for i in ids).decode("utf-8", "replace"):
            return None
    return table
