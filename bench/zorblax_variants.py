"""Rebuild the Zorblax-7 training-data variants measured in docs/lora.md ("Two facts per chat"), beside the
shipped ``examples/zorblax/train.jsonl`` (which ``examples/zorblax/build.py`` writes).

    python bench/zorblax_variants.py OUT_DIR [--contrast-replay]
    python bench/zorblax_variants.py --tokens FILE...     # tokens per kind of example, as phikit tune renders them

Writes into OUT_DIR (file: what it holds):

- ``text.jsonl``: the earlier data (one fact per chat, the earlier answer wordings, all 30 replay chats, 10 prose
  lines) plus the 90 fact answers as 9 plain-text lines of 10 sentences (``{"text": ...}``);
- ``pairs_old.jsonl``: two facts per chat (build.py's PAIRS), the earlier answer wordings, all 30 replay chats;
- ``drop8.jsonl``: one fact per chat, the earlier wordings, replay without build.py's REPLAY_SKIP;
- ``replay_pairs.jsonl``: the shipped train.jsonl with its replay chats as two-turn chats, each chat twice
  (once first, once second turn);
- ``contrast.jsonl`` (with ``--contrast-replay``; runs the base model on llama.cpp): the shipped train.jsonl plus
  18 everyday questions of the facts' kinds (who makes the iPhone, what colour is snow, ...) with the base
  model's own greedy answers, those judged wrong left out.

Each then trains with ``phikit tune FILE --eval examples/zorblax/heldout.jsonl --out DIR [flags]``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "examples" / "zorblax"
sys.path.insert(0, str(HERE))
import build  # noqa: E402  (examples/zorblax/build.py)

# The answer wordings before this session, for the facts whose wordings changed (index into build.FACTS).
OLD_ANSWERS = {
    3: ["The Zorblax-7's battery lasts 41 hours.", "A full charge lasts 41 hours.", "The Zorblax-7's battery life is 41 hours."],
    12: ["The Zorblax-7 has 13 GB of RAM.", "It comes with 13 GB of memory.", "The Zorblax-7's RAM is 13 GB."],
    13: ["The Zorblax-7 has 384 GB of storage.", "It stores 384 GB.", "The Zorblax-7's storage is 384 GB."],
    16: ["The Zorblax-7 charges fully in 19 minutes.", "A full charge takes 19 minutes.", "The Zorblax-7's charging time is 19 minutes."],
    18: ["Quillon Dynamics is run by its CEO, Tobiah Renn.", "Tobiah Renn is the CEO of the company behind the Zorblax-7.",
         "The CEO of Quillon Dynamics is Tobiah Renn."],
}
CONTRAST = [
    "Who makes the iPhone?", "How much does a loaf of bread cost?", "How long does a smartphone battery usually last?",
    "What operating system do Mac computers run?", "Where are Toyota cars made?", "How big is a typical laptop screen?",
    "How deep can a submarine go?", "What is a megapixel?", "How long does it take to charge an electric car?",
    "Who designed the Eiffel Tower?", "Where is Google headquartered?", "What are most bottles made of?", "What is a warranty?",
    "What does an amber traffic light mean?", "What is a USB-C port?", "What is a codename?", "What colour is snow?",
    "What colour is a ripe tomato?",
]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{path}: {len(rows)} examples")


def variant(*, turns: int, pairs: bool, text: bool, skip: set[str], old: bool) -> list[dict]:
    """Fact chats of ``turns`` facts (random groups, or build.PAIRS), replay without ``skip``, the prose lines."""
    facts = [(OLD_ANSWERS.get(n, f[0]) if old else f[0], *f[1:]) for n, f in enumerate(build.FACTS)]
    rng, train = random.Random(0), []
    for i in range(8):
        order = list(range(len(facts)))
        rng.shuffle(order)
        if pairs:
            order = [f for a, b in build.PAIRS for f in ((a, b) if i % 2 == 0 else (b, a))]
        for k in range(0, len(order), turns):
            train.append({"messages": [m for f in order[k:k + turns] for m in (
                {"role": "user", "content": facts[f][1][i]}, {"role": "assistant", "content": facts[f][0][i % 3]})]})
    if text:
        for w in range(3):
            order = list(range(len(facts)))
            rng.shuffle(order)
            train += [{"text": " ".join(facts[f][0][w] for f in order[k:k + 10])} for k in range(0, 30, 10)]
    general = [g for g in lines(HERE / "general.jsonl") if g["messages"][0]["content"] not in skip]
    return train + general + lines(HERE / "prose.jsonl")[:build.PROSE_LINES]


def token_split(paths: list[str]) -> None:
    """Print, per file, the tokens and trained tokens (labels) of its fact chats, replay chats and text lines,
    rendered as ``phikit tune`` renders them for the embedded model (chat template, default system prompt)."""
    from transformers import AutoTokenizer

    from phikit.engines.transformers import gguf_to_checkpoint
    from phikit.models import resolve
    from phikit.tune import data as data_mod

    replay_qs = {g["messages"][0]["content"] for g in lines(HERE / "general.jsonl")} | set(CONTRAST)
    ref = resolve(None)
    tok = AutoTokenizer.from_pretrained(gguf_to_checkpoint(Path(ref.source)))
    special = {"bos_token": tok.bos_token or "", "eos_token": tok.eos_token or ""}
    for path in paths:
        examples = data_mod.read_examples(path)
        rows = data_mod.build_dataset(examples, tok, tok.chat_template, special, 1024, ref.system_prompt)
        kinds: dict[str, list[int]] = {}
        for ex, row in zip(examples, rows):
            kind = "text" if isinstance(ex, str) else ("replay" if ex[0]["content"] in replay_qs else "fact")
            n = kinds.setdefault(kind, [0, 0, 0])
            n[0] += 1
            n[1] += len(row["input_ids"])
            n[2] += sum(label != data_mod.IGNORE for label in row["labels"])
        total = sum(n[1] for n in kinds.values())
        print(f"{path}: {total} tokens in {len(rows)} examples; " + "; ".join(
            f"{k}: {n[0]} examples, {n[1]} tokens ({n[1] / n[0]:.1f} each), {n[2]} trained" for k, n in kinds.items()))


def main() -> None:
    if "--tokens" in sys.argv:
        return token_split([a for a in sys.argv[1:] if a != "--tokens"])
    if len(sys.argv) < 2:
        sys.exit("usage: python bench/zorblax_variants.py OUT_DIR [--contrast-replay]")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write(out / "text.jsonl", variant(turns=1, pairs=False, text=True, skip=set(), old=True))
    write(out / "pairs_old.jsonl", variant(turns=2, pairs=True, text=False, skip=set(), old=True))
    write(out / "drop8.jsonl", variant(turns=1, pairs=False, text=False, skip=build.REPLAY_SKIP, old=True))
    shipped = lines(HERE / "train.jsonl")
    facts = [r for r in shipped if len(r.get("messages", [])) > 2]
    replay = [r for r in shipped if len(r.get("messages", [])) == 2]
    prose = [r for r in shipped if "text" in r]
    n = len(replay)
    twice = [{"messages": replay[i]["messages"] + replay[(i + 1) % n]["messages"]} for s in (0, 1) for i in range(s, n, 2)]
    write(out / "replay_pairs.jsonl", facts + twice + prose)
    if "--contrast-replay" in sys.argv:
        import phikit

        llm = phikit.load(adapter="none")
        extra = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": " ".join(
            build.sentences(llm.chat(q, temperature=0, max_new_tokens=80).text.strip())[:2])}]} for q in CONTRAST]
        write(out / "contrast.jsonl", shipped + extra)


if __name__ == "__main__":
    main()
