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
api_run7.finish(tag, m, line)
