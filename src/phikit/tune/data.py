"""Training data: chat or prompt/completion JSONL -> token ids with an assistant-only loss mask, packed.

The mask is computed here rather than by TRL: TRL's ``assistant_only_loss`` needs ``{% generation %}``
markers in the chat template, which neither SmolLM2's nor Phi-4-mini's template has. Each example is
rendered with phikit's own renderer (:func:`phikit.prompt.render`, the one inference uses), so training
and inference see the same text; assistant turns are found as character spans of the rendered text and
mapped to tokens through the tokenizer's offsets.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from ..errors import BadRequestError
from ..prompt import normalize_messages, render

IGNORE = -100  # labels with this value carry no loss (PyTorch's CrossEntropyLoss ignore_index)


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (the data hash stored in an adapter's manifest)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_jsonl(path: str | Path) -> list[dict]:
    """Parse a JSONL file into dicts, naming the first bad line.

    Raises:
        BadRequestError: a missing file, invalid JSON, or a line that is not an object.
    """
    p = Path(path)
    if not p.is_file():
        raise BadRequestError(f"data file {str(path)!r} does not exist")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadRequestError(f"{p.name} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise BadRequestError(f"{p.name} line {n}: expected a JSON object")
        rows.append(row)
    if not rows:
        raise BadRequestError(f"{p.name} holds no examples")
    return rows


def read_examples(path: str | Path) -> list[list[dict] | str]:
    """Training examples from ``{"messages": [...]}``, ``{"prompt": ..., "completion": ...}`` or ``{"text": ...}``
    lines.

    ``text`` is plain text with the loss on every token and no chat template (as TRL's ``text`` datasets):
    e.g. the base model's own continuations replayed next to new facts, to keep its plain-text perplexity.

    Returns:
        One message list per chat example (each has at least one assistant turn), the string per text example.

    Raises:
        BadRequestError: a line of none of these shapes, an empty text, or a chat without an assistant turn.
    """
    out: list[list[dict] | str] = []
    for n, row in enumerate(read_jsonl(path), 1):
        if isinstance(row.get("text"), str) and len(row) == 1:
            if not row["text"].strip():
                raise BadRequestError(f"{Path(path).name} line {n}: the text is empty")
            out.append(row["text"])
            continue
        if "messages" in row:
            try:
                msgs = normalize_messages(row["messages"])
            except BadRequestError as exc:
                raise BadRequestError(f"{Path(path).name} line {n}: {exc}") from None
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            msgs = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
        else:
            raise BadRequestError(
                f"{Path(path).name} line {n}: expected {{\"messages\": [...]}}, {{\"prompt\": ..., \"completion\": ...}} "
                f"or {{\"text\": ...}}"
            )
        if not any(m["role"] == "assistant" for m in msgs):
            raise BadRequestError(f"{Path(path).name} line {n}: no assistant turn to learn from")
        out.append(msgs)
    return out


def split(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """Shuffle with ``seed`` and hold out ``fraction`` of the examples (at least one when fraction > 0)."""
    if not 0 <= fraction < 1:
        raise BadRequestError("the eval split must be in [0, 1)")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n = max(1, round(len(examples) * fraction)) if fraction > 0 and len(examples) > 1 else 0
    held = set(order[:n])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def assistant_spans(messages: list[dict], template: str | None, special: dict[str, str]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns.

    A turn's span starts where the prompt rendered up to it (with the generation prompt) ends and runs
    through the turn's end marker, so the model also learns to stop.

    Raises:
        BadRequestError: the template renders an earlier part of the conversation differently once later
            turns follow (the mask would be wrong).
    """
    full = render(messages, template, add_generation_prompt=False, **special)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = render(messages[:i], template, add_generation_prompt=True, **special) if i else ""
        if not full.startswith(head):
            raise BadRequestError("the chat template renders a conversation's prefix differently from the whole; "
                                  "use prompt/completion data with one assistant turn")
        through = render(messages[: i + 1], template, add_generation_prompt=False, **special)
        spans.append((len(head), _common_prefix(full, through)))
    return full, spans


def tokenize(messages: list[dict], tokenizer, template: str | None, special: dict[str, str], max_length: int) -> dict:
    """Token ids and labels for one conversation: labels are the ids on assistant tokens, ``IGNORE`` elsewhere.

    A token counts as assistant if it lies wholly inside an assistant span (a span's end can fall inside
    the next turn's header: Phi-4-mini's template ends a lone turn with ``eos_token``, whose ``<|`` matches
    the start of ``<|user|>``). Sequences longer than ``max_length`` are cut at ``max_length``.

    Returns:
        ``{"input_ids": [T], "labels": [T]}`` (plain lists of ints).
    """
    text, spans = assistant_spans(messages, template, special)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = enc["input_ids"], []
    for tok, (start, end) in zip(ids, enc["offset_mapping"]):
        inside = any(a <= start and end <= b for a, b in spans)
        labels.append(tok if inside else IGNORE)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def build_dataset(examples: list[list[dict] | str], tokenizer, template: str | None, special: dict[str, str],
                  max_length: int, system_prompt: str | None = None) -> list[dict]:
    """Tokenize every example (adding the model's default system prompt where inference would add it; a text
    example is its own tokens, every one a label).

    Examples left with no trainable token after truncation are dropped.
    """
    rows = []
    for msgs in examples:
        if isinstance(msgs, str):
            ids = tokenizer(msgs, add_special_tokens=False)["input_ids"][:max_length]
            if len(ids) > 1:
                rows.append({"input_ids": ids, "labels": list(ids)})
            continue
        if system_prompt and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": system_prompt}, *msgs]
        row = tokenize(msgs, tokenizer, template, special, max_length)
        if any(label != IGNORE for label in row["labels"]):
            rows.append(row)
    if not rows:
        raise BadRequestError(f"no example has an assistant token within max_length={max_length}")
    return rows


def pack(features: list[dict[str, Any]]) -> dict:
    """Padding-free packing: a batch of examples becomes one row, with position ids restarting per example.

    transformers builds a block-diagonal causal mask from restarting ``position_ids`` (its packed-sequence
    detection), so examples do not attend to each other; the first label of each example is ignored so no
    token is predicted across a boundary. Same idea as transformers' ``DataCollatorWithFlattening`` and
    TRL's ``padding_free``.

    Returns:
        ``input_ids``, ``labels``, ``position_ids``: LongTensors of shape [1, sum of lengths].
    """
    import torch

    ids, labels, pos = [], [], []
    for f in features:
        n = len(f["input_ids"])
        ids += f["input_ids"]
        labels += [IGNORE, *f["labels"][1:]]
        pos += range(n)
    as_row = lambda xs: torch.tensor([xs], dtype=torch.long)  # noqa: E731
    return {"input_ids": as_row(ids), "labels": as_row(labels), "position_ids": as_row(pos)}
