"""usage: api_run.py TAG DATA JSON_CONFIG  -> appends a result line to /tmp/zx/results.txt
JSON_CONFIG: everything ../zorblax_session10/api_run.py takes ("ortho", "eva", ...), plus "loraplus_ratio": the
LoRA+ optimizer (peft's create_loraplus_optimizer; Hayou et al. 2024: B learns ``ratio`` times faster than A),
so it combines with session 10's projection of A. Runs session 10's script with the rest of the config."""
import json, runpy, sys
from pathlib import Path
here = Path(__file__).resolve()
tag, data, cfg_json = sys.argv[1:4]
raw = json.loads(cfg_json)
ratio = raw.pop("loraplus_ratio", None)
if ratio:
    import os
    os.environ.setdefault("PHIKIT_ADAPTERS", "/tmp/zx/registry.json")
    import torch
    from peft.optimizers import create_loraplus_optimizer
    from phikit.tune import packing as T
    orig = T.trainer_class
    def patched():
        class LP(orig()):
            def create_optimizer(self, model=None):
                if self.optimizer is None:
                    self.optimizer = create_loraplus_optimizer(self.model, torch.optim.AdamW, lr=self.args.learning_rate,
                                                               loraplus_lr_ratio=ratio, weight_decay=0.0)
                return self.optimizer
        return LP
    T.trainer_class = patched
sys.argv = [str(here.parents[1] / "zorblax_session10" / "api_run.py"), tag, data, json.dumps(raw)]
runpy.run_path(sys.argv[0], run_name="__main__")
res = Path("/tmp/zx/results.txt")  # the line's flags: the whole config, LoRA+ included
lines = res.read_text().splitlines()
last = json.loads(lines[-1])
last["flags"] = cfg_json
res.write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
