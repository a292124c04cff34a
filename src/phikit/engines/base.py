"""The engine protocol shared by every backend, and the one stream loop they all run through.

Three layers, as in mlx-lm: a backend's ``token_steps`` yields token ids; :func:`stream_tokens` turns them
into frozen :class:`Event` records (text deltas, then one :class:`Done` with finish reason, usage and
timings); ``LLM.chat`` drains the stream into a result. The CLI, the server, the agent loop and the
benchmarks all consume the same stream, so their figures agree.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import BadRequestError

# A logits processor sees the ids generated so far (prompt included) and the next-token logits
# (a 1-D float tensor of vocab size, torch on every backend) and returns the logits to sample from.
LogitsProcessor = Callable[[Sequence[int], Any], Any]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` disable those filters.

    Attributes:
        max_new_tokens: generation stops with ``finish_reason="length"`` after this many tokens.
        temperature: softmax temperature (>= 0).
        top_p: nucleus sampling mass in (0, 1].
        top_k: keep the k most likely tokens; 0 keeps all.
        repetition_penalty: CTRL-style penalty (Keskar et al. 2019) on tokens already seen; 1.0 is off.
        seed: RNG seed for reproducible sampling; None draws a fresh one.
        stop: strings that end generation; they are not included in the output.
        logits_processors: constraints applied before sampling (e.g. a JSON-schema grammar).
        cancel: set this event from another thread to stop generation (``finish_reason="cancelled"``).
    """

    max_new_tokens: int = 512
    temperature: float = 0.3
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logits_processors: tuple[LogitsProcessor, ...] = ()
    cancel: threading.Event | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(s for s in (self.stop or ()) if s))
        object.__setattr__(self, "logits_processors", tuple(self.logits_processors or ()))
        checks = [
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens > 0, "max_new_tokens must be > 0"),
            (self.temperature >= 0, "temperature must be >= 0 (0 means greedy)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top_k must be >= 0 (0 disables it)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0 (1.0 disables it)"),
        ]
        for ok, message in checks:
            if not ok:
                raise BadRequestError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TextDelta:
    """New text, safe to show: never a partial UTF-8 character, never part of a stop string."""

    text: str


@dataclass(frozen=True)
class Done:
    """The last event of a stream.

    Attributes:
        finish_reason: ``"stop"`` (end-of-sequence or a stop string), ``"length"`` or ``"cancelled"``.
        usage: prompt and completion token counts.
        ttft_ms: milliseconds from the request to the first generated token (tokenize + prefill + 1 step).
        tokens_per_s: decode rate after the first token (completion tokens - 1) / decode seconds.
        text: the whole generated text (the deltas joined).
        token_ids: the generated token ids, end-of-sequence excluded.
    """

    finish_reason: str
    usage: Usage
    ttft_ms: float
    tokens_per_s: float
    text: str
    token_ids: tuple[int, ...] = ()


Event = TextDelta | Done


class Engine(Protocol):
    """What a backend provides. ``generate`` is the one entry point callers use."""

    name: str  # backend name, e.g. "llamacpp"
    model_name: str
    context_length: int

    def generate(
        self, messages: Any, params: SamplingParams, *, tools: list[dict] | None = None
    ) -> Iterator[Event]: ...

    def count_tokens(self, text: str) -> int: ...


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas.

    Decodes a small window of already-emitted tokens together with the new ones and emits only the
    difference, holding back while the text ends in U+FFFD (an incomplete UTF-8 sequence). This is
    vLLM's ``detokenize_incrementally`` idea; it keeps SentencePiece's leading spaces and byte-fallback
    tokens right, and the deltas always join to ``decode(all ids)``.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.decode(self.ids[self.prefix_offset :])
        if new_text.endswith("\ufffd") or len(new_text) <= len(prefix_text):
            return ""
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Whatever is still held back (a truly invalid byte sequence at the very end)."""
        text = self.decode(self.ids[self.prefix_offset :])
        prefix_text = self.decode(self.ids[self.prefix_offset : self.read_offset])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix_text) :]


class ByteDetokenizer:
    """Turns token ids into text deltas through a table of each token's bytes: O(1) per token.

    A byte-level BPE token is a fixed byte string, so the text is the UTF-8 decoding of the tokens' bytes
    joined; an incremental UTF-8 decoder holds back an incomplete character until its last byte arrives
    (llama.cpp streams ``token_to_piece`` bytes the same way). Same deltas as :class:`IncrementalDetokenizer`
    for a table that :func:`phikit.engines.local.byte_table` has checked against the tokenizer, without
    decoding a window of ids per token (16% of the GIL under 32 streams: docs/bench-serve-gpu.md).

    Args:
        table: ``table[id]`` is token ``id``'s bytes.
        decode: ids -> text, for ids past the table (the model's vocabulary can be larger than the tokenizer's).
    """

    def __init__(self, table: Sequence[bytes], decode: Callable[[Sequence[int]], str]):
        self.table = table
        self.decode = decode
        self.ids: list[int] = []
        self.utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        piece = self.table[token_id] if token_id < len(self.table) else self.decode([token_id]).encode()
        return self.utf8.decode(piece)

    def flush(self) -> str:
        """An incomplete UTF-8 sequence at the very end, as U+FFFD (what a whole-text decode gives)."""
        return self.utf8.decode(b"", final=True)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def stream_tokens(
    steps: Iterator[int],
    *,
    decode: Callable[[Sequence[int]], str],
    eos_ids: set[int],
    prompt_tokens: int,
    params: SamplingParams,
    started: float | None = None,
    token_bytes: Sequence[bytes] | None = None,
) -> Iterator[Event]:
    """Drive a backend's token generator and yield text deltas, then one :class:`Done`.

    Args:
        steps: yields one token id per decode step; closed (``.close()``) when we stop, so the backend
            stops computing.
        decode: token ids -> text.
        eos_ids: ids that end generation with ``finish_reason="stop"``.
        prompt_tokens: length of the prompt, for usage.
        params: ``max_new_tokens``, ``stop`` and ``cancel`` are honoured here.
        started: ``time.perf_counter()`` at request start, for TTFT.
        token_bytes: each token's bytes (:func:`phikit.engines.local.byte_table`); when given, text deltas
            come from :class:`ByteDetokenizer` instead of re-decoding a window of ids per token.

    Closing this generator early also closes ``steps``.
    """
    started = time.perf_counter() if started is None else started
    detok = ByteDetokenizer(token_bytes, decode) if token_bytes is not None else IncrementalDetokenizer(decode)
    stops = params.stop
    pending = ""  # text not yet emitted because it may begin a stop string
    emitted: list[str] = []
    finish = "length"
    first_at = last_at = None
    n = 0
    try:
        for tok in steps:
            last_at = time.perf_counter()
            first_at = first_at or last_at
            if tok in eos_ids:
                finish = "stop"
                break
            n += 1
            pending += detok.add(tok)
            if stops:
                cut = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    pending, finish = pending[:cut], "stop"
                    break
                hold = _held_back(pending, stops)
                ready, pending = pending[: len(pending) - hold], pending[len(pending) - hold :]
            else:
                ready, pending = pending, ""
            if ready:
                emitted.append(ready)
                yield TextDelta(ready)
            if n >= params.max_new_tokens:
                break
            if params.cancel is not None and params.cancel.is_set():
                finish = "cancelled"
                break
        else:  # the backend stopped by itself: a batching scheduler ends a cancelled sequence's steps
            if params.cancel is not None and params.cancel.is_set():
                finish = "cancelled"
    finally:
        steps.close()
    if finish != "stop":
        pending += detok.flush()
    if pending:
        emitted.append(pending)
        yield TextDelta(pending)
    decode_s = (last_at - first_at) if first_at and last_at else 0.0
    yield Done(
        finish_reason=finish,
        usage=Usage(prompt_tokens, n),
        ttft_ms=((first_at or time.perf_counter()) - started) * 1000,
        tokens_per_s=(n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0,
        text="".join(emitted),
        token_ids=tuple(detok.ids),
    )


def check_context(prompt_tokens: int, params: SamplingParams, context_length: int) -> None:
    """Raise a clear error when the prompt leaves no room to generate.

    Raises:
        BadRequestError: ``prompt_tokens >= context_length``.
    """
    if prompt_tokens >= context_length:
        raise BadRequestError(
            f"the prompt is {prompt_tokens} tokens but the model's context window is {context_length}; "
            f"shorten the messages"
        )
