"""A multi-turn chat that keeps going: history, the context window, and the commands a REPL handles itself.

The engine keeps the KV cache of the last prompt (llama.cpp's ``prefix_cache``), so each turn prefills only
what is new. When the history nears the context window, the oldest turns are dropped (the system prompt is
kept) down to half the window, as llama.cpp's own context shift discards half of the context when full
(``n_discard = n_left / 2`` in llama.cpp's server): dropping one turn at a time would change the prompt's
start, and so miss the cache, on every later turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMMANDS = {
    "/help": "show this help",
    "/reset": "clear the history (the system prompt is kept)",
    "/exit": "leave (also /quit, /bye, Ctrl-D)",
}
EXIT_ALIASES = ("/exit", "/quit", "/bye")
PER_MESSAGE_TOKENS = 8  # role markers around a message, for engines that cannot render the prompt


def help_text() -> str:
    """The lines ``/help`` prints."""
    return "\n".join(f"  {cmd:<7} {what}" for cmd, what in COMMANDS.items())


def command(text: str) -> str | None:
    """The REPL command a line names: ``help``, ``reset``, ``exit``, ``unknown`` (any other ``/word``), or None
    for a message to send. Commands are never sent to the model; a message that must start with ``/`` is
    typed with ``//`` (see :func:`message_text`)."""
    t = text.strip()
    if not t.startswith("/") or t.startswith("//"):
        return None
    word = t.split()[0].lower()
    if word in EXIT_ALIASES:
        return "exit"
    return {"/help": "help", "/?": "help", "/reset": "reset", "/clear": "reset"}.get(word, "unknown")


def message_text(text: str) -> str:
    """The message to send for a line that is not a command (``//x`` sends ``/x``)."""
    t = text.strip()
    return t[1:] if t.startswith("//") else t


@dataclass
class Dropped:
    """Turns removed from the start of the history to fit the window."""

    turns: int
    tokens: int
    window: int

    def __str__(self) -> str:
        s = "" if self.turns == 1 else "s"
        return (f"note: dropped the {self.turns} oldest turn{s} ({self.tokens} tokens) to fit the "
                f"{self.window}-token context window; the system prompt is kept")


@dataclass
class ChatSession:
    """The history of one chat and the window it must fit.

    Args:
        llm: a loaded :class:`~phikit.llm.LLM`.
        system: the system prompt (kept when turns are dropped).
        window: the context window in tokens (default: the engine's ``context_length``).
        reserve: tokens kept free for the reply and for what the request adds to the prompt (a CoT
            instruction, a tools block, retrieved passages).
    """

    llm: Any
    system: str | None = None
    window: int | None = None
    reserve: int = 512
    history: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        engine_window = getattr(self.llm.engine, "context_length", None) or 4096
        self.window = min(self.window or engine_window, engine_window)
        self.reserve = min(self.reserve, self.window // 2)
        self.reset()

    def reset(self) -> None:
        self.history = [{"role": "system", "content": self.system}] if self.system else []

    def count(self, messages: list[dict]) -> int:
        """Prompt tokens for ``messages`` under the model's chat template (an estimate on remote engines)."""
        engine = self.llm.engine
        if hasattr(engine, "encode_prompt"):  # the ids the engine will really see (messages as data)
            return len(engine.encode_prompt(messages))
        return sum(engine.count_tokens(str(m.get("content") or "")) + PER_MESSAGE_TOKENS for m in messages)

    def add_user(self, text: str) -> Dropped | None:
        """Append a user message, dropping the oldest turns first if the prompt would not leave ``reserve``
        tokens free. Turns are dropped down to half the window; the newest user message is always kept.

        Returns:
            What was dropped, or None.
        """
        self.history.append({"role": "user", "content": text})
        limit = self.window - self.reserve
        if self.count(self.history) <= limit:
            return None
        before = self.count(self.history)
        head = 1 if self.history and self.history[0]["role"] == "system" else 0
        turns = 0
        target = min(limit, self.window // 2)
        while len(self.history) - head > 1 and self.count(self.history) > target:
            # one turn: a user message and everything up to the next user message (the reply)
            end = head + 1
            while end < len(self.history) - 1 and self.history[end]["role"] != "user":
                end += 1
            del self.history[head:end]
            turns += 1
        return Dropped(turns, before - self.count(self.history), self.window) if turns else None

    def add_reply(self, text: str) -> None:
        self.history.append({"role": "assistant", "content": text})

    def undo_user(self) -> None:
        """Remove the last user message (its reply failed or was interrupted)."""
        if self.history and self.history[-1]["role"] == "user":
            self.history.pop()

    def messages(self) -> list[dict]:
        return list(self.history)
