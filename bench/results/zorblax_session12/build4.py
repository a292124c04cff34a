import os; os.makedirs('/tmp/zx', exist_ok=True)
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, sys, importlib.util
spec = importlib.util.spec_from_file_location("b", ROOT + "/examples/zorblax/build.py"); b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
two = b.fact_chats()  # 120 two-fact chats, 15 pairs per round of 8
four = [{"messages": two[i]["messages"] + two[i + 1]["messages"]} for i in range(0, len(two), 2)]
b.write_variant(four, '/tmp/zx/train4f.jsonl')
print(len(four), "four-fact chats")
