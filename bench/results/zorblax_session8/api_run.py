"""usage: api_run.py TAG DATA JSON_CONFIG  -> appends a result line to /tmp/zx/results.txt"""
import json, os, sys, time
tag, data, cfg_json = sys.argv[1:4]
os.environ.setdefault("PHIKIT_ADAPTERS", "/tmp/zx/registry.json")
from phikit.tune.train import TuneConfig, tune
cfg = TuneConfig(**json.loads(cfg_json))
t = time.time()
m = tune(data, f"/tmp/zx/{tag}", config=cfg, eval_facts="/work/main/examples/zorblax/heldout.jsonl", progress=False)
json.dump(m, open(f"/tmp/zx/{tag}.json", "w"))
ev = m["eval"]; a = ev["after"]; r = ev["retention"]
line = {"tag": tag, "flags": cfg_json, "recall": a["recall"], "general": a["general_recall"], "ppl": r["ppl_ratio"],
        "train_s": m["training"]["seconds"], "steps": m["training"]["steps"], "loss": m["training"]["train_loss"],
        "wall": int(time.time() - t), "load": open("/proc/loadavg").read().strip(), "env": {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}}
open("/tmp/zx/results.txt", "a").write(json.dumps(line) + "\n")
print(line)
