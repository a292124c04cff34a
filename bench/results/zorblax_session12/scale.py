ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import json, sys, ctypes
sys.path.insert(0, ROOT + '/src')
import llama_cpp
from pathlib import Path
from phikit.engines import llamacpp_lora as L
from phikit.engines.llamacpp_lora import gguf_lora
from phikit.models import resolve
from phikit.tune import evaluate as E
from phikit.tune.train import serving_llm
SCALE = [1.0]
def set_(self, name):
    import llama_cpp
    ctx = self.llm._ctx.ctx
    arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.loaded[name][1])
    rc = llama_cpp.llama_set_adapters_lora(ctx, arr, 1, (ctypes.c_float * 1)(SCALE[0]))
    self.active = name; return True
L.LlamaLoras.set = set_
facts = E.read_facts(ROOT + '/examples/zorblax/heldout.jsonl')
g29 = E.read_facts(ROOT + '/bench/results/zorblax_general29/general29.jsonl')
llm = serving_llm(resolve(None), None)
tags = sys.argv[1].split(','); scales = [float(s) for s in sys.argv[2].split(',')]
for tag in tags:
    d = Path(f'/tmp/zx/{tag}')
    llm.engine.loras.attach(tag, str(d), gguf_lora(d, llm.engine.llm.metadata))
    for s in scales:
        SCALE[0] = s
        llm.engine.loras.active = None
        llm.engine.adapter = tag
        llm.engine.activate(tag); llm.engine._slot = []
        r = E.knowledge_recall(llm, facts); g = E.knowledge_recall(llm, E.GENERAL_QUESTIONS); gg = E.knowledge_recall(llm, g29)
        ppl = E.llamacpp_perplexity(llm.engine)
        line = dict(tag=tag, scale=s, recall=r['hits'], general=g['hits'], g29=gg['hits'], ppl=round(ppl, 3),
                    miss=[i for i, x in enumerate(r['rows']) if not x['ok']])
        print(json.dumps(line), flush=True)
        open('/tmp/zx/scale.txt', 'a').write(json.dumps(line) + '\n')
