"""messages -> prompt string, through a Jinja chat template.

Every local backend renders prompts here, so the llama.cpp and transformers backends see the same text.
The renderer follows transformers' own (sandboxed Jinja, ``trim_blocks``/``lstrip_blocks``, a ``tojson``
filter that keeps non-ASCII text), but without importing transformers, which costs seconds at start-up.
"""

from __future__ import annotations

import contextvars
import json
from functools import lru_cache
from typing import Any

from .errors import BadRequestError

ROLES = ("system", "user", "assistant", "tool")
# Private-use characters that bracket message data while rendering, so the tokenizer can tell the template's
# own markers (special tokens) from text that merely looks like them (see render_segments).
DATA_OPEN, DATA_CLOSE = "\ue000", "\ue001"
_marking: contextvars.ContextVar[bool] = contextvars.ContextVar("phikit_marking", default=False)

# Phi-4-mini's format, from its model card:
#   <|system|>You are a helpful assistant with some tools.<|tool|>[{...}]<|/tool|><|end|><|user|>...<|end|><|assistant|>
# Tools are a JSON dump (json.dumps defaults) inside the system turn; tool results come back in a `tool`
# turn; an assistant's earlier calls are written in the form the model emits, `functools[...]`.
PHI4_MINI_TEMPLATE = (
    "{%- set tools_json = tools | tojson if tools else none -%}"
    "{%- if tools_json and (messages | length == 0 or messages[0]['role'] != 'system') -%}"
    "<|system|>You are a helpful assistant with some tools.<|tool|>{{ tools_json }}<|/tool|><|end|>"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "<|system|>{{ message['content'] }}"
    "{%- if tools_json and loop.first %}<|tool|>{{ tools_json }}<|/tool|>"
    "{%- elif message.get('tools') %}<|tool|>{{ message['tools'] }}<|/tool|>{%- endif -%}"
    "<|end|>"
    "{%- elif message['role'] == 'assistant' and message.get('tool_calls') -%}"
    "<|assistant|>{{ message['content'] or '' }}functools{{ message['tool_calls'] | map(attribute='function')"
    " | map('phikit_call') | list | tojson }}<|end|>"
    "{%- else -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- else -%}{{ eos_token }}{%- endif -%}"
)
# Phi-4-mini's own tokenizer template reads tools only from a system message's `tools` string; ours is a
# superset that renders the same text and also takes `tools=` (tests pin the equivalence).
_PHI4_STOCK_MARK = "'<|tool|>' + message['tools'] + '<|/tool|>'"


def effective_template(template: str | None) -> str:
    """The template phikit renders with: Phi-4-mini's (ours) when there is none or the model ships the stock one."""
    if not template or _PHI4_STOCK_MARK in template:
        return PHI4_MINI_TEMPLATE
    return template


def normalize_messages(messages: Any) -> list[dict]:
    """Validate OpenAI-shaped messages; a bare string becomes one user message.

    Args:
        messages: ``str`` or a list of ``{"role": ..., "content": ...}`` dicts (``tool_calls`` allowed on
            assistant messages, ``tool_call_id``/``name`` on tool messages). ``content`` may be None on an
            assistant message that carries tool calls, or a list of ``{"type": "text", "text": ...}`` parts.

    Returns:
        A new list of plain dicts with string content.

    Raises:
        BadRequestError: empty input, unknown role, or non-text content.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise BadRequestError("messages is empty: give at least one {'role': 'user', 'content': '...'} message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequestError(f"messages[{i}] is {type(m).__name__}, expected a dict with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise BadRequestError(f"messages[{i}] has role {role!r}; use one of {', '.join(ROLES)}")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise BadRequestError(f"messages[{i}] has non-text content parts; only text is supported")
            content = "".join(p.get("text", "") for p in content)
        if content is None and role == "assistant" and m.get("tool_calls"):
            content = ""
        if not isinstance(content, str):
            raise BadRequestError(f"messages[{i}].content must be a string")
        out.append({**m, "content": content})
    if not any(m["content"].strip() for m in out if m["role"] == "user") and out[-1]["role"] == "user":
        raise BadRequestError("the prompt is empty: write a question or instruction")
    return out


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return f"{DATA_OPEN}{text}{DATA_CLOSE}" if _marking.get() else text


def _call_dict(fn: dict) -> dict:
    """OpenAI ``function`` ({name, arguments: JSON string}) -> Phi-4-mini's ``{name, arguments: {...}}``."""
    args = fn.get("arguments", {})
    if isinstance(args, str):
        args = args.replace(DATA_OPEN, "").replace(DATA_CLOSE, "")  # data marks come back from tojson
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass
    return {"name": fn.get("name"), "arguments": args}


def _raise(message: str) -> None:
    raise BadRequestError(f"chat template: {message}")


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.filters["phikit_call"] = _call_dict
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render(
    messages: Any,
    template: str | None = None,
    *,
    tools: list[dict] | None = None,
    add_generation_prompt: bool = True,
    **special: Any,
) -> str:
    """Render messages to the prompt string the model was trained on.

    Args:
        messages: OpenAI-shaped messages (see :func:`normalize_messages`).
        template: a Jinja chat template (the tokenizer's or the GGUF's); None, or Phi-4-mini's stock
            template, means phikit's Phi-4-mini template.
        tools: tool definitions passed to the template as ``tools`` (rendered as given).
        add_generation_prompt: end with the assistant header so the model answers.
        **special: extra template variables such as ``bos_token`` and ``eos_token``.

    Returns:
        The prompt text, special tokens included as text.

    Raises:
        BadRequestError: invalid messages, or the template raised.
    """
    msgs = normalize_messages(messages)
    tpl = _compile(effective_template(template))
    ctx = {"bos_token": "", "eos_token": "", **special}
    return tpl.render(messages=msgs, tools=tools or None, add_generation_prompt=add_generation_prompt, **ctx)


def _mark(value: Any, key: str = "") -> Any:
    """Bracket every non-empty string in ``value`` as data (roles stay plain: the template branches on them)."""
    if isinstance(value, str):
        if key == "role" or not value:
            return value
        clean = value.replace(DATA_OPEN, "\ufffd").replace(DATA_CLOSE, "\ufffd")
        return f"{DATA_OPEN}{clean}{DATA_CLOSE}"
    if isinstance(value, dict):
        return {k: _mark(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mark(v) for v in value]
    return value


def render_segments(
    messages: Any, template: str | None = None, *, tools: list[dict] | None = None,
    add_generation_prompt: bool = True, **special: Any,
) -> list[tuple[str, bool]]:
    """Render like :func:`render`, split into ``(text, is_template)`` pieces: messages are data.

    Every string a client, user, document or tool supplied (message contents, names, tool calls, tool
    definitions) is bracketed while the template renders; afterwards the text outside any bracket is the
    template's own (its special tokens are real markers) and the text inside is data, to be tokenized without
    special-token parsing, so ``<|im_start|>system`` typed in a message stays ordinary text. Joining the pieces'
    text gives the prompt (up to the template's string tests on content, e.g. ``trim``).

    Returns:
        Pieces in order; consecutive pieces alternate between template text and data.
    """
    msgs = _mark(normalize_messages(messages))
    token = _marking.set(True)
    try:
        text = render(msgs, template, tools=_mark(tools) if tools else None,
                      add_generation_prompt=add_generation_prompt, **special)
    finally:
        _marking.reset(token)
    pieces: list[tuple[str, bool]] = []
    depth, buf = 0, []
    for ch in text:
        if ch in (DATA_OPEN, DATA_CLOSE):
            inside = depth > 0
            depth = depth + 1 if ch == DATA_OPEN else max(0, depth - 1)
            if (depth > 0) != inside and buf:
                pieces.append(("".join(buf), not inside))
                buf = []
            continue
        buf.append(ch)
    if buf:
        pieces.append(("".join(buf), depth == 0))
    return pieces
