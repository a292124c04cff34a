"""usage: api_run.py TAG DATA JSON_CONFIG  -> appends a result line to /tmp/zx/results.txt
JSON_CONFIG: TuneConfig fields, plus optional patches:
  "eva": rho  -- EVA initialisation of the LoRA A matrices (peft's initialize_lora_eva_weights; Paischer et al.
                 2024, "One Initialization to Rule them All"), from the activations of the training rows;
  "no_eos": true -- no loss on the end-of-turn marker of assistant turns (and the newline after it): the
                 adapter learns the answers but not where they stop, so it does not teach the base terse answers;
  "ortho": energy -- the LoRA A matrices kept orthogonal to the subspace holding this share of the energy of each
                 module's inputs on everyday data (general.jsonl + prose.jsonl): A <- A (I - U U^T) at init and
                 after every optimizer step, so the adapter's change B A x vanishes on those inputs (gradient
                 projection as in GPM, Saha et al. 2021, and O-LoRA, Wang et al. 2023);
  "corda": "kpm"|"ipm" -- CorDA initialisation (peft's preprocess_corda; Yang et al. 2024, "CorDA: Context-Oriented
                 Decomposition Adaptation"), covariance from examples/zorblax/general.jsonl + prose.jsonl (everyday
                 chats and text, the knowledge to keep); the adapter is saved converted to plain LoRA (rank 2r).
Trains through ../zorblax_session7/api_run.py's ``run``; the line adds the 10 general answers, the score on the
29 general questions, and the seconds the patches took outside training."""
import importlib.util, json, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("api_run7", Path(__file__).resolve().parents[1] / "zorblax_session7" / "api_run.py")
api_run7 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(api_run7)  # sets PHIKIT_ADAPTERS before phikit is imported
import peft
from phikit.tune import data as D
tag, data, cfg_json = sys.argv[1:4]
raw = json.loads(cfg_json)
extra_s = {}
rho = raw.pop("eva", None)
corda = raw.pop("corda", None)
if raw.pop("no_eos", False):
    orig_tok = D.tokenize
    def tokenize(messages, tokenizer, *a, **k):
        row = orig_tok(messages, tokenizer, *a, **k)
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids, labels = row["input_ids"], row["labels"]
        for i, t in enumerate(ids):
            if t == end and labels[i] != D.IGNORE:
                labels[i] = D.IGNORE
                extra_s["eos_masked"] = extra_s.get("eos_masked", 0) + 1
                if i + 1 < len(ids) and labels[i + 1] != D.IGNORE:
                    labels[i + 1] = D.IGNORE
        return row
    D.tokenize = tokenize
rows = {}
orig_build = D.build_dataset
def build(*a, **k):
    out = orig_build(*a, **k)
    rows.setdefault("train", out)  # the first call builds the training rows
    rows.setdefault("args", a[1:])
    return out
D.build_dataset = build
if rho:
    from peft import EvaConfig, initialize_lora_eva_weights
    orig_get = peft.get_peft_model
    def get(model, cfg, *a, **k):
        import random
        cfg.init_lora_weights = "eva"
        cfg.eva_config = EvaConfig(rho=float(rho))
        pm = orig_get(model, cfg, *a, **k)
        t = time.time()
        r = list(rows["train"]); random.Random(0).shuffle(r)
        batches = [D.pack(r[i:i + 4]) for i in range(0, len(r), 4)]
        initialize_lora_eva_weights(pm, dataloader=batches, show_progress_bar=False)
        pm.peft_config["default"].init_lora_weights = True  # saved as a plain LoRA adapter
        extra_s["eva"] = round(time.time() - t, 1)
        return pm
    peft.get_peft_model = get
if corda:
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda
    orig_get = peft.get_peft_model
    init_dir = f"/tmp/zx/{tag}_corda_init"
    def get(model, cfg, *a, **k):
        t = time.time()
        keep = D.read_examples("/work/main/examples/zorblax/general.jsonl") + D.read_examples("/work/main/examples/zorblax/prose.jsonl")
        krows = orig_build(keep, *rows["args"])
        batches = [D.pack(krows[i:i + 8]) for i in range(0, len(krows), 8)]
        cfg.init_lora_weights = "corda"
        cfg.corda_config = CordaConfig(corda_method=corda)
        import torch
        def run_model():
            with torch.no_grad():
                for b in batches:
                    model(input_ids=b["input_ids"], position_ids=b["position_ids"])
        preprocess_corda(model, cfg, run_model=run_model)
        pm = orig_get(model, cfg, *a, **k)
        pm.peft_config["default"].init_lora_weights = True  # as peft's docs do before saving the initial adapter
        pm.save_pretrained(init_dir)
        from peft import PeftModel
        orig_save = PeftModel.save_pretrained
        def save(self, path, *sa, **sk):
            sk.setdefault("path_initial_model_for_weight_conversion", init_dir)
            return orig_save(self, path, *sa, **sk)
        PeftModel.save_pretrained = save
        extra_s["corda"] = round(time.time() - t, 1)
        return pm
    peft.get_peft_model = get
ortho = raw.pop("ortho", None)
if ortho:
    import torch
    from transformers import TrainerCallback
    from phikit.tune import packing as T
    orig_get = peft.get_peft_model
    proj, mods = {}, {}
    class Project(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # after the optimizer step
            with torch.no_grad():
                for n, m in mods.items():
                    w = m.lora_A["default"].weight
                    w.copy_(w @ proj[n])
    orig_cls = T.trainer_class
    def cls():
        class Tr(orig_cls()):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                self.add_callback(Project())
        return Tr
    T.trainer_class = cls
    def get(model, cfg, *a, **k):
        pm = orig_get(model, cfg, *a, **k)
        t = time.time()
        keep = D.read_examples("/work/main/examples/zorblax/general.jsonl") + D.read_examples("/work/main/examples/zorblax/prose.jsonl")
        krows = orig_build(keep, *rows["args"])
        mods.update({n: m for n, m in pm.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A})
        cov, hooks = {}, []
        for n, m in mods.items():
            def hook(mod, args, n=n):
                x = args[0].reshape(-1, args[0].shape[-1])
                cov[n] = cov.get(n, 0) + x.T @ x
            hooks.append(m.register_forward_pre_hook(hook))
        pm.eval()
        with torch.no_grad(), pm.disable_adapter():
            for i in range(0, len(krows), 8):
                b = D.pack(krows[i:i + 8])
                pm(input_ids=b["input_ids"], position_ids=b["position_ids"])
        pm.train()
        for h in hooks:
            h.remove()
        dims, seen = [], {}
        for n, m in mods.items():
            key = (n.rsplit(".", 1)[0], cov[n].shape[0], float(cov[n][0, 0]))  # q/k/v (gate/up) share their input
            if key not in seen:
                vals, vecs = torch.linalg.eigh(cov[n])
                vals, vecs = vals.flip(0), vecs.flip(1)
                k = int((vals.cumsum(0) / vals.sum() < float(ortho)).sum()) + 1
                U = vecs[:, :k]
                seen[key] = (torch.eye(U.shape[0]) - U @ U.T, k)
            proj[n], k = seen[key]
            dims.append(k)
            with torch.no_grad():
                m.lora_A["default"].weight.copy_(m.lora_A["default"].weight @ proj[n])
        extra_s["ortho"] = round(time.time() - t, 1)
        extra_s["ortho_k_mean"] = round(sum(dims) / len(dims), 1)
        extra_s["ortho_k_minmax"] = [min(dims), max(dims)]
        return pm
    peft.get_peft_model = get
m, line = api_run7.run(tag, data, cfg_json, fields=raw)
line["extra_s"] = extra_s
api_run7.finish(tag, m, line)
