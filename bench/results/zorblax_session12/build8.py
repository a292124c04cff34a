import os; os.makedirs('/tmp/zx', exist_ok=True)
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, sys, importlib.util
spec = importlib.util.spec_from_file_location("b", ROOT + "/examples/zorblax/build.py"); b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
A = [x["answers"] for x in json.load(open(__import__('pathlib').Path(__file__).with_name('answers8.json')))]
facts = b.fact_chats(lambda f, i: A[f][i])
rest = [json.loads(l) for l in open(ROOT + '/examples/zorblax/train.jsonl')][len(facts):]
try:
    b.check_heldout_phrases(facts); print("key-phrase check ok")
except ValueError as e:
    print("VIOLATION", e)
open('/tmp/zx/train8.jsonl', 'w').write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in facts + rest))
print(len(facts), len(rest))
