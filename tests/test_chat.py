"""`phikit chat` keeps going: the KV cache is reused across turns without changing greedy output, the oldest
turns are dropped near the window with a note, and REPL commands never reach the model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from phikit.engines import SamplingParams
from phikit.session import ChatSession, command, message_text

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "support-bot" / "corpus"


def long_messages(n: int, words: int) -> list[str]:
    text = " ".join(
        w for p in sorted(CORPUS.rglob("*.md")) for w in re.sub(r"[#*`|>]+", " ", p.read_text("utf-8")).split()
    ).split()
    return [f"Read this. {' '.join(text[i * words:(i + 1) * words])} What is it about?" for i in range(n)]


def greedy_ids(engine, messages, n=24):
    done = list(engine.generate(messages, SamplingParams(max_new_tokens=n, temperature=0)))[-1]
    return done.token_ids, done.usage.prompt_tokens


@pytest.fixture(scope="module")
def small_batch_engine():
    """The embedded model with 32-token prompt batches, so that short prompts already span several batches
    (the default is 512; the reuse rule is the same)."""
    from phikit.engines.llamacpp import LlamaCppEngine
    from phikit.models import resolve

    return LlamaCppEngine(resolve("smollm2-135m"), n_ctx=2048, n_batch=32)


def test_kv_reuse_gives_the_same_greedy_output_as_a_cold_run(small_batch_engine, llama_llm):
    assert llama_llm.engine.prefix_cache and llama_llm.engine.llm.n_batch == 512  # on by default
    engine = small_batch_engine
    conversations = [long_messages(3, 70), long_messages(5, 45)[3:]]
    reused, compared = [], 0
    for turns in conversations:
        history = [{"role": "system", "content": "You are a concise assistant."}]
        for text in turns:
            history.append({"role": "user", "content": text})
            warm, prompt_tokens = greedy_ids(engine, history)  # reuses the previous prompt's whole batches
            reused.append(engine.reused_tokens)
            engine._slot = []  # forget the cache: a cold prefill of the same prompt
            cold, _ = greedy_ids(engine, history)
            assert engine.reused_tokens == 0
            assert warm == cold, f"{prompt_tokens} prompt tokens, {reused[-1]} reused"
            compared += 1
            history.append({"role": "assistant", "content": engine.decode(warm)})
    assert compared == 5 and sum(r >= 64 for r in reused) >= 3, reused  # later turns really reused the cache
    assert all(r % 32 == 0 for r in reused)
    # the same prompt twice: the last batch is evaluated again, never sampled from stale logits
    first, _ = greedy_ids(engine, history)
    again, _ = greedy_ids(engine, history)
    assert first == again and engine.reused_tokens > 0


def test_repl_commands_are_never_messages():
    assert command("/help") == "help" and command(" /reset ") == "reset" and command("/clear") == "reset"
    assert command("/exit") == command("/quit") == command("/bye") == "exit"
    assert command("/xyz") == "unknown" and command("/usr/bin is a path") == "unknown"
    assert command("hello /reset") is None and command("//reset") is None and message_text("//reset") == "/reset"


class WordEngine:
    """Counts words as tokens; enough for the window arithmetic."""

    context_length = 1000

    def render(self, messages):
        return " ".join(f"<{m['role']}> {m['content']}" for m in messages)

    def encode(self, text):
        return text.split()

    def encode_prompt(self, messages):
        return self.encode(self.render(messages))


class FakeLLM:
    engine = WordEngine()


def test_oldest_turns_are_dropped_to_half_the_window_and_the_system_prompt_is_kept():
    s = ChatSession(FakeLLM(), system="be brief", reserve=100)
    assert s.window == 1000
    for i in range(4):
        assert s.add_user(f"question {i} " + "w " * 150) is None
        s.add_reply(f"answer {i} " + "w " * 38)
    dropped = s.add_user("question 4 " + "w " * 150)  # 5 x ~195 words > 900
    assert dropped is not None and dropped.turns >= 2 and "context window" in str(dropped)
    assert s.history[0] == {"role": "system", "content": "be brief"}
    assert s.history[-1]["content"].startswith("question 4") and s.history[1]["role"] == "user"
    assert s.count(s.history) <= 500
    # a single message larger than the window is still sent (the engine then says it is too long)
    s.reset()
    assert s.add_user("w " * 2000) is None or s.history[-1]["content"].startswith("w")


def run_chat(*args, input: str, timeout: int = 600):
    env = {**os.environ, "PHIKIT_THREADS": os.environ.get("PHIKIT_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", "phikit", "chat", *args], input=input, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_a_long_chat_through_the_cli_never_errors_and_drops_old_turns():
    turns = long_messages(5, 300)
    script = "\n".join(["/help", "/nosuch", *turns[:3], "/reset", *turns[3:]]) + "\n/exit\n"
    p = run_chat("--temperature", "0", "--max-tokens", "16", "--ctx", "1024", input=script)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "error" not in p.stderr.lower() and "Traceback" not in p.stderr
    stats = re.findall(r"· (\d+)\+(\d+) tokens · TTFT \d+ ms .* · (\d+) cached", p.stderr)
    assert len(stats) == 5, p.stderr[-2000:]  # /help, /nosuch, /reset and /exit never reached the model
    assert "/reset" in p.stderr and "unknown command /nosuch" in p.stderr and "history cleared" in p.stderr
    drops = [line for line in p.stderr.splitlines() if line.startswith("note: dropped")]
    assert drops and all("1024-token context window" in d for d in drops), p.stderr[-2000:]
    prompts = [int(a) for a, _, _ in stats]
    assert max(prompts) <= 1024 - 16


@pytest.mark.slow
def test_chat_with_tools_asks_for_an_order_id_it_was_not_given(tmp_path):
    from phikit.tools.builtins import create_demo_db

    db = create_demo_db(tmp_path / "orders.db")
    env = {"PHIKIT_ORDERS_DB": str(db), "PHIKIT_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "PHIKIT_AUDIT_KEY": "k"}
    os.environ.update(env)
    try:
        p = run_chat("--tools", "get_order_status", "--tool-choice", "required", "-t", "0", "-n", "48",
                     input="Where is order Z9999?\nAnd is it late?\n/exit\n")
    finally:
        for k in env:
            os.environ.pop(k)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "A100" not in p.stdout  # no other customer's order is reported
