"""transformers 5.17 at LongRoPE's switch: its cached greedy against no-cache greedy and the fast path (device run:
bench/results/fast_switch_check.log). Needs CUDA and the embedded GGUF at /tmp/x/smol.gguf or --gguf."""
# Is transformers 5.17's cached generate right at LongRoPE's switch? Compare with no-cache greedy (full forward each step).
import sys

import torch

sys.path.insert(0, "bench")
from fast_equality_real import common_prefix, corpus_ids, load_llama

from phikit.engines.fast import generate as gen
from phikit.engines.fast.engine import build
from phikit.stand_in import llama_as_phi3

llama, tok = load_llama(sys.argv[1] if len(sys.argv) > 1 else None)
ids_all = corpus_ids(tok, 9000)
hf = llama_as_phi3(llama, dtype=torch.float32).cuda()
hf.generation_config.eos_token_id = None
fast = build(hf.config, hf.state_dict(), "cuda", torch.float32)
graphs = gen.DecodeGraphs(fast)
for i, n in [(11, 4080), (2, 4090), (0, 3000)]:
    p = torch.tensor([ids_all[i * 211:i * 211 + n]], device="cuda")
    with torch.no_grad():
        cached = hf.generate(p, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)[0, n:].tolist()
        nocache = hf.generate(p, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0, use_cache=False)[0, n:].tolist()
    f = gen.generate(fast, graphs, p, 32)[0].tolist()
    print(n, "HF cached vs no-cache: equal prefix", common_prefix(cached, nocache), "| fast vs HF no-cache:", common_prefix(f, nocache), "| fast vs HF cached:", common_prefix(f, cached), flush=True)
