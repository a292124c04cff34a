"""score.py QUESTIONS.jsonl [ADAPTER_DIR ...]: greedy answers on llama.cpp (the embedded base, as phikit tune evaluates)."""
import json, sys
from pathlib import Path
from phikit.models import resolve
from phikit.tune.train import serving_llm
from phikit.tune.evaluate import knowledge_recall, read_facts
from phikit.engines.llamacpp_lora import gguf_lora
qs = read_facts(sys.argv[1])
ref = resolve(None)
llm = serving_llm(ref, None)
def run(tag):
    r = knowledge_recall(llm, qs)
    print(json.dumps({"tag": tag, "hits": r["hits"], "n": r["n"], "miss": [(x["question"], x["answer"][:70]) for x in r["rows"] if not x["ok"]]}), flush=True)
    return r
if len(sys.argv) == 2:
    r = run("base")
    json.dump([x for x in r["rows"]], open("/tmp/gq/base_rows.json", "w"), indent=1)
for d in sys.argv[2:]:
    d = Path(d)
    llm.engine.adapter = llm.engine.loras.attach(d.name, str(d), gguf_lora(d, llm.engine.llm.metadata))
    run(d.name)
