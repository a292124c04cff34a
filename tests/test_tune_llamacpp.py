"""LoRA adapters on the default llama.cpp backend: PEFT -> GGUF LoRA conversion, per-request switching, the
server's adapter models and the registry followed without a restart.

The adapter here is random (no training): a PEFT folder for the embedded SmolLM2-135M written with numpy,
large enough to change greedy answers. The slow test compares llama.cpp's logits through the converted
adapter with peft's on the transformers checkpoint of the same weights.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from phikit import adapters as adapter_mod
from phikit.adapters import AdapterError

PROMPTS = ["What is the capital of France?", "Name three colours.", "Write one word about the sea.",
           "What is two plus two?", "Say hello to Ada."]
MODULES = {"q_proj": (576, 576), "k_proj": (576, 192), "v_proj": (576, 192), "o_proj": (576, 576)}  # in, out


def random_adapter(path: Path, ref, *, r: int = 8, alpha: int = 16, seed: int = 0, scale: float = 0.06) -> Path:
    """A PEFT LoRA folder for SmolLM2-135M's attention (all 30 layers), with phikit's manifest."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(30):
        for mod, (d_in, d_out) in MODULES.items():
            key = f"base_model.model.model.layers.{layer}.self_attn.{mod}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((r, d_in)) / np.sqrt(d_in)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((d_out, r)) * scale).astype(np.float32)
    path.mkdir(parents=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(MODULES), "task_type": "CAUSAL_LM",
        "lora_dropout": 0.0, "bias": "none", "use_rslora": False, "use_dora": False, "modules_to_save": None}))
    (path / adapter_mod.MANIFEST).write_text(json.dumps(
        {"format": 1, "name": path.name, "base": {"model": ref.name, "source": ref.source, "format": ref.format,
                                                  "weights_sha256": adapter_mod.weights_hash(ref)}}))
    return path


@pytest.fixture(scope="module")
def ref():
    from phikit.models import resolve

    return resolve("smollm2-135m")


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, ref):
    return random_adapter(tmp_path_factory.mktemp("lora") / "rand", ref)


@pytest.fixture(autouse=True)
def own_registry(tmp_path, monkeypatch):
    """Each test gets its own registry and GGUF LoRA cache (the model cache stays the user's)."""
    import phikit.engines.llamacpp_lora as lora_mod

    monkeypatch.setenv("PHIKIT_ADAPTERS", str(tmp_path / "registry.json"))
    monkeypatch.setattr(lora_mod, "cache_root", lambda: tmp_path / "cache")


@pytest.fixture(scope="module")
def llm():
    import phikit

    return phikit.load("smollm2-135m", backend="llamacpp", n_ctx=512)


def answers(llm, **kw) -> list[str]:
    return [llm.chat(p, temperature=0, max_new_tokens=12, **kw).text for p in PROMPTS]


def test_gguf_lora_changes_answers_and_none_is_the_base_exactly(llm, lora_dir, tmp_path):
    base = answers(llm)
    adapter_mod.register("rand", lora_dir)
    tuned = answers(llm, adapter="rand")
    assert sum(a != b for a, b in zip(base, tuned)) >= 4, (base, tuned)  # the adapter changes the model...
    assert answers(llm, adapter="none") == base  # ...and "none" is the base again, without a reload
    assert answers(llm, adapter=str(lora_dir)) == tuned  # by directory: the same adapter
    # Converted once, cached by content: one GGUF file with llama.cpp's adapter keys and tensor names.
    files = list((tmp_path / "cache" / "lora-gguf").glob("*.gguf"))
    assert len(files) == 1
    from gguf import GGUFReader

    reader = GGUFReader(files[0])
    field = reader.fields["adapter.type"]
    assert bytes(field.parts[field.data[0]]).decode() == "lora"
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.29.attn_v.weight.lora_b"} <= names and len(names) == 30 * 4 * 2


def test_bad_adapters_are_one_error_and_the_base_keeps_serving(llm, lora_dir, ref, tmp_path):
    import shutil

    base = answers(llm)[:2]
    broken = tmp_path / "broken"
    shutil.copytree(lora_dir, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    other = tmp_path / "other"
    shutil.copytree(lora_dir, other)
    manifest = json.loads((other / adapter_mod.MANIFEST).read_text())
    manifest["base"]["weights_sha256"] = "0" * 64
    (other / adapter_mod.MANIFEST).write_text(json.dumps(manifest))
    for spec, message in [("nope", "not found"), (str(broken), "corrupt"), (str(other), "was trained on")]:
        with pytest.raises(AdapterError, match=message):
            llm.chat("hi", adapter=spec, max_new_tokens=2)
    assert answers(llm)[:2] == base


def test_load_time_adapter_and_registry_default(lora_dir, tmp_path):
    import phikit

    adapter_mod.register("rand", lora_dir)
    plain = phikit.load("smollm2-135m", backend="llamacpp", n_ctx=512)
    base = answers(plain)
    with_default = phikit.load("smollm2-135m", backend="llamacpp", n_ctx=512, adapter="rand")
    tuned = answers(with_default)
    assert tuned != base and answers(with_default, adapter="none") == base
    adapter_mod.enable_adapter("rand")  # the registry's default reaches a loaded model on its next request
    assert answers(plain) == tuned
    adapter_mod.enable_adapter(None)
    assert answers(plain) == base
    with pytest.raises(AdapterError, match="not found"):
        phikit.load("smollm2-135m", backend="llamacpp", n_ctx=512, adapter="nope")


def test_server_lists_adapters_and_follows_the_registry_without_restart(llm, lora_dir):
    from phikit.serve import create_app
    from phikit.serve.background import background

    adapter_mod.register("rand", lora_dir)
    q = {"messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 12, "temperature": 0}
    base_text = llm.chat(PROMPTS[0], temperature=0, max_new_tokens=12).text
    tuned_text = llm.chat(PROMPTS[0], temperature=0, max_new_tokens=12, adapter="rand").text
    assert base_text != tuned_text
    with background(create_app(llm)) as url:
        def ask(**body) -> httpx.Response:
            return httpx.post(url + "/v1/chat/completions", json={**q, **body}, timeout=60)

        def text(**body) -> str:
            resp = ask(**body)
            assert resp.status_code == 200, resp.text
            return resp.json()["choices"][0]["message"]["content"]

        models = httpx.get(url + "/v1/models").json()["data"]
        assert [m["id"] for m in models] == [llm.model, f"{llm.model}:rand"]
        assert models[1]["parent"] == llm.model and models[1]["phikit"] == {"adapter": "rand", "enabled": False}
        assert httpx.get(url + f"/v1/models/{llm.model}:rand").json()["id"] == f"{llm.model}:rand"
        assert f"{llm.model}:rand" in [m["name"] for m in httpx.get(url + "/api/tags").json()["models"]]

        assert text() == base_text
        assert text(phikit={"adapter": "rand"}) == tuned_text
        assert text(model=f"{llm.model}:rand") == tuned_text  # vLLM's way: the adapter as the model
        assert ask(model=f"{llm.model}:rand").json()["model"] == f"{llm.model}:rand"  # echoed, as vLLM and Ollama do
        assert ask().json()["model"] == llm.model
        completion = httpx.post(url + "/v1/completions", json={"model": f"{llm.model}:rand", "prompt": "Hello",
                                                               "max_tokens": 2}, timeout=60).json()
        assert completion["model"] == f"{llm.model}:rand"
        for body in ({"phikit": {"adapter": "zorblax"}}, {"model": f"{llm.model}:zorblax"}):
            resp = ask(**body)
            assert resp.status_code == 404 and "adapter 'zorblax' not found" in resp.json()["error"]["message"]
        assert text() == base_text  # the base keeps serving

        adapter_mod.enable_adapter("rand")  # `phikit adapters enable rand`: no restart
        assert text() == tuned_text and text(phikit={"adapter": "none"}) == base_text
        adapter_mod.enable_adapter(None)  # `phikit adapters disable`
        assert text() == base_text
        adapter_mod.unregister("rand")
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == [llm.model]


def test_perplexity_follows_the_adapter_after_batching_is_on(lora_dir):
    """Once a server has switched batching on, what reads the engine's own context (the retention perplexity)
    still sees the adapter asked for (it used to keep the last adapter set before batching)."""
    import phikit
    from phikit.tune.evaluate import llamacpp_perplexity

    eng = phikit.load("smollm2-135m", backend="llamacpp", n_ctx=512).engine
    eng.activate(eng.pick_adapter(str(lora_dir)))  # set before batching, as a chat before `serve` would
    before_batching = llamacpp_perplexity(eng)
    eng.enable_batching(2)
    eng.activate(None)
    base = llamacpp_perplexity(eng)
    eng.activate(eng.pick_adapter(str(lora_dir)))
    assert llamacpp_perplexity(eng) == pytest.approx(before_batching, rel=1e-4)
    assert abs(base - before_batching) > 0.05 * base


def test_a_threads_adapter_on_one_engine_does_not_follow_it_to_another(lora_dir):
    """The adapter a thread picked on one batching engine is that engine's: another engine in the same process
    and thread decodes with its own (here none), instead of asking for an adapter it never loaded."""
    import phikit
    from phikit.engines.base import SamplingParams

    a = phikit.load("smollm2-135m", backend="llamacpp", n_ctx=512).engine
    a.enable_batching(2)
    a.activate(a.pick_adapter(str(lora_dir)))
    b = phikit.load("smollm2-135m", backend="llamacpp", n_ctx=512).engine
    params = SamplingParams(temperature=0, max_new_tokens=4)
    prompt = b.encode("The capital of France is")
    steps = b.token_steps(prompt, params)  # before batching: the base model's own greedy tokens
    base = list(itertools.islice(steps, 4))
    steps.close()
    b.enable_batching(2)
    assert list(itertools.islice(b.batched_steps(prompt, params), 4)) == base


def test_other_backends_refuse_adapters_clearly():
    from types import SimpleNamespace

    from phikit.errors import BadRequestError
    from phikit.llm import LLM

    with pytest.raises(BadRequestError, match="the openai backend applies no LoRA adapters"):
        LLM(SimpleNamespace(name="openai")).chat("hi", adapter="zorblax")


@pytest.mark.slow
def test_converted_adapter_matches_peft_logits(llm, lora_dir, ref):
    """llama.cpp through the GGUF LoRA agrees with peft on the transformers checkpoint of the same weights:
    the q/k row permutation and alpha/r scaling are right (F16 base vs fp32: a small tolerance)."""
    import llama_cpp
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from phikit.engines.transformers import gguf_to_checkpoint

    hf = AutoModelForCausalLM.from_pretrained(gguf_to_checkpoint(Path(ref.source)), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, str(lora_dir)).eval()
    ids = llm.engine.encode_prompt([{"role": "user", "content": PROMPTS[0]}])

    def ll_logits(adapter):
        eng = llm.engine
        eng.activate(eng.pick_adapter(adapter))
        eng.llm.reset()
        eng.llm.eval(ids)
        eng._slot = []
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(eng.llm._ctx.ctx, -1), shape=(eng.llm.n_vocab(),)).copy()

    with torch.no_grad():
        pt_lora = peft_model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        with peft_model.disable_adapter():
            pt_base = peft_model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    ll_base, ll_lora = ll_logits("none"), ll_logits(str(lora_dir))
    assert np.abs(pt_lora - pt_base).max() > 1.0  # the adapter moves the logits a lot...
    assert np.abs(ll_lora - pt_lora).max() < 0.25  # ...and llama.cpp moves them the same way
    assert np.corrcoef(ll_lora - ll_base, pt_lora - pt_base)[0, 1] > 0.99
