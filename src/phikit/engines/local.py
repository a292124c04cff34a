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
