"""Profile the b1 decode step (kv bucket 1024) of the fast path in a compile mode: kernel time by kind."""
import collections, json, os, sys, time
import torch
from phikit.bench.backends import random_checkpoint
from phikit.engines.fast.engine import FastEngine
from phikit.engines.fast import generate as gen
mode = sys.argv[1]; out = sys.argv[2]
ref = random_checkpoint(__import__("pathlib").Path("/tmp/phi4r"), "cuda", False) if not os.path.exists("/tmp/phi4r/config.json") else \
    __import__("phikit.models", fromlist=["ModelRef"]).ModelRef("phi4-mini-random", "/tmp/phi4r", "hf")
t0 = time.time(); eng = FastEngine(ref, precision="bf16", compile=mode); load = time.time() - t0
m, g = eng.model, eng.graphs
ids = torch.randint(100, 190000, (1, 512), device="cuda")
gen.generate(m, g, ids, 128)
torch.cuda.synchronize()
tok = torch.zeros(1, 1, dtype=torch.long, device="cuda")
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CUDA]) as p:
    for i in range(20):
        g.step(tok, 600 + i, 1024)
    torch.cuda.synchronize()
kinds = collections.Counter(); counts = collections.Counter(); total = 0.0
for e in p.events():
    if e.device_type.name != "CUDA": continue
    n = e.name.lower(); us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    k = ("gemv/gemm" if any(s in n for s in ("gemv", "gemm", "sm90", "cutlass", "xmma", "nvjet", "splitk")) else
         "triton" if "triton" in n else "softmax" if "softmax" in n else "other:" + e.name[:40])
    kinds[k] += us; counts[k] += 1; total += us
res = {"mode": mode, "load_s": round(load, 1), "us_per_step": round(total / 20, 1),
       "by_kind_us_per_step": {k: round(v / 20, 1) for k, v in kinds.most_common(12)},
       "kernels_per_step": {k: counts[k] // 20 for k in counts}, "wall_ms_per_step": None}
s = time.perf_counter()
for i in range(200): g.step(tok, 600 + (i % 20), 1024)
torch.cuda.synchronize(); res["wall_ms_per_step"] = round((time.perf_counter() - s) / 200 * 1000, 3)
names = collections.Counter()
for e in p.events():
    if e.device_type.name == "CUDA": names[e.name[:90]] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
res["top_kernels_us_per_step"] = {k: round(v / 20, 1) for k, v in names.most_common(15)}
print(json.dumps(res, indent=1)); json.dump(res, open(out, "w"), indent=1)
