ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, sys, importlib.util
sys.path.insert(0, ROOT + '/src')
spec = importlib.util.spec_from_file_location("b", ROOT + "/examples/zorblax/build.py"); b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
import phikit
from phikit.tune.evaluate import recalled
llm = phikit.load()
facts = " ".join(f[0][0] for f in b.FACTS)
hits = 0; hits_one = 0
for ans, trq, held, exp in b.FACTS:
    sysmsg = "Answer from these facts about the Zorblax-7: " + facts
    r = llm.chat([{"role": "system", "content": sysmsg}, {"role": "user", "content": held}], temperature=0, max_new_tokens=48)
    txt = r.text if hasattr(r, 'text') else str(r)
    r1 = llm.chat([{"role": "system", "content": "Answer from this fact: " + ans[0]}, {"role": "user", "content": held}], temperature=0, max_new_tokens=48)
    t1 = r1.text if hasattr(r1, 'text') else str(r1)
    ok, ok1 = recalled(txt, exp), recalled(t1, exp)
    hits += ok; hits_one += ok1
    print(int(ok), int(ok1), held[:50], '->', txt[:60].replace('\n',' '), '|', t1[:50].replace('\n', ' '))
print('all-facts in context', hits, '/30; only its own fact in context', hits_one, '/30')
