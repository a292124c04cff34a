"""Identifier arguments must come from the user: an order id, e-mail or account number that the user never
wrote is not looked up.

A small model asked "Where is order Z9999?" may call ``get_order_status({"order_id": "A1001"})`` because
A1001 was the example in the tool's description, and then report another customer's order. So an argument
that names a record is checked before the call runs: its value must appear in the user's own messages
(not in the system prompt, a document or a tool result). If it does not, the call is not executed, the model
gets an error result saying which id is missing, and the user is asked for it.

Which arguments name a record:

- explicitly, ``"x-phikit-identifier": true`` on the property in the tool's JSON Schema (``false`` opts out),
  or ``@tool(identifiers=["order_id"])``;
- otherwise by ``format`` (``email``, ``uuid``) or by name: ``id``, ``*_id``, ``*_ids``, ``email``,
  ``iban``, ``account``, ``phone``, ``sku`` and ``order/invoice/account/tracking/… _number/_no/_ref/_code``.

The match is on whole words of the user's text, ignoring case and separators ("a-1001" matches "A1001",
"555 010 2000" matches "5550102000"), never on a part of a word: "1234" does not match "12345".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

IDENTIFIER_KEY = "x-phikit-identifier"
_ID_NAME = re.compile(
    r"^(?:(?:.+_)?(?:id|ids|uuid|guid|email|e_?mail|iban|account|phone|sku|ssn)"
    r"|(?:.+_)?(?:order|invoice|account|tracking|phone|card|reference|ticket|customer|booking|confirmation|"
    r"case|policy|member|serial)_?(?:number|no|num|ref|code|id))$"
)
_ID_FORMATS = {"email", "idn-email", "uuid"}
_WORD = re.compile(r"[^\s,;:!?()\[\]{}<>\"'`]+")
MAX_WORDS_JOINED = 4  # "555 010 2000" is three words; an id is rarely split further


def _compact(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.casefold())


def is_identifier(name: str, prop: Any) -> bool:
    """Whether the argument ``name`` with JSON Schema ``prop`` names a record (see the module docstring)."""
    prop = prop if isinstance(prop, dict) else {}
    if IDENTIFIER_KEY in prop:
        return bool(prop[IDENTIFIER_KEY])
    types = prop.get("type")
    types = {types} if isinstance(types, str) else set(types or ())
    if types and not types & {"string", "integer"}:
        return False
    return prop.get("format") in _ID_FORMATS or bool(_ID_NAME.match(name.casefold()))


def identifier_args(parameters: dict) -> list[str]:
    """The top-level arguments of a tool's parameter schema that name records."""
    props = (parameters or {}).get("properties") or {}
    return [name for name, prop in props.items() if is_identifier(name, prop)]


def strip_marks(schema: Any) -> Any:
    """The schema without ``x-phikit-*`` keys: what the model and other servers are shown."""
    if isinstance(schema, dict):
        return {k: strip_marks(v) for k, v in schema.items() if not (isinstance(k, str) and k.startswith("x-phikit-"))}
    if isinstance(schema, list):
        return [strip_marks(v) for v in schema]
    return schema


def appears_in(value: Any, texts: Iterable[str]) -> bool:
    """True when ``value`` is written in ``texts`` as one word, or as up to 4 adjacent words joined.

    Case and separators (``-``, ``.``, ``_``, spaces) are ignored; a value is never matched inside a longer
    word.
    """
    want = _compact(str(value))
    if not want:
        return True  # nothing to attribute (an empty string is the schema's business)
    for text in texts:
        words = [_compact(w) for w in _WORD.findall(text or "")]
        words = [w for w in words if w]
        for i in range(len(words)):
            joined = ""
            for w in words[i : i + MAX_WORDS_JOINED]:
                joined += w
                if joined == want:
                    return True
                if len(joined) >= len(want):
                    break
    return False


def missing_identifiers(parameters: dict, arguments: dict, user_texts: Sequence[str]) -> list[tuple[str, str]]:
    """``(argument, value)`` for each identifier argument whose value the user never wrote.

    Args:
        parameters: the tool's JSON Schema for its arguments.
        arguments: the call's arguments (already validated against ``parameters``).
        user_texts: the content of every ``user`` message of the conversation.
    """
    out = []
    for name in identifier_args(parameters):
        value = arguments.get(name)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None or isinstance(v, (bool, dict, list)):
                continue
            if not appears_in(v, user_texts):
                out.append((name, str(v)))
    return out


def label(argument: str) -> str:
    """``order_id`` -> ``order id``: how to name the argument to a person."""
    return re.sub(r"[_\s]+", " ", argument).strip() or argument


def ask_user(missing: Sequence[tuple[str, str]]) -> str:
    """The question for the user when calls were blocked for ids they never gave."""
    names = list(dict.fromkeys(label(name) for name, _ in missing))
    what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"I can't look that up without the {what}. Please tell me the exact {what}."
