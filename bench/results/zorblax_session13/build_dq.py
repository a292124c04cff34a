"""Training questions of varied form: questions_diverse.json holds 8 new questions per fact, written by a helper
that saw only ../zorblax_session12/facts_blind.json (the fact table and training questions, never the held-out
set), asked to vary the form (requests, leading clauses, situations, indirect and short questions, and the
attribute described in plain words instead of named). A new question is replaced by the shipped question of
the same index when it uses a held-out key phrase (build.py's rule: no training text uses one) or is near its
fact's held-out question: it shares with it three words in a row of which two are content words (the product's
name left out), or a third of their content words (Jaccard). Blind as it was, the helper wrote some held-out questions almost word for word ("Tell me the
name of the firm responsible for the Zorblax-7."); training on those would measure recall of seen wordings.

    python build_dq.py all   # the 8 new questions instead of the shipped 8
    python build_dq.py mix   # shipped questions 0-3 and new questions 4-7

Writes /tmp/zx/train_dq_MODE.jsonl (build.py's fact chats with these questions + train.jsonl's replay rows)."""
import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("b", ROOT / "examples/zorblax/build.py")
b = importlib.util.module_from_spec(spec)
spec.loader.exec_module(b)
mode = sys.argv[1] if len(sys.argv) > 1 else "all"
new = json.loads((Path(__file__).parent / "questions_diverse.json").read_text())
key = re.compile(r"\b(" + "|".join(re.escape(p) for p in b.KEY_PHRASES) + r")\b", re.IGNORECASE)
STOP = set("the a an of to is in on for what how do does i my it its me which who whose that this be can you with at by from".split())


def words(s):
    return [w for w in re.findall(r"[a-z0-9'-]+", s.lower()) if not w.startswith("zorblax")]


def near(q, h):
    """q shares a word trigram holding two content words with h, or a third of their content words (Jaccard)."""
    wq, wh = words(q), words(h)
    tri = lambda w: {t for t in zip(w, w[1:], w[2:]) if len(set(t) - STOP) >= 2}  # noqa: E731
    cq, ch = set(wq) - STOP, set(wh) - STOP
    return bool(tri(wq) & tri(wh)) or len(cq & ch) >= len(cq | ch) / 3


replaced, facts = 0, []
for (answers, shipped, held, kw), qs in zip(b.FACTS, new):
    chosen = list(qs) if mode == "all" else shipped[:4] + list(qs[4:])
    for i, q in enumerate(chosen):
        if key.search(q) or near(q, held):
            chosen[i], replaced = shipped[i], replaced + 1
    facts.append((answers, chosen, held, kw))
b.FACTS = facts
out = f"/tmp/zx/train_dq_{mode}.jsonl"
b.write_variant(b.fact_chats(), out)
print(f"{out}: {replaced} new questions replaced (a held-out key phrase or near its held-out question)")
