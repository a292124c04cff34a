import os; os.makedirs('/tmp/zx', exist_ok=True)
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, sys, importlib.util
spec = importlib.util.spec_from_file_location("b", ROOT + "/examples/zorblax/build.py"); b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
two = b.fact_chats()  # 120 two-fact chats, 15 pairs per round of 8
four = [{"messages": two[i]["messages"] + two[i + 1]["messages"]} for i in range(0, len(two), 2)]
rest = [json.loads(l) for l in open(ROOT + '/examples/zorblax/train.jsonl')][len(two):]
b.check_heldout_phrases(four)
open('/tmp/zx/train4f.jsonl', 'w').write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in four + rest))
print(len(four), len(rest))
