"""usage: api_run_avg.py TAG DATA JSON_CONFIG  (JSON may hold "avg_from": fraction of steps after which LoRA weights are averaged uniformly)"""
import json, os, sys, time
tag, data, cfg_json = sys.argv[1:4]
os.environ.setdefault("PHIKIT_ADAPTERS", "/tmp/zx/registry.json")
import torch
import phikit.tune.train as T
cfg_d = json.loads(cfg_json); avg_from = cfg_d.pop("avg_from", None); avg_decay = cfg_d.pop("avg_decay", None)
orig = T.progress_callback
def patched(progress):
    bar = orig(progress)
    cls = type(bar)
    class Avg(cls):
        shadow = None; n = 0
        def on_step_end(self, args, state, control, model=None, **kw):
            super().on_step_end(args, state, control, **kw)
            if state.global_step < avg_from * state.max_steps: return
            ps = {k: p for k, p in model.named_parameters() if p.requires_grad}
            with torch.no_grad():
                if self.shadow is None:
                    self.shadow = {k: p.detach().clone() for k, p in ps.items()}; self.n = 1
                else:
                    self.n += 1
                    w = (1 - avg_decay) if avg_decay else 1.0 / self.n
                    for k, p in ps.items(): self.shadow[k].mul_(1 - w).add_(p.detach(), alpha=w)
        def on_train_end(self, args, state, control, model=None, **kw):
            super().on_train_end(args, state, control, **kw)
            with torch.no_grad():
                for k, p in model.named_parameters():
                    if k in self.shadow: p.copy_(self.shadow[k])
            print("averaged", self.n, "checkpoints", file=sys.stderr)
    a = Avg(); return a
if avg_from is not None: T.progress_callback = patched
cfg = T.TuneConfig(**cfg_d)
t = time.time()
m = T.tune(data, f"/tmp/zx/{tag}", config=cfg, eval_facts="/work/main/examples/zorblax/heldout.jsonl", progress=False)
json.dump(m, open(f"/tmp/zx/{tag}.json", "w"))
ev = m["eval"]; a = ev["after"]; r = ev["retention"]
line = {"tag": tag, "flags": cfg_json, "recall": a["recall"], "general": a["general_recall"], "ppl": r["ppl_ratio"],
        "train_s": m["training"]["seconds"], "steps": m["training"]["steps"], "loss": m["training"]["train_loss"],
        "wall": int(time.time() - t), "load": open("/proc/loadavg").read().strip()}
open("/tmp/zx/results.txt", "a").write(json.dumps(line) + "\n")
print(line)
