"""usage: run_rho.py TAG DATA JSON_CONFIG TAU: phikit.tune with the loss only on assistant tokens the base model finds
hard (base next-token loss >= TAU nats; selective language modelling, after Rho-1, Lin et al. 2024), text rows kept."""
ROOT = str(__import__('pathlib').Path(__file__).resolve().parents[3])  # the repository
import importlib.util, sys, json, math
sys.path.insert(0, ROOT + '/src')
import torch
spec = importlib.util.spec_from_file_location("api_run7", ROOT + "/bench/results/zorblax_session7/api_run.py")
api7 = importlib.util.module_from_spec(spec); spec.loader.exec_module(api7)
from phikit.tune import data as data_mod
from phikit.tune.train import load_base
from phikit.models import resolve
tag, data, cfg, tau = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
orig = data_mod.build_dataset
scorer = {}
stats = {"kept": 0, "total": 0}
def build(examples, *a, **k):
    rows = orig(examples, *a, **k)
    if "m" not in scorer:
        scorer["m"] = load_base(resolve(None), "fp32", "cpu")[0].eval()
    m = scorer["m"]
    for ex, row in zip([e for e in examples], rows):
        if isinstance(ex, str) or all(l != -100 for l in row["labels"]):
            continue
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(m(input_ids=ids).logits[0].float(), -1)
        loss = -logp[:-1].gather(1, ids[0, 1:, None])[:, 0]  # loss[i-1] is token i's
        new = list(row["labels"])
        for i in range(1, len(new)):
            if new[i] != -100:
                stats["total"] += 1
                if loss[i - 1] < tau:
                    new[i] = -100
                else:
                    stats["kept"] += 1
        if any(l != -100 for l in new):
            row["labels"] = new
    return rows
data_mod.build_dataset = build
m, line = api7.run(tag, data, cfg)
line["rho_tau"] = tau; line["rho_kept"] = stats
api7.finish(tag, m, line)
