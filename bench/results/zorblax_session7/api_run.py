"""usage: api_run.py TAG DATA JSON_CONFIG  -> appends a result line to /tmp/zx/results.txt
(``run`` and ``finish`` also serve ../zorblax_session9/ and ../zorblax_session10/api_run.py, which patch phikit
first and add to the line)."""
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


def finish(tag, m, line):
    """Sessions 9-10's line: drop ``env``, add the 10 general answers of manifest ``m`` and the score on the 29
    general questions (llama.cpp, the adapter at /tmp/zx/TAG), append it to /tmp/zx/results.txt and print it."""
    from pathlib import Path
    from phikit.engines.llamacpp_lora import gguf_lora
    from phikit.models import resolve
    from phikit.tune.evaluate import knowledge_recall, read_facts
    from phikit.tune.train import serving_llm
    line.pop("env")
    line["general_answers"] = m["eval"]["after"].get("general_answers")
    qs = read_facts("/work/main/bench/results/zorblax_general29/general29.jsonl")
    llm = serving_llm(resolve(None), None)
    d = Path(f"/tmp/zx/{tag}")
    llm.engine.adapter = llm.engine.loras.attach(tag, str(d), gguf_lora(d, llm.engine.llm.metadata))
    g29 = knowledge_recall(llm, qs)
    line["g29"] = g29["hits"]
    line["g29_miss"] = [(x["question"][:40], x["answer"][:60]) for x in g29["rows"] if not x["ok"]]
    open("/tmp/zx/results.txt", "a").write(json.dumps(line) + "\n")
    print(line)


if __name__ == "__main__":
    _, line = run(*sys.argv[1:4])
    open("/tmp/zx/results.txt", "a").write(json.dumps(line) + "\n")
    print(line)
