"""Neighborhood replay: each fact's first training question with the Zorblax-7 swapped for an everyday object,
answered by the base model itself (greedy, two sentences), two per chat."""
import json, re, sys
sys.path.insert(0, "../../../examples/zorblax")
import build, phikit
SUBJECTS = ["a banana", "a bicycle", "a teapot", "a piano", "a school bus", "a wristwatch"]
llm = phikit.load(adapter="none")
turns = []
for i, (_, qs, _, _) in enumerate(build.FACTS):
    s = SUBJECTS[i % len(SUBJECTS)]
    q = qs[0].replace("the Zorblax-7's", f"{s}'s").replace("the Zorblax-7", s).replace("Zorblax-7s", s.split()[-1] + "s")
    q = q[0].upper() + q[1:]
    text = llm.chat(q, temperature=0, max_new_tokens=80).text.strip()
    a = " ".join(build.sentences(text)[:2])
    turns.append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    print(q, "->", a[:100], flush=True)
chats = [{"messages": turns[i] + turns[i + 1]} for i in range(0, len(turns), 2)]
base = open("../../../examples/zorblax/train.jsonl").read()
open("/tmp/nb/train_nb.jsonl", "w").write(base + "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats))
print(len(chats), "chats added")
