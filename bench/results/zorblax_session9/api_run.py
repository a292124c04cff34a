"""usage: api_run.py TAG DATA JSON_CONFIG  -> appends a result line to /tmp/zx/results.txt
JSON_CONFIG: TuneConfig fields, plus optional "loraplus_ratio" (patch: LoRA+ optimizer) and "sequential" (patch:
the file's order instead of a shuffle). Trains through ../zorblax_session7/api_run.py's ``run``; the line adds the
10 general answers and the score on the 29 general questions."""
import importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("api_run7", Path(__file__).resolve().parents[1] / "zorblax_session7" / "api_run.py")
api_run7 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(api_run7)  # sets PHIKIT_ADAPTERS before phikit is imported
from phikit.tune import packing as T
tag, data, cfg_json = sys.argv[1:4]
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
m, line = api_run7.run(tag, data, cfg_json, fields=raw)
line.pop("env")
line["general_answers"] = m["eval"]["after"].get("general_answers")
from phikit.models import resolve
from phikit.tune.train import serving_llm
from phikit.tune.evaluate import knowledge_recall, read_facts
from phikit.engines.llamacpp_lora import gguf_lora
qs = read_facts("/work/main/bench/results/zorblax_general29/general29.jsonl")
llm = serving_llm(resolve(None), None)
d = Path(f"/tmp/zx/{tag}")
llm.engine.adapter = llm.engine.loras.attach(tag, str(d), gguf_lora(d, llm.engine.llm.metadata))
g29 = knowledge_recall(llm, qs)
line["g29"] = g29["hits"]; line["g29_miss"] = [(x["question"][:40], x["answer"][:60]) for x in g29["rows"] if not x["ok"]]
open("/tmp/zx/results.txt", "a").write(json.dumps(line) + "\n")
print(line)
