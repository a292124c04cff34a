"""GPU: Phi-4-mini's exact shape (random weights) loads in nf4 through phikit's real loading code.

Skipped without CUDA (see conftest). Figures from the device run are in docs/benchmarks.md.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def phi4_dir(tmp_path_factory):
    from phikit.stand_in import save_random_phi4_mini

    return save_random_phi4_mini(tmp_path_factory.mktemp("phi4") / "model", device="cuda")


def test_nf4_loads_and_generates(phi4_dir):
    import bitsandbytes as bnb
    import torch

    import phikit

    auto = phikit.load(str(phi4_dir))  # on CUDA a Phi-3-family checkpoint gets the fast path, in nf4 as the seeds say
    assert auto.backend == "fast" and auto.engine.precision == "nf4"
    del auto
    torch.cuda.empty_cache()
    llm = phikit.load(str(phi4_dir), backend="transformers")  # auto precision on CUDA = nf4, as the seeds describe
    engine = llm.engine
    assert engine.precision == "nf4"
    q = engine.model.config.quantization_config
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in engine.model.modules()) == 32 * 4  # qkv, o, gate_up, down
    result = llm.chat("What is the capital of France?", temperature=0, max_new_tokens=16)
    assert 1 <= result.usage.completion_tokens <= 16
    nf4_gb = engine.weight_bytes / 1e9
    del llm, engine
    torch.cuda.empty_cache()
    bf16 = phikit.load(str(phi4_dir), backend="transformers", precision="bf16")
    bf16_gb = bf16.engine.weight_bytes / 1e9
    assert 7.0 < bf16_gb < 8.2  # 3.84B parameters x 2 bytes
    assert nf4_gb < 0.45 * bf16_gb  # 4-bit linears; embeddings stay bf16
