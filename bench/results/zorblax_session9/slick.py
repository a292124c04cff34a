"""slick.py QUESTIONS.jsonl... : how robustly the base knows each general question's answer (llama.cpp, the
embedded base as phikit tune evaluates it): the greedy answer, and K samples at temperature 0.5 (seeds 0..K-1),
after SliCK (Gekhman et al. 2024). Writes /tmp/zx/slick.jsonl."""
import json, sys
from phikit.models import resolve
from phikit.tune.train import serving_llm
from phikit.tune.evaluate import read_facts, recalled
K = 8
llm = serving_llm(resolve(None), None)
seen = set()
for path in sys.argv[1:]:
    for f in read_facts(path):
        if f["question"] in seen:
            continue
        seen.add(f["question"])
        g = llm.chat(f["question"], temperature=0, max_new_tokens=48).text
        s = [llm.chat(f["question"], temperature=0.5, seed=i, max_new_tokens=48).text for i in range(K)]
        row = {"question": f["question"], "expected": f["expected"], "greedy_ok": recalled(g, f["expected"]),
               "sampled_ok": sum(recalled(x, f["expected"]) for x in s), "k": K, "greedy": g[:80],
               "wrong_samples": [x[:60] for x in s if not recalled(x, f["expected"])][:3]}
        open("/tmp/zx/slick.jsonl", "a").write(json.dumps(row) + "\n"); print(row, flush=True)
