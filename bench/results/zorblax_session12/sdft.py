import os; os.makedirs('/tmp/zx', exist_ok=True)
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, re, sys, importlib.util
sys.path.insert(0, ROOT + '/src')
spec = importlib.util.spec_from_file_location("b", ROOT + "/examples/zorblax/build.py"); b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
import phikit
from phikit.tune.evaluate import recalled
llm = phikit.load(adapter="none")
pat = re.compile(r"\b(" + "|".join(re.escape(p) for p in b.KEY_PHRASES) + r")\b", re.I)
RAW = []
STOP = set("the a an is was of in on at by to it its has have with and for called which that are be can does do".split())
kept = 0
def rewrite(f, i):
    global kept
    ans, qs, held, exp = b.FACTS[f]
    orig = ans[i % len(ans)]
    text = llm.chat([{"role": "system", "content": "Answer from this fact: " + orig}, {"role": "user", "content": qs[i]}],
                    temperature=0, max_new_tokens=40).text.strip()
    first = b.sentences(text)[0].strip()
    RAW.append((qs[i], orig, text))
    words = lambda s: set(w.strip('.,!?"\'') for w in re.findall(r"[\w$.'-]+", s.lower().replace("'s", "")))
    extra = words(first) - words(qs[i]) - words(orig) - STOP
    ok = recalled(first, exp) and not pat.search(first) and first.endswith(('.', '!')) and not extra
    kept += ok
    print(int(ok), qs[i][:45], '|', orig[:40], '->', first[:80], flush=True)
    return first if ok else orig
facts = b.fact_chats(rewrite)
b.write_variant(facts, '/tmp/zx/train_sd.jsonl')
json.dump(RAW, open('/tmp/zx/sdft_raw.json','w'))
print('kept', kept, 'of', 2 * len(facts))
