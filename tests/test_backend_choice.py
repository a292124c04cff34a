"""Per-device choices: the attention kernels (model card: eager on V100 and older) and the fast path as the
CUDA default for Phi-3-family checkpoints."""

import json

import pytest

from phikit.engines import _fast_suits
from phikit.engines import attention as attn_mod
from phikit.errors import BadRequestError
from phikit.models import ModelRef


@pytest.mark.parametrize("capability,precision,flash,expected", [
    (None, "fp32", False, "sdpa"),           # CPU
    ((7, 0), "bf16", True, "eager"),         # V100: the model card's advice, even with flash-attn installed
    ((8, 0), "bf16", False, "sdpa"),         # A100 without flash-attn
    ((9, 0), "bf16", True, "flash_attention_2"),
    ((9, 0), "fp32", True, "sdpa"),          # flash attention takes 16-bit activations only
])
def test_auto_attention_per_device(monkeypatch, capability, precision, flash, expected):
    monkeypatch.setattr(attn_mod, "_capability", lambda: capability)
    monkeypatch.setattr(attn_mod.importlib.util, "find_spec", lambda name: object() if flash and name == "flash_attn" else None)
    assert attn_mod.choose_attn("auto", "cuda" if capability else "cpu", precision) == expected


def test_explicit_attention_and_clear_errors(monkeypatch):
    monkeypatch.setattr(attn_mod, "_capability", lambda: (7, 0))
    assert attn_mod.choose_attn("sdpa", "cuda", "bf16") == "sdpa"
    with pytest.raises(BadRequestError, match="Ampere or newer"):
        attn_mod.choose_attn("flash", "cuda", "bf16")
    with pytest.raises(BadRequestError, match="unknown attention 'fastest'"):
        attn_mod.choose_attn("fastest", "cpu", "fp32")


def _checkpoint(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return ModelRef(name="m", source=str(tmp_path), format="hf")


def test_fast_is_the_cuda_default_for_phi3_checkpoints(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    phi3 = _checkpoint(tmp_path, "phi3")
    assert _fast_suits(phi3, {})
    assert _fast_suits(phi3, {"precision": "nf4"})
    assert _fast_suits(phi3, {"adapter": "zorblax"})  # adapters run unmerged on the fast path too
    assert not _fast_suits(phi3, {"attn": "eager"})  # an attention choice is the transformers backend's
    assert not _fast_suits(phi3, {"precision": "fp32"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not _fast_suits(phi3, {})


def test_other_architectures_stay_on_transformers(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not _fast_suits(_checkpoint(tmp_path, "llama"), {})
    assert not _fast_suits(ModelRef(name="m", source=str(tmp_path / "missing"), format="hf"), {})


def test_bad_attn_flag_is_one_line_and_exit_2():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "phikit"
    r = subprocess.run([str(script), "ask", "hi", "--backend", "transformers", "--attn", "fastest"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown attention 'fastest'; use one of auto, flash, sdpa, eager"


def test_adapter_none_is_the_base_on_backends_without_adapters(tmp_path):
    """adapter="none" (the base model) loads on any backend; a real adapter on one without adapters is refused."""
    from phikit.engines import load_engine

    ref = ModelRef(name="m", source=str(tmp_path), format="onnx")
    with pytest.raises(BadRequestError, match="the onnx backend needs a directory"):  # got past the options check
        load_engine(ref, "onnx", adapter="none")
    with pytest.raises(BadRequestError, match="does not take the option"):
        load_engine(ref, "onnx", adapter="zorblax")
