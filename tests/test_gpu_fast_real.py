"""GPU: the fast path's greedy tokens equal transformers' ``generate`` on trained weights, in bf16 (issue 13).

Runs bench/fast_equality_real.py (the embedded SmolLM2-135M rebuilt as a Phi-3 with LongRoPE; 20 prompts of
100 to 7,500 tokens, so both factor sets and the switch in mid-generation; 32 greedy tokens each). Marked
``gpu``: skipped without CUDA. ``PHIKIT_EQUALITY_GGUF`` names the GGUF where the embedded package is not
installed (the device machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[1]


def test_fast_greedy_equals_transformers_on_trained_weights_bf16(tmp_path):
    out = tmp_path / "eq.json"
    cmd = [sys.executable, str(ROOT / "bench" / "fast_equality_real.py"), "--dtypes", "bf16", "--precisions", "",
           "--out", str(out)]
    if os.environ.get("PHIKIT_EQUALITY_GGUF"):
        cmd += ["--gguf", os.environ["PHIKIT_EQUALITY_GGUF"]]
    subprocess.run(cmd, check=True, timeout=900)
    fast = json.loads(out.read_text())["results"][0]
    assert fast["name"].startswith("fast bf16")
    assert fast["prompts"] == 20 and any(r["prompt_tokens"] > 4096 for r in fast["rows"])
    assert fast["all_equal"] == 20, [r for r in fast["rows"] if not r["same"]]
