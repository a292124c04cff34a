"""api_run_kl.py TAG DATA JSON_CONFIG: phikit tune where replay examples (chats whose first question is in
general.jsonl, and text lines) are trained against the base model's own next-token distribution (top-k soft
targets, computed once before training) instead of its greedy answer. JSON may hold "kl_topk" (default 32)."""
import json, os, sys, time
tag, data, cfg_json = sys.argv[1:4]
os.environ.setdefault("PHIKIT_ADAPTERS", "/tmp/zx/registry.json")
import torch, torch.nn.functional as F
import phikit.tune.train as T
import phikit.tune.data as D
import phikit.tune.packing as P
cfg_d = json.loads(cfg_json); K = cfg_d.pop("kl_topk", 32)
REPLAY_Q = {json.loads(l)["messages"][0]["content"] for l in open("/work/main/examples/zorblax/general.jsonl")}
STATE = {}
orig_load = T.load_base
def load_base(*a, **k):
    m, tok = orig_load(*a, **k); STATE["model"] = m; return m, tok
T.load_base = load_base
orig_build = D.build_dataset
def is_replay(ex):
    if isinstance(ex, str): return True
    first = next((m["content"] for m in ex if m["role"] == "user"), None)
    return first in REPLAY_Q
@torch.no_grad()
def teacher(row):
    m = STATE["model"]; ids = torch.tensor([row["input_ids"]])
    logits = m(input_ids=ids, use_cache=False).logits[0].float()  # [n, V]
    lab = row["labels"]; pos = [t - 1 for t in range(1, len(lab)) if lab[t] != -100]
    lp = torch.log_softmax(logits[pos], -1); top = lp.topk(K, -1)
    p = top.values.exp(); p = p / p.sum(-1, keepdim=True)
    return top.indices, p
def build_dataset(examples, *a, **k):
    rows = []
    for ex in examples:
        r = orig_build([ex], *a, **k)[0]
        if is_replay(ex):
            r = {**r, "soft": teacher(r)}
        rows.append(r)
    STATE["n_replay"] = sum("soft" in r for r in rows)
    print(f"{STATE['n_replay']} of {len(rows)} rows trained on the base's distribution", file=sys.stderr, flush=True)
    return rows
D.build_dataset = build_dataset
orig_pack = D.pack
def pack(features):
    out = orig_pack(features)
    mask, idx, p = [], [], []
    for f in features:
        n = len(f["input_ids"]); soft = f.get("soft")
        mask += [soft is not None] * n
        if soft is not None: idx.append(soft[0]); p.append(soft[1])
    out["kl_mask"] = torch.tensor([mask])
    out["soft_idx"] = torch.cat(idx) if idx else torch.zeros(0, K, dtype=torch.long)
    out["soft_p"] = torch.cat(p) if p else torch.zeros(0, K)
    return out
D.pack = pack
from transformers import Trainer
class KLTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        kl_mask, sidx, sp = inputs.pop("kl_mask"), inputs.pop("soft_idx"), inputs.pop("soft_p")
        causal = model.get_base_model()
        labels = inputs["labels"]
        hidden = causal.model(input_ids=inputs["input_ids"], position_ids=inputs.get("position_ids"), use_cache=False).last_hidden_state
        y = labels[:, 1:].reshape(-1); m = kl_mask[:, 1:].reshape(-1)
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        fact = ((y != -100) & ~m).nonzero().squeeze(1); rep = ((y != -100) & m).nonzero().squeeze(1)
        total = F.cross_entropy(causal.lm_head(h[fact]).float(), y[fact], reduction="sum") if fact.numel() else h.new_zeros(())
        if rep.numel():
            assert rep.numel() == sidx.shape[0], (rep.numel(), sidx.shape)
            lq = torch.log_softmax(causal.lm_head(h[rep]).float(), -1)
            total = total - (sp * lq.gather(-1, sidx)).sum()
        count = num_items_in_batch if num_items_in_batch is not None else (y != -100).sum()
        loss = total / torch.as_tensor(count).clamp(min=1)
        return (loss, {"loss": loss}) if return_outputs else loss
P.trainer_class = lambda: KLTrainer
cfg = T.TuneConfig(**cfg_d)
t = time.time()
m = T.tune(data, f"/tmp/zx/{tag}", config=cfg, eval_facts="/work/main/examples/zorblax/heldout.jsonl", progress=False)
json.dump(m, open(f"/tmp/zx/{tag}.json", "w"))
ev = m["eval"]; a = ev["after"]; r = ev["retention"]
line = {"tag": tag, "flags": cfg_json, "recall": a["recall"], "general": a["general_recall"], "ppl": r["ppl_ratio"],
        "train_s": m["training"]["seconds"], "steps": m["training"]["steps"], "loss": m["training"]["train_loss"],
        "wall": int(time.time() - t), "load": open("/proc/loadavg").read().strip(), "n_replay": STATE.get("n_replay")}
open("/tmp/zx/results.txt", "a").write(json.dumps(line) + "\n")
print(line)
