"""Schema-constrained decoding with xgrammar, as a logits processor both backends apply.

xgrammar (Dong et al. 2024, "XGrammar: Flexible and Efficient Structured Generation Engine for LLMs")
compiles a JSON Schema into a pushdown automaton over the tokenizer's vocabulary and fills a bitmask of
allowed next tokens; we set the others to -inf. It was picked over llama.cpp's JSON-schema GBNF grammars
(``LlamaGrammar.from_json_schema``), measured by bench/tools_bench.py (figures in docs/bench-tools.md): GBNF
costs fewer ms per token on llama.cpp, but exists only there, while one xgrammar processor serves both
backends, compiles $defs/anyOf/pattern schemas, and sees the logits, which the two nudges below need (they
turn the 135M model's truncated or junk-filled calls into complete ones).

With ``tool_choice`` ``required`` or a named function the model must write ``functools[...]`` (Phi-4-mini's
own call form) whose JSON is an array of ``{"name": <declared>, "arguments": <that tool's schema>}``;
``response_format`` constrains a plain answer to its schema.
"""

from __future__ import annotations

import collections
import copy
import json
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from ..errors import BadRequestError
from .schema import Tool

# Arrays without a bound let a weak model list items until max_new_tokens, leaving truncated JSON; a bound in
# the *grammar* schema (not the validation schema) makes the output finish. Strings stay unbounded: xgrammar
# unrolls maxLength into states, and maxLength=64 costs 2.7 s to compile on this vocabulary (measured).
DEFAULT_MAX_ITEMS = 8
# Argument strings in a constrained call may not contain { } [ ]: measured on SmolLM2-135M, the commonest
# failure is "closing" the JSON inside a string ({"expression":"17 + 25}}] = 42 ..."). A tool that needs
# brackets in a string sets its own "pattern". Applied to the grammar only, never to validation.
NO_BRACKETS = r"^[^{}\[\]]*$"
MAX_CALLS = 4
MAX_GRAMMARS = 64  # compiled grammars kept per engine (least recently used dropped): clients send schemas

_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def bounded(schema: Any, max_items: int = DEFAULT_MAX_ITEMS) -> Any:
    """A copy of ``schema`` with ``maxItems`` on unbounded arrays."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            types = node.get("type")
            types = types if isinstance(types, list) else [types]
            if "array" in types:
                node.setdefault("maxItems", max_items)
            # (xgrammar ignores min/maxLength next to a pattern, so bounded strings keep their bounds instead)
            if "string" in types and not {"enum", "const", "pattern", "format", "minLength", "maxLength"} & node.keys():
                node["pattern"] = NO_BRACKETS
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def call_schema(tools: list[Tool], tool_choice: Any, parallel: bool = False) -> dict:
    """JSON Schema of the call list a constrained turn must produce.

    Args:
        tools: declared tools.
        tool_choice: ``required`` (any declared tool) or ``{"type": "function", "function": {"name": ...}}``
            / a bare name (that tool only).
        parallel: allow up to 4 calls in the turn (OpenAI's ``parallel_tool_calls``). Off by default: on
            the 135M model, extra calls are repeats that run out of tokens before their JSON closes.

    Raises:
        BadRequestError: no tools, or a named tool that is not declared.
    """
    if not tools:
        raise BadRequestError("tool_choice needs tools: pass tools=[...] or use tool_choice='auto'")
    name = choice_name(tool_choice)
    chosen = tools
    if name is not None:
        chosen = [t for t in tools if t.name == name]
        if not chosen:
            raise BadRequestError(f"tool_choice names {name!r}, which is not among the tools ({', '.join(t.name for t in tools)})")
    defs: dict[str, Any] = {}
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": _hoist_defs(bounded(t.parameters), defs)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in chosen
    ]
    return {
        **({"$defs": defs} if defs else {}),
        "type": "array",
        "items": variants[0] if len(variants) == 1 else {"anyOf": variants},
        "minItems": 1,
        "maxItems": MAX_CALLS if parallel and name is None else 1,
    }


def _hoist_defs(schema: dict, defs: dict) -> dict:
    """Move ``$defs``/``definitions`` to the root of the call schema, where ``#/$defs/...`` refs point.

    Raises:
        BadRequestError: two tools define the same name differently.
    """
    schema = dict(schema)
    for key in ("$defs", "definitions"):
        for name, sub in (schema.pop(key, None) or {}).items():
            if defs.get(name, sub) != sub:
                raise BadRequestError(f"two tools define {name!r} differently in $defs; rename one")
            defs[name] = sub
    return json.loads(json.dumps(schema).replace('"#/definitions/', '"#/$defs/'))


def choice_name(tool_choice: Any) -> str | None:
    """The function a ``tool_choice`` names, or None for auto/none/required.

    Raises:
        BadRequestError: a malformed ``tool_choice``.
    """
    if tool_choice in (None, "auto", "none", "required", "any"):
        return None
    if isinstance(tool_choice, str):
        return tool_choice
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function") or {}
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return fn["name"]
        if isinstance(tool_choice.get("name"), str):
            return tool_choice["name"]
    raise BadRequestError(
        f"tool_choice {tool_choice!r} is not valid; use 'auto', 'none', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}"
    )


def response_format_schema(response_format: dict | None) -> dict | None:
    """The schema a ``response_format`` asks for: None for text, ``{}`` for any JSON object.

    Raises:
        BadRequestError: an unknown type or a json_schema without a schema.
    """
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema", spec if "type" in spec or "properties" in spec else None)
        if not isinstance(schema, dict):
            raise BadRequestError("response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}")
        return schema
    raise BadRequestError(f"response_format type {kind!r} is unknown; use text, json_object or json_schema")


def _tokenizer_info(engine: Any):
    """xgrammar's view of the engine's vocabulary (cached per engine); returns (info, logits width)."""
    import xgrammar as xgr

    stop = sorted(getattr(engine, "eos_ids", ()) or ())
    if hasattr(engine, "tokenizer"):  # transformers; onnx (which says its logits width)
        width = getattr(engine, "logits_width", None) or int(engine.model.get_output_embeddings().weight.shape[0])
        info = xgr.TokenizerInfo.from_huggingface(engine.tokenizer, vocab_size=width, stop_token_ids=stop)
        return info, width
    if hasattr(engine, "llm") and hasattr(engine.llm, "_model"):  # llama.cpp
        width = engine.llm.n_vocab()
        # special=False maps control tokens to b"", which xgrammar treats as special: never allowed in JSON.
        vocab = [engine.llm.detokenize([i], special=False) for i in range(width)]
        return xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=width, stop_token_ids=stop), width
    if hasattr(engine, "token_bytes"):  # any other engine that lists its vocabulary as bytes, id order
        vocab = engine.token_bytes()
        return xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=len(vocab), stop_token_ids=stop), len(vocab)
    raise BadRequestError(f"constrained decoding is not available on the {getattr(engine, 'name', '?')} backend")


def _compiler(engine: Any):
    with _lock:
        entry = _cache.get(engine)
        if entry is None:
            import xgrammar as xgr

            info, width = _tokenizer_info(engine)
            # Tokens made only of closing characters: used to wrap up when the token budget runs low.
            vocab = info.decoded_vocab
            closers = [i for i, t in enumerate(vocab) if t and set(t) <= set(b'"}]')]
            entry = {
                "compiler": xgr.GrammarCompiler(info, max_threads=2), "width": width,
                "grammars": collections.OrderedDict(),
                "closers": closers,
                "wants_close": {i for i, t in enumerate(vocab) if t[:1] in (b"}", b"]")},
                "quote_closers": [i for i in closers if vocab[i][:1] == b'"'],
            }
            _cache[engine] = entry
        return entry


def compile_schema(engine: Any, schema: dict, *, prefix: str = ""):
    """Compile ``schema`` (optionally preceded by a literal ``prefix``) for ``engine``; cached.

    Returns:
        ``(compiled_grammar, logits_width, vocabulary facts)``.

    Raises:
        BadRequestError: the schema uses something the grammar compiler cannot express.
    """
    import xgrammar as xgr

    entry = _compiler(engine)
    key = (prefix, json.dumps(schema, sort_keys=True))
    grammars = entry["grammars"]
    with _lock:
        hit = grammars.get(key)
        if hit is not None:
            grammars.move_to_end(key)
            return hit, entry["width"], entry
    try:
        # Compact separators: measured on SmolLM2-135M, `{"expression":"` is followed by the expression,
        # where `{"expression": "` is followed by `}}]` (a string of junk) for most questions.
        grammar = xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        if prefix:
            grammar = xgr.Grammar.concat(xgr.Grammar.from_ebnf(f"root ::= {json.dumps(prefix)}"), grammar)
        compiled = entry["compiler"].compile_grammar(grammar)
    except Exception as exc:  # xgrammar raises RuntimeError/InvalidJSONError with a long message
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BadRequestError(f"the JSON schema cannot be compiled into a grammar: {first}") from None
    with _lock:
        grammars[key] = compiled
        while len(grammars) > MAX_GRAMMARS:
            grammars.popitem(last=False)
    return compiled, entry["width"], entry


class GrammarProcessor:
    """A phikit logits processor: ``proc(ids, logits [V]) -> logits`` with disallowed tokens at -inf.

    One instance serves one generation: it remembers where the prompt ended on its first call and feeds
    each newly generated token to the matcher on the next. Two nudges keep weak models' JSON whole:

    - when the model's own top token starts with ``}`` or ``]`` but the grammar forbids it (it is inside a
      string), the string is closed first: only allowed tokens made of ``"``, ``}``, ``]`` remain;
    - when fewer than ``min(32, budget // 3)`` tokens of ``budget`` are left, the same closing tokens are
      preferred whenever one is allowed, so a model repeating itself still ends before ``max_new_tokens``.
    """

    def __init__(self, compiled: Any, width: int, vocab: dict | None = None, budget: int | None = None):
        import torch
        import xgrammar as xgr

        vocab = vocab or {}
        self.matcher = xgr.GrammarMatcher(compiled)
        self.width = width
        self.closers = torch.tensor(vocab.get("closers", []), dtype=torch.long)
        self.quote_closers = torch.tensor(vocab.get("quote_closers", []), dtype=torch.long)
        self.wants_close = vocab.get("wants_close", set())
        self.wrap_up_at = None if budget is None else max(1, budget - min(32, budget // 3))
        self.bitmask = xgr.allocate_token_bitmask(1, width)
        self.start: int | None = None
        self.fed = 0
        self.error: str | None = None

    def __call__(self, ids: Sequence[int], logits: Any) -> Any:
        import torch
        import xgrammar as xgr

        if self.start is None:
            self.start = len(ids)
        new = list(ids[self.start + self.fed :])
        self.fed += len(new)
        # llama-cpp-python hands a strided view into its candidates array; transformers an inference tensor.
        if not logits.is_contiguous() or logits.is_inference():
            logits = logits.clone(memory_format=torch.contiguous_format)
        for tok in new:
            if not self.matcher.accept_token(int(tok)):
                # Only possible if a backend sampled outside the mask; end the turn (validation reports it).
                self.error = f"the backend sampled token {tok} outside the grammar"
                stop = list(self.matcher.stop_token_ids)
                kept = logits[stop].clone()
                logits.fill_(float("-inf"))
                logits[stop] = kept
                return logits
        top = int(logits[: self.width].argmax())
        self.matcher.fill_next_token_bitmask(self.bitmask)
        # the matcher fills a CPU bitmask; on a GPU backend (fast) the mask goes to the logits' device and
        # xgrammar applies it there (its CUDA kernel), so the [V] logits never come back to the host
        mask = self.bitmask.to(logits.device) if logits.device.type != "cpu" else self.bitmask
        xgr.apply_token_bitmask_inplace(logits[: self.width].unsqueeze(0), mask)
        if logits.shape[0] > self.width:  # padded logits beyond the vocabulary
            logits[self.width :] = float("-inf")
        if top in self.wants_close and logits[top] == float("-inf"):
            self._only(logits, self.quote_closers)
        elif self.wrap_up_at is not None and self.fed >= self.wrap_up_at:
            self._only(logits, self.closers)
        return logits

    def _only(self, logits: Any, ids: Any) -> None:
        """Keep only ``ids`` (and stop tokens) when at least one of them is allowed."""
        if not len(ids):
            return
        kept = logits[ids]
        if bool((kept > float("-inf")).any()):
            stop = list(self.matcher.stop_token_ids)
            kept_stop = logits[stop].clone()
            logits.fill_(float("-inf"))
            logits[ids] = kept
            logits[stop] = kept_stop

    @property
    def completed(self) -> bool:
        return self.matcher.is_terminated()


def processor_for(engine: Any, schema: dict, *, prefix: str = "", budget: int | None = None) -> GrammarProcessor:
    """A fresh :class:`GrammarProcessor` for one generation on ``engine``.

    Args:
        engine: a local engine (llama.cpp or transformers).
        schema: the JSON Schema the output must satisfy.
        prefix: literal text the output starts with (``functools`` for calls).
        budget: the generation's ``max_new_tokens``, to wrap up in time (None: never).

    Raises:
        BadRequestError: the schema cannot be compiled, or the backend has no local vocabulary.
    """
    compiled, width, vocab = compile_schema(engine, schema, prefix=prefix)
    return GrammarProcessor(compiled, width, vocab, budget)
