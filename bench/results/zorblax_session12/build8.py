import os; os.makedirs('/tmp/zx', exist_ok=True)
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, sys, importlib.util
spec = importlib.util.spec_from_file_location("b", ROOT + "/examples/zorblax/build.py"); b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
A = [x["answers"] for x in json.load(open(__import__('pathlib').Path(__file__).with_name('answers8.json')))]
facts = b.fact_chats(lambda f, i: A[f][i])
b.write_variant(facts, '/tmp/zx/train8.jsonl')  # raises on a held-out key phrase
print("key-phrase check ok;", len(facts), "fact chats")
