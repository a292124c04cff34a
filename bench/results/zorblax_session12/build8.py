import os; os.makedirs('/tmp/zx', exist_ok=True)
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, sys, importlib.util
spec = importlib.util.spec_from_file_location("b", ROOT + "/examples/zorblax/build.py"); b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
A = [x["answers"] for x in json.load(open(__import__('pathlib').Path(__file__).with_name('answers8.json')))]
turn = lambda f, i: [{"role": "user", "content": b.FACTS[f][1][i]}, {"role": "assistant", "content": A[f][i]}]
facts = [{"messages": turn(a, i) + turn(c, i)} for i in range(8) for a, c in (pair if i % 2 == 0 else pair[::-1] for pair in b.PAIRS)]
rest = [json.loads(l) for l in open(ROOT + '/examples/zorblax/train.jsonl')][len(facts):]
try:
    b.check_heldout_phrases(facts); print("key-phrase check ok")
except ValueError as e:
    print("VIOLATION", e)
open('/tmp/zx/train8.jsonl', 'w').write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in facts + rest))
print(len(facts), len(rest))
