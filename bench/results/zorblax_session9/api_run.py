"""usage: api_run.py TAG DATA JSON_CONFIG  -> appends a result line to /tmp/zx/results.txt
JSON_CONFIG: TuneConfig fields, plus optional "loraplus_ratio" (patch: LoRA+ optimizer)."""
import json, os, sys, time
tag, data, cfg_json = sys.argv[1:4]
os.environ.setdefault("PHIKIT_ADAPTERS", "/tmp/zx/registry.json")
from phikit.tune import packing as T
from phikit.tune.train import TuneConfig, tune
raw = json.loads(cfg_json)
ratio = raw.pop("loraplus_ratio", None)
if ratio:
    import torch
    from peft.optimizers import create_loraplus_optimizer
    orig = T.trainer_class
    def patched():
        base = orig()
        class LP(base):
            def create_optimizer(self, model=None):
                if self.optimizer is None:
                    self.optimizer = create_loraplus_optimizer(self.model, torch.optim.AdamW, lr=self.args.learning_rate,
                                                               loraplus_lr_ratio=ratio, weight_decay=0.0)
                return self.optimizer
        return LP
    T.trainer_class = patched
if raw.pop("sequential", False):
    from transformers import Trainer
    from torch.utils.data import SequentialSampler
    Trainer._get_train_sampler = lambda self, *a, **k: SequentialSampler(self.train_dataset)
cfg = TuneConfig(**raw)
t = time.time()
m = tune(data, f"/tmp/zx/{tag}", config=cfg, eval_facts="/work/main/examples/zorblax/heldout.jsonl", progress=False)
json.dump(m, open(f"/tmp/zx/{tag}.json", "w"))
ev = m["eval"]; a = ev["after"]; r = ev["retention"]
line = {"tag": tag, "flags": cfg_json, "recall": a["recall"], "general": a["general_recall"], "ppl": r["ppl_ratio"],
        "train_s": m["training"]["seconds"], "steps": m["training"]["steps"], "loss": m["training"]["train_loss"],
        "wall": int(time.time() - t), "load": open("/proc/loadavg").read().strip(),
        "general_answers": a.get("general_answers")}
from phikit.models import resolve
from phikit.tune.train import serving_llm
from phikit.tune.evaluate import knowledge_recall, read_facts
from phikit.engines.llamacpp_lora import gguf_lora
qs = read_facts("/work/main/bench/results/zorblax_general29/general29.jsonl")
llm = serving_llm(resolve(None), None)
d = f"/tmp/zx/{tag}"
llm.engine.adapter = llm.engine.loras.attach(tag, d, gguf_lora(__import__("pathlib").Path(d), llm.engine.llm.metadata))
g29 = knowledge_recall(llm, qs)
line["g29"] = g29["hits"]; line["g29_miss"] = [(x["question"][:40], x["answer"][:60]) for x in g29["rows"] if not x["ok"]]
open("/tmp/zx/results.txt", "a").write(json.dumps(line) + "\n")
print(line)
