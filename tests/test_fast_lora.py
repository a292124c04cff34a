"""LoRA on the fast path (engines/fast/lora.py): unmerged adapters give peft's logits, switch per request,
and "none" is the base exactly. CPU, tiny random Phi-3, fp32; the graph-captured path runs on the device."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from phikit.engines.base import SamplingParams  # noqa: E402
from phikit.engines.fast import lora  # noqa: E402
from phikit.engines.fast.engine import FastEngine, build  # noqa: E402
from phikit.errors import PhikitError  # noqa: E402
from test_fast_model import tiny_config  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(hf base, peft model with a random non-zero adapter saved to disk, adapter dir, fast model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Phi3ForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config()
    hf = Phi3ForCausalLM(cfg).eval()
    fast = build(cfg, hf.state_dict(), "cpu", torch.float32)
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=list(lora.TARGETS), init_lora_weights=False)
    tuned = get_peft_model(hf, lcfg).eval()  # random A and B: the adapter changes the logits
    out = tmp_path_factory.mktemp("adapters") / "nick"
    tuned.save_pretrained(out)
    return tuned, out, fast


def test_fast_lora_logits_equal_peft_and_none_is_the_base(models):
    tuned, out, fast = models
    ids = torch.randint(1, 640, (1, 20), generator=torch.Generator().manual_seed(3))
    pos = torch.arange(20)
    rank, weights = lora.read_peft(out, fast.args.n_layer)
    assert rank == 4 and len(weights) == 2 * 4
    with torch.no_grad():
        fast.setup_caches(1, 64)
        base = fast(ids, pos, last_only=False)
        assert lora.attach(fast, rank) and not lora.attach(fast, rank)  # idempotent at the same rank
        zero = fast(ids, pos, last_only=False)
        lora.apply(fast, weights)
        adapted = fast(ids, pos, last_only=False)
        want = tuned(ids).logits
        with tuned.disable_adapter():
            want_base = tuned(ids).logits
        lora.apply(fast, None)
        back = fast(ids, pos, last_only=False)
    torch.testing.assert_close(zero, base, rtol=0, atol=0)  # attached but empty: the base exactly
    torch.testing.assert_close(base, want_base, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(adapted, want, rtol=1e-4, atol=1e-4)
    assert (adapted - base).abs().max() > 1e-2  # the adapter does change the logits
    torch.testing.assert_close(back, base, rtol=0, atol=0)


def test_engine_switches_adapters_per_request(models):
    from phikit.stand_in import tiny_tokenizer

    _, out, _ = models
    from transformers import Phi3ForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config()
    engine = FastEngine.from_model(build(cfg, Phi3ForCausalLM(cfg).state_dict(), "cpu", torch.float32),
                                   tiny_tokenizer(), name="tiny-phi3")
    msgs = [{"role": "user", "content": "Who makes the Zorblax-7?"}]
    params = SamplingParams(max_new_tokens=10, temperature=0)

    def tokens(adapter=None):
        return list(engine.generate(msgs, params, adapter=adapter))[-1].token_ids

    base = tokens()
    assert engine.load_adapter(str(out)) == "nick"
    with_adapter = tokens(str(out))
    assert with_adapter != base
    assert tokens("none") == base and tokens(str(out)) == with_adapter  # switch back and forth, no reload
    assert tokens("nick") == with_adapter  # the name it loaded under, though "nick" is not registered


def test_adapter_for_other_modules_is_refused(models, tmp_path):
    import json
    import shutil

    _, out, fast = models
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["target_modules"] = ["qkv_proj", "lm_head"]
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PhikitError, match="also adapts lm_head"):
        lora.read_peft(bad, fast.args.n_layer)


def test_batched_adapter_groups_equal_one_at_a_time(models):
    """Slots of two adapter groups (the adapter and the base) take turns step by step (each row's input then
    comes from the host or from the last step's picks on the device); each request's greedy tokens equal its
    one-at-a-time run."""
    import itertools
    import threading

    from transformers import Phi3ForCausalLM

    from phikit.stand_in import tiny_tokenizer
    from test_fast_slots import SCALE, ids

    _, out, _ = models
    torch.manual_seed(0)
    cfg = tiny_config()
    sd = Phi3ForCausalLM(cfg).eval().state_dict()
    for name, w in sd.items():  # as test_fast_slots: scaled up so the output depends on the context
        if name.endswith(("qkv_proj.weight", "o_proj.weight", "gate_up_proj.weight", "down_proj.weight")):
            w.mul_(SCALE)
    ref, bat = (FastEngine.from_model(build(cfg, {k: v.clone() for k, v in sd.items()}, "cpu", torch.float32),
                                      tiny_tokenizer(), name="tiny") for _ in range(2))
    for engine in (ref, bat):
        engine.load_adapter(str(out))
    bat.enable_batching(4, cache_len=256)
    params = SamplingParams(max_new_tokens=12, temperature=0)
    jobs = [(ids(10 + 3 * i, 30 + i), "nick" if i % 2 else None) for i in range(4)]

    def run(engine, prompt, name):
        engine.activate(name)
        return list(itertools.islice(engine.token_steps(prompt, params), params.max_new_tokens))

    want = [run(ref, p, name) for p, name in jobs]
    assert want[0] != run(ref, jobs[0][0], "nick")  # the adapter changes this request's tokens
    got: list[list[int]] = [[] for _ in jobs]
    start = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        start.wait()
        got[i] = run(bat, *jobs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == want
