"""usage: api_run.py TAG DATA JSON_CONFIG  -> appends a result line to /tmp/zx/results.txt
(``run`` also serves ../zorblax_session9/api_run.py, which patches phikit first and adds to the line)."""
import json, os, sys, time
os.environ.setdefault("PHIKIT_ADAPTERS", "/tmp/zx/registry.json")


def run(tag, data, cfg_json, fields=None):
    """phikit.tune.tune on DATA with the held-out file; TuneConfig fields from ``fields`` (default: JSON_CONFIG).
    Writes the manifest to /tmp/zx/TAG.json; returns it and the result line."""
    from phikit.tune.train import TuneConfig, tune
    cfg = TuneConfig(**(json.loads(cfg_json) if fields is None else fields))
    t = time.time()
    m = tune(data, f"/tmp/zx/{tag}", config=cfg, eval_facts="/work/main/examples/zorblax/heldout.jsonl", progress=False)
    json.dump(m, open(f"/tmp/zx/{tag}.json", "w"))
    ev = m["eval"]; a = ev["after"]; r = ev["retention"]
    line = {"tag": tag, "flags": cfg_json, "recall": a["recall"], "general": a["general_recall"], "ppl": r["ppl_ratio"],
            "train_s": m["training"]["seconds"], "steps": m["training"]["steps"], "loss": m["training"]["train_loss"],
            "wall": int(time.time() - t), "load": open("/proc/loadavg").read().strip(), "env": {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}}
    return m, line


if __name__ == "__main__":
    _, line = run(*sys.argv[1:4])
    open("/tmp/zx/results.txt", "a").write(json.dumps(line) + "\n")
    print(line)
