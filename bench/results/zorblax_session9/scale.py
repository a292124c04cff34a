"""scale.py TAG S [S...]: WiSE-FT-style scaling of a trained adapter (alpha * S), scored on llama.cpp:
held-out recall (30), the 10 general questions, general29."""
import json, shutil, sys
from pathlib import Path
from phikit.models import resolve
from phikit.tune.train import serving_llm
from phikit.tune.evaluate import knowledge_recall, read_facts, GENERAL_QUESTIONS
from phikit.engines.llamacpp_lora import gguf_lora
tag = sys.argv[1]
held = read_facts("/work/main/examples/zorblax/heldout.jsonl")
g29 = read_facts("/work/main/bench/results/zorblax_general29/general29.jsonl")
llm = serving_llm(resolve(None), None)
for s in map(float, sys.argv[2:]):
    src = Path(f"/tmp/zx/{tag}"); d = Path(f"/tmp/zx/sc_{tag}_{s}")
    shutil.rmtree(d, ignore_errors=True); shutil.copytree(src, d)
    cfg = json.loads((d / "adapter_config.json").read_text()); cfg["lora_alpha"] = cfg["lora_alpha"] * s
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    llm.engine.adapter = llm.engine.loras.attach(d.name, str(d), gguf_lora(d, llm.engine.llm.metadata))
    r = knowledge_recall(llm, held); g = knowledge_recall(llm, GENERAL_QUESTIONS); G = knowledge_recall(llm, g29)
    line = {"tag": tag, "scale": s, "recall": r["hits"], "general10": g["hits"], "g29": G["hits"],
            "g_miss": [x["answer"][:50] for x in g["rows"] if not x["ok"]]}
    open("/tmp/zx/scale.txt", "a").write(json.dumps(line) + "\n"); print(line, flush=True)
