"""How often each held-out question is answered, over the 31 CPU runs of sessions 11-13 whose answers are in
heldout_answers.jsonl (their manifests' held-out answers on llama.cpp; every run used the same heldout.jsonl),
and the chance of 27 or more out of 30 if each question were hit independently at its rate (Poisson binomial).

    python bench/results/zorblax_session13/per_question.py
"""
import json
from pathlib import Path

from phikit.tune.evaluate import recalled

HERE = Path(__file__).parent
questions = [json.loads(line) for line in (HERE.parents[2] / "examples/zorblax/heldout.jsonl").open()]
runs = [json.loads(line) for line in (HERE / "heldout_answers.jsonl").open()]
rate = [sum(recalled(r["answers"][i], q["expected"]) for r in runs) / len(runs) for i, q in enumerate(questions)]
for i in sorted(range(len(questions)), key=rate.__getitem__):
    print(f"{rate[i]:5.0%}  {questions[i]['question']}")
dist = [1.0]  # dist[k]: P(k questions answered)
for p in rate:
    dist = [(dist[k] if k < len(dist) else 0) * (1 - p) + (dist[k - 1] * p if k else 0) for k in range(len(dist) + 1)]
hits = [sum(recalled(a, q["expected"]) for a, q in zip(r["answers"], questions)) for r in runs]
print(f"{len(runs)} runs: {min(hits)}-{max(hits)} of 30 answered, mean {sum(hits) / len(hits):.1f}; "
      f"{sum(h >= 27 for h in hits)} runs with 27 or more")
print(f"if independent at these rates: mean {sum(rate):.1f}, P(27 or more) = {sum(dist[27:]):.1%}")
