import json, sys
sys.path.insert(0, "/work/main/examples/zorblax")
import build, phikit
DROP = {"What is a megapixel?", "What is a warranty?", "What is a USB-C port?", "What is a codename?", "What does an amber traffic light mean?"}
HM = [("How many legs does a spider have?", "8"), ("How many months are in a year?", "12"), ("How many minutes are in an hour?", "60"),
      ("How many wheels does a bicycle have?", "2"), ("How many sides does a triangle have?", "3"), ("How many legs does a dog have?", "4"),
      ("How many seconds are in a minute?", "60")]
rows = [json.loads(l) for l in open("/tmp/zx/v/contrast.jsonl")]
keep = [r for r in rows if not ("messages" in r and r["messages"][0]["content"] in DROP)]
llm = phikit.load(adapter="none")
for q, kw in HM:
    a = " ".join(build.sentences(llm.chat(q, temperature=0, max_new_tokens=80).text.strip())[:2])
    ok = kw in a or {"8": "eight", "12": "twelve", "60": "sixty", "2": "two", "3": "three", "4": "four"}[kw] in a.lower()
    print(ok, q, "|", a[:100])
    if ok:
        keep.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
open("/tmp/zx/v/contrast_hm.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in keep))
print(len(rows), len(keep))
