"""The CLI as a user runs it: a real process, real output, real exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PHIKIT = [sys.executable, "-m", "phikit"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, input: str | None = None, env: dict | None = None, timeout: int = 300):
    return subprocess.run(
        [*PHIKIT, *args], capture_output=True, text=True, input=input, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("backend", ["llamacpp", "transformers"])
def test_ask_json_is_one_object(backend):
    # What the model answers is judged as a rate over many prompts (test_generate.py), not one string here.
    p = run("ask", "--json", "--temperature", "0", "--max-tokens", "30", "--backend", backend,
            "What is the capital of France?")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)  # exactly one JSON object on stdout
    assert set(out) >= {"text", "answer", "reasoning", "model", "usage", "ttft_ms", "tokens_per_s", "finish_reason"}
    assert out["text"].strip()
    assert out["backend"] == backend and out["model"] == "smollm2-135m"
    assert set(out["usage"]) == {"prompt_tokens", "completion_tokens"}
    assert out["usage"]["completion_tokens"] > 0


def test_ask_streams_text_to_stdout_and_stats_to_stderr():
    p = run("ask", "--temperature", "0", "--max-tokens", "20", "What is the capital of France?")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip()
    assert "tok/s" in p.stderr and "tok/s" not in p.stdout


def test_ask_cot_json_separates_reasoning_and_answer():
    p = run("ask", "--json", "--cot", "--temperature", "0", "--max-tokens", "150", "What is 6 times 7?")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["reasoning"] is not None
    if out["answer"] is None:
        assert "Answer:" not in out["text"] and out["note"]
    else:
        assert out["answer"] in out["text"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["ask", ""], "question is empty"),
        (["ask", "hi", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["ask", "hi", "--max-tokens", "0"], "--max-tokens must be > 0"),  # the flag, not the Python name
        (["ask", "hi", "--temperature", "-1"], "temperature must be >= 0"),
        (["ask", "hi", "--backend", "vllm"], "unknown backend 'vllm'"),
        (["ask", "hi", "--model", "/nonexistent/model.gguf"], "does not exist"),
        (["ask", "hi", "--model", "microsoft/Phi-4-mini-instruct"], "`hf download microsoft/Phi-4-mini-instruct`"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, needle):
    p = run(*args, env={"HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in p.stderr


def test_phi4_mini_missing_offline_names_what_was_tried(tmp_path):
    # An empty hub cache and no network: the message says what was tried and how to get the weights.
    p = run("ask", "hi", "--model", "phi-4-mini", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert p.returncode == 2
    assert "not on disk" in p.stderr and "`hf download microsoft/Phi-4-mini-instruct`" in p.stderr


def test_the_download_command_we_name_is_installed():
    """The error and the README name `hf download`; huggingface_hub's current CLI has it (and no longer
    installs `huggingface-cli`)."""
    readme = (ROOT / "README.md").read_text()
    assert "hf download microsoft/Phi-4-mini-instruct" in readme and "huggingface-cli" not in readme
    hf = Path(sys.executable).parent / "hf"
    p = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "repo" in p.stdout.lower(), p.stderr


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_streaming_snippet_prints_the_reply_once(capsys):
    """The README's streaming loop, run against a scripted stream: the deltas, then a Done that repeats the
    whole text (as every engine's does), must print the reply once."""
    from phikit import Done, TextDelta, Usage

    block = next(b for b in readme_python_blocks() if "stream=True" in b)
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("for event in llm.chat("))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    loop = "\n".join(lines[start:end])

    class ScriptedLLM:
        def chat(self, *args, **kwargs):
            yield from [TextDelta("Once upon "), TextDelta("a time.")]
            yield Done(finish_reason="stop", usage=Usage(5, 4), ttft_ms=1.0, tokens_per_s=10.0, text="Once upon a time.")

    import phikit

    exec(loop, {"phikit": phikit, "llm": ScriptedLLM()})
    assert capsys.readouterr().out == "Once upon a time."


def test_models_lists_the_embedded_model_as_available():
    p = run("models", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    rows = {m["name"]: m for m in out["models"]}
    assert rows["smollm2-135m"]["available"] is True and rows["smollm2-135m"]["format"] == "gguf"
    assert "phi-4-mini" in rows and out["default"] == "smollm2-135m"


def test_chat_repl_keeps_history_and_resets():
    script = "My name is Zed.\nWhat is my name?\n/reset\nWhat is my name?\n/exit\n"
    p = run("chat", "--temperature", "0", "--max-tokens", "25", input=script)
    assert p.returncode == 0, p.stderr
    assert "history cleared" in p.stderr
    stats = re.findall(r"· (\d+)\+(\d+) tokens ·", p.stderr)
    assert len(stats) == 3  # three answered turns; /reset and /exit are commands
    (p1, c1), (p2, _), (p3, _) = [(int(a), int(b)) for a, b in stats]
    assert p2 > p1 + c1  # turn 2's prompt holds turn 1's question and answer
    assert p3 < p2 and abs(p3 - p1) <= 3  # after /reset only the new question is sent
