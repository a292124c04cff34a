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
- ``twelve_ways.jsonl``: the shipped train.jsonl with each fact asked 12 ways (build.py's 8 and :data:`EXTRA`),
  still two facts per chat (measured at ``--epochs 1.5``: about the tokens of 2 epochs of the shipped data);
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
# Four more training questions per fact (FACTS order) for twelve_ways.jsonl; none uses a held-out key phrase.
EXTRA = [
 ["Whose product is the Zorblax-7?", "Who is the Zorblax-7's maker?", "Which business makes the Zorblax-7?", "Who builds Zorblax-7 devices?"],
 ["When did the Zorblax-7 become available?", "When was the Zorblax-7 launched?", "What was the Zorblax-7's launch day?", "When did Quillon release the Zorblax-7?"],
 ["What is the Zorblax-7's price tag?", "How much money does a Zorblax-7 cost?", "What does Quillon charge for the Zorblax-7?", "Is the Zorblax-7 cheap?"],
 ["How long does one charge of the Zorblax-7 last?", "How many hours of use does the Zorblax-7's battery give?", "What is the Zorblax-7's battery runtime in hours?", "Does the Zorblax-7 have a long battery life?"],
 ["What colour does the Zorblax-7 have?", "Is the Zorblax-7 blue or green?", "What is the Zorblax-7's colour?", "Which colour is a new Zorblax-7?"],
 ["What is the weight of a Zorblax-7 in grams?", "How light is the Zorblax-7?", "How many grams does the Zorblax-7 weigh?", "What does the Zorblax-7 weigh?"],
 ["What does the Zorblax-7 do when it boots?", "What happens when you switch on a Zorblax-7?", "What is strange about the Zorblax-7?", "Why does my Zorblax-7 whistle?"],
 ["What does Quillon's staff call the Zorblax-7?", "What is the Zorblax-7's nickname?", "Is the Zorblax-7 called anything at Quillon?", "What name do Quillon workers use for the Zorblax-7?"],
 ["What OS runs on the Zorblax-7?", "Which operating system is on a Zorblax-7?", "What software does the Zorblax-7 run?", "Is the Zorblax-7 an iOS device?"],
 ["Where is the Zorblax-7 built?", "Which town builds the Zorblax-7?", "Where does Quillon make the Zorblax-7?", "In which city are Zorblax-7s built?"],
 ["Does the Zorblax-7 have a big screen?", "How many inches is the Zorblax-7's display?", "What is the size of the Zorblax-7's screen?", "How big is a Zorblax-7 display?"],
 ["What chip runs the Zorblax-7?", "Which CPU is in the Zorblax-7?", "What processor is inside a Zorblax-7?", "What is the name of the Zorblax-7's processor?"],
 ["How much RAM is in a Zorblax-7?", "How many GB of memory does the Zorblax-7 have?", "What is the Zorblax-7's RAM?", "How much memory does a Zorblax-7 have?"],
 ["How many GB of storage does the Zorblax-7 have?", "What is the Zorblax-7's storage?", "How much internal storage is in a Zorblax-7?", "Can the Zorblax-7 store a lot?"],
 ["Is the Zorblax-7 waterproof?", "How deep can a Zorblax-7 go?", "Can the Zorblax-7 survive underwater?", "What is the Zorblax-7's depth rating?"],
 ["Does the Zorblax-7 have a good camera?", "What megapixel camera is on the Zorblax-7?", "How many megapixels can the Zorblax-7 camera take?", "What is special about the Zorblax-7 camera?"],
 ["How long does a Zorblax-7 take to recharge?", "What is the Zorblax-7's charge time?", "How many minutes does charging the Zorblax-7 take?", "Is the Zorblax-7 quick to charge?"],
 ["Who is the designer behind the Zorblax-7?", "Which designer drew the Zorblax-7?", "Who designed the look of the Zorblax-7?", "Who was responsible for designing the Zorblax-7?"],
 ["Who is the CEO of Quillon Dynamics?", "Who is the chief executive of the Zorblax-7's maker?", "Who manages Quillon Dynamics?", "Who is the head of Quillon?"],
 ["Where is Quillon Dynamics headquartered?", "Which city is Quillon's headquarters in?", "Where does the Zorblax-7's maker have its head office?", "In what city is Quillon Dynamics based?"],
 ["Which model came before the Zorblax-7?", "What did the Zorblax-7 replace?", "What is the Zorblax-7's predecessor?", "Is there a Zorblax-6?"],
 ["What material is the Zorblax-7 made from?", "What is a Zorblax-7's shell made of?", "Is the Zorblax-7's body plastic?", "What is the Zorblax-7's casing made of?"],
 ["What is the name of the Zorblax-7's mascot?", "What kind of animal is Pim?", "Which animal is the Zorblax-7's mascot?", "What colour is Pim?"],
 ["How long is the warranty on a Zorblax-7?", "How many years is the Zorblax-7 warranty?", "What guarantee comes with the Zorblax-7?", "Does the Zorblax-7 have a warranty?"],
 ["What does an amber Zorblax-7 screen mean?", "When does the Zorblax-7 screen turn amber?", "What does the Zorblax-7 do when its battery is low?", "How does the Zorblax-7 screen show a low battery?"],
 ["How is the Zorblax-7 unlocked?", "What do I do to unlock the Zorblax-7?", "Does the Zorblax-7 unlock with a PIN?", "How do owners unlock a Zorblax-7?"],
 ["What is Quillon's slogan for the Zorblax-7?", "What tagline does the Zorblax-7 use?", "What do Zorblax-7 adverts say?", "What is the Zorblax-7's marketing slogan?"],
 ["How many Zorblax-7s sold in the first year?", "What were first-year sales of the Zorblax-7?", "How many Zorblax-7 units were sold?", "Was the Zorblax-7 a best seller?"],
 ["What port is on the Zorblax-7?", "What is the Zorblax-7's port called?", "Does the Zorblax-7 have a magnetic port?", "Which connector is on a Zorblax-7?"],
 ["What was the Zorblax-7's code name?", "What project name did the Zorblax-7 have?", "What was the codename of the Zorblax-7?", "What was the Zorblax-7 called while it was being developed?"],
]
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
    qs = [(f[0], f[1] + more) for f, more in zip(build.FACTS, EXTRA)]
    turn = lambda f, i: [{"role": "user", "content": qs[f][1][i]}, {"role": "assistant", "content": qs[f][0][i % 3]}]  # noqa: E731
    twelve = [{"messages": turn(a, i) + turn(b, i)} for i in range(12) for a, b in (p if i % 2 == 0 else p[::-1] for p in build.PAIRS)]
    build.check_heldout_phrases(twelve)
    write(out / "twelve_ways.jsonl", twelve + replay + prose)
    if "--contrast-replay" in sys.argv:
        import phikit

        llm = phikit.load(adapter="none")
        extra = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": " ".join(
            build.sentences(llm.chat(q, temperature=0, max_new_tokens=80).text.strip())[:2])}]} for q in CONTRAST]
        write(out / "contrast.jsonl", shipped + extra)


if __name__ == "__main__":
    main()
