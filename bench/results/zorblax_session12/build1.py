import os; os.makedirs('/tmp/zx', exist_ok=True)
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, sys, importlib.util
spec = importlib.util.spec_from_file_location("b", ROOT + "/examples/zorblax/build.py"); b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
k = int(sys.argv[1]) if len(sys.argv) > 1 else 0
facts = b.fact_chats(lambda f, i: b.FACTS[f][0][k])
b.write_variant(facts, f'/tmp/zx/train1w{k}.jsonl')
