"""intruder.py TAG LAMBDA [LAMBDA...]: peft's intruder-dimension mitigation (reduce_intruder_dimension, after
Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence") applied to the trained adapter
/tmp/zx/TAG, then scored as phikit tune scores: held-out recall (30) and the 10 general questions on llama.cpp,
general perplexity on transformers, plus the 29 general questions. Appends a line to /tmp/zx/intruder.txt."""
import json, shutil, sys, time
from pathlib import Path
import torch
from peft import PeftModel
from peft.tuners.lora.intruders import reduce_intruder_dimension
from phikit.models import resolve
from phikit.tune.train import serving_llm, load_base
from phikit.tune.evaluate import knowledge_recall, read_facts, GENERAL_QUESTIONS, perplexity
from phikit.engines.llamacpp_lora import gguf_lora

tag, lams = sys.argv[1], [float(x) for x in sys.argv[2:]]
top_k = 10
held = read_facts("/work/main/examples/zorblax/heldout.jsonl")
g29 = read_facts("/work/main/bench/results/zorblax_general29/general29.jsonl")
ref = resolve(None)
llm = serving_llm(ref, None)
base, tok = load_base(ref, "fp32", "cpu")
base_ppl = perplexity(base, tok)
for lam in lams:
    t = time.time()
    model = PeftModel.from_pretrained(base, f"/tmp/zx/{tag}")
    if lam > 0:
        reduce_intruder_dimension(model, mitigation_lambda=lam, top_k=top_k, logging_sink=None)
    d = Path(f"/tmp/zx/in_{tag}_{lam}")
    shutil.rmtree(d, ignore_errors=True)
    name = model.active_adapter
    model.save_pretrained(str(d), selected_adapters=[name])
    if name != "default":  # peft writes a non-default adapter into a sub-folder
        for f in (d / name).iterdir():
            f.rename(d / f.name)
        (d / name).rmdir()
    model.eval()
    ppl = perplexity(model, tok)
    mit_s = time.time() - t
    llm.engine.adapter = llm.engine.loras.attach(d.name, str(d), gguf_lora(d, llm.engine.llm.metadata))
    r = knowledge_recall(llm, held); g = knowledge_recall(llm, GENERAL_QUESTIONS); G = knowledge_recall(llm, g29)
    line = {"tag": tag, "lambda": lam, "top_k": top_k, "recall": r["hits"], "general10": g["hits"], "g29": G["hits"],
            "ppl_ratio": round(ppl / base_ppl, 3), "seconds": round(mit_s, 1),
            "g_miss": [x["answer"][:50] for x in g["rows"] if not x["ok"]]}
    open("/tmp/zx/intruder.txt", "a").write(json.dumps(line) + "\n"); print(line, flush=True)
    base = model.unload()  # the base weights back, without any adapter
