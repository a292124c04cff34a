"""phikit tune's --preserve (LoRA A kept off everyday text's input subspace) and LoRA+ (--loraplus-ratio).

The tiny random Llama of test_tune.py stands in for the embedded model; what is checked is the algebra (the
share of everyday input energy the adapter can still see, the projection holding through training) and that
``tune`` wires both settings, with the CPU and CUDA defaults.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from phikit.tune import data as data_mod  # noqa: E402
from phikit.tune.evaluate import GENERAL_QUESTIONS, GENERAL_TEXT  # noqa: E402
from phikit.tune.preserve import EVERYDAY, Projector, input_bases, lora_modules, resolve_recipe  # noqa: E402
from phikit.tune.train import TARGET_MODULES, TuneConfig, tune  # noqa: E402
from test_tune import chats, own_registry, tiny_model_dir  # noqa: E402,F401

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "zorblax"


def everyday_batches(model_dir, n=16):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [{"input_ids": tok.encode(str(r.get("text") or r["messages"][0]["content"]))[:64]}
            for r in data_mod.read_jsonl(EVERYDAY)[:n]]
    return [{"input_ids": torch.tensor([r["input_ids"]]), "position_ids": torch.arange(len(r["input_ids"]))[None]}
            for r in rows]


def wrapped(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGET_MODULES["llama"], task_type="CAUSAL_LM")
    return get_peft_model(base, cfg)


def test_bases_hold_the_asked_share_of_everyday_input_energy(tiny_model_dir):  # noqa: F811 (fixtures of test_tune)
    model = wrapped(tiny_model_dir)
    batches = everyday_batches(tiny_model_dir)
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1])))
             for n, m in lora_modules(model).items()]
    with torch.no_grad(), model.disable_adapter():
        for b in batches:
            model(**b)
    for h in hooks:
        h.remove()
    for energy in (0.5, 0.9):
        bases = input_bases(model, batches, energy)
        assert set(bases) == set(seen)
        for name, u in bases.items():
            x = torch.cat(seen[name]).double()
            u = u.double()
            assert torch.allclose(u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), atol=1e-6)  # orthonormal
            left = (x - (x @ u) @ u.T).pow(2).sum() / x.pow(2).sum()  # energy the adapter still sees
            assert left <= 1 - energy + 1e-6
            assert u.shape[1] < x.shape[1]  # a real subspace, not the whole input space
        layer = next(n.rsplit(".", 1)[0] for n in bases if n.endswith("q_proj"))
        assert bases[layer + ".q_proj"] is bases[layer + ".k_proj"] is bases[layer + ".v_proj"]  # one input, one basis
        assert bases[layer + ".q_proj"] is not bases[layer + ".o_proj"]


def test_projected_adapter_barely_changes_everyday_outputs(tiny_model_dir):  # noqa: F811 (fixtures of test_tune)
    """With random A and B, the projected adapter moves the logits on everyday inputs far less than the same
    adapter unprojected; on other inputs (random token ids) the two move them alike."""
    model = wrapped(tiny_model_dir)
    batches = everyday_batches(tiny_model_dir)
    for m in lora_modules(model).values():
        torch.nn.init.normal_(m.lora_B["default"].weight, std=0.02)
    noise = [{"input_ids": torch.randint(3, 250, (1, 48)), "position_ids": torch.arange(48)[None]} for _ in range(4)]

    def change(bs):
        with torch.no_grad():
            with model.disable_adapter():
                base = torch.cat([model(**b).logits[0] for b in bs])
            return (torch.cat([model(**b).logits[0] for b in bs]) - base).norm().item()

    model.eval()
    plain_everyday, plain_noise = change(batches), change(noise)
    Projector(model, input_bases(model, batches, 0.95)).project()
    kept_everyday, kept_noise = change(batches), change(noise)
    assert kept_everyday < 0.35 * plain_everyday
    assert kept_everyday / plain_everyday < 0.6 * (kept_noise / plain_noise)


def test_tune_keeps_a_projected_through_training_and_records_the_recipe(tiny_model_dir, chats, tmp_path, monkeypatch):  # noqa: F811 (fixtures of test_tune)
    import peft.optimizers
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from phikit.tune import preserve

    made, used = [], {}
    real_opt, real_bases = peft.optimizers.create_loraplus_optimizer, preserve.input_bases
    monkeypatch.setattr(peft.optimizers, "create_loraplus_optimizer", lambda *a, **k: made.append(real_opt(*a, **k)) or made[-1])
    monkeypatch.setattr(preserve, "input_bases", lambda *a, **k: used.update(real_bases(*a, **k)) or used)
    out = tmp_path / "kept"
    cfg = TuneConfig(max_steps=3, learning_rate=5e-2, save_steps=10, preserve=0.9, loraplus_ratio=8)
    manifest = tune(chats, out, model=str(tiny_model_dir), config=cfg, progress=False, register=False, device="cpu")
    assert manifest["config"]["preserve"] == 0.9 and manifest["config"]["loraplus_ratio"] == 8
    assert manifest["training"]["preserve_seconds"] >= 0
    lrs = sorted({g["lr"] for g in made[0].param_groups if g["params"]})
    assert lrs[-1] == pytest.approx(8 * lrs[0])  # B (and only B) at 8x

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out))
    mods = lora_modules(model)
    assert used and set(used) == set(mods)
    for name, u in used.items():
        a = mods[name].lora_A["default"].weight.detach()
        assert (a @ u).norm() <= 1e-4 * a.norm()  # still off the everyday subspace after 3 optimizer steps
    assert sum(m.lora_B["default"].weight.norm().item() for m in mods.values()) > 0  # and it did train


def test_defaults_differ_by_device_and_flags_override():
    assert resolve_recipe(TuneConfig(), "cpu") == (0.95, 4.0)
    assert resolve_recipe(TuneConfig(), "cuda") == (0.0, 1.0)  # the seeds' QLoRA recipe
    assert resolve_recipe(TuneConfig(preserve=0.0, loraplus_ratio=1.0), "cpu") == (0.0, 1.0)
    for bad in (TuneConfig(preserve=1.0), TuneConfig(loraplus_ratio=0.5)):
        with pytest.raises(Exception, match="preserve|loraplus"):
            bad.check()


def test_everyday_text_is_the_examples_replay_and_holds_no_retention_item():
    everyday = EVERYDAY.read_text(encoding="utf-8")
    assert everyday == (EXAMPLES / "general.jsonl").read_text(encoding="utf-8") + (EXAMPLES / "prose.jsonl").read_text(encoding="utf-8")
    text = " ".join(json.dumps(r).lower() for r in data_mod.read_jsonl(EVERYDAY))
    for q in GENERAL_QUESTIONS:
        assert q["question"].lower() not in text
    for sentence in GENERAL_TEXT.split(". "):
        assert sentence.lower().rstrip(".") not in text
