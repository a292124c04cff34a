"""``phikit bench``: the quick matrix through the installed script writes sane JSON, Markdown and PNG; the fast
path's batched loop runs on CPU on a tiny random Phi-4-mini; cost arithmetic; bad flags are one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phikit.bench import cost
from phikit.bench.matrix import Spec, plan, run

SCRIPT = Path(sys.executable).parent / "phikit"
# One thread for llama.cpp and torch: their spinning OpenMP threads collapse on a busy 2-core machine (a quick
# run took 5 minutes at load average 9 with two threads each); these tests check sanity, not speed.
ENV = {**os.environ, "PHIKIT_THREADS": "1", "OMP_NUM_THREADS": "1", "PHIKIT_RAISE_ERRORS": ""}


def _measured(row: dict) -> list[dict]:
    return [c for c in row["cells"] if "na" not in c]


def test_quick_bench_through_the_script_writes_json_markdown_and_png(tmp_path):
    p = subprocess.run([str(SCRIPT), "bench", "--quick", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=900, env=ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["backend"]: r for r in report["rows"]}
    assert {"llamacpp", "transformers"} <= set(rows), report["skipped"]
    for r in rows.values():
        assert r["load_s"] > 0 and r["weights_gb"] > 0 and r["peak_gb"] > 0
        cells = _measured(r)
        assert {(c["batch"], c["prompt_tokens"]) for c in cells} >= {(1, 128)}
        for c in cells:
            assert c["ttft_ms"] > 0 and c["decode_tok_s"] > 0 and c["batch_s"] * 1000 > c["ttft_ms"]
        assert r["cost"]["per_batch"]["1"] > 0
    assert all("x_hf_tok_s" in c for c in _measured(rows["llamacpp"]))  # ratios to HF generate, same run
    assert report["load_average_start"] and report["versions"]["llama-cpp-python"]
    md = (tmp_path / "bench.md").read_text()
    assert "| llamacpp | 1 | 128 |" in md and "x HF tok/s" in md and "Phi-4-mini-instruct, Azure" in md
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| backend |" in p.stdout  # the tables are printed too


def test_random_weights_run_the_fast_loop_and_hf_generate_on_cpu():
    """No CUDA: the fast backend's model and batched loop run eagerly on a tiny Phi-4-mini (same code as the GPU)."""
    spec = Spec(random_weights=True, quick=True, backends=["transformers", "fast"], batches=[1, 2],
                prompt_lengths=[16], max_tokens=8, runs=1)
    report = run(spec, argv=["phikit", "bench"])
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"transformers-bf16", "fast-bf16"}, report["skipped"]
    fast = rows["fast-bf16"]
    assert fast["baseline"] == "transformers-bf16"
    assert [(c["batch"], c["prompt_tokens"]) for c in fast["cells"]] == [(1, 16), (2, 16)]
    assert all(c["decode_tok_s"] > 0 and c["ttft_ms"] > 0 and c["x_hf_tok_s"] > 0 for c in fast["cells"])
    assert report["model"]["random_weights"] and "tiny" in report["model"]["name"]


def test_cost_arithmetic():
    # 100 ms to the first token, 50 tok/s aggregate over a batch of 2, 11-token answers: 0.1 + 2 * 10 / 50 s
    s = cost.batch_seconds(100, 50, 2, 11)
    assert s == pytest.approx(0.5)
    # $3.60/h = $0.001/s; 500 batches of 2 take 250 s -> $0.25 per 1,000 queries
    assert cost.cost_per_1000(s, 2, 3.6) == pytest.approx(0.25)
    assert cost.hosted_per_1000({"usd_per_1m_input": 0.1, "usd_per_1m_output": 0.4}, 512, 128) == pytest.approx(0.1024)
    cells = [{"batch": 1, "prompt_tokens": 128, "ttft_ms": 100, "decode_tok_s": 50},
             {"batch": 2, "prompt_tokens": 128, "ttft_ms": 100, "decode_tok_s": 50},
             {"batch": 1, "prompt_tokens": 2048, "ttft_ms": 900, "decode_tok_s": 5},
             {"batch": 8, "prompt_tokens": 128, "na": "not supported"}]
    out = cost.row_costs(cells, prompt_tokens=200, answer_tokens=11, usd_per_hour=3.6)
    assert out["from_prompt_tokens"] == 128  # the nearest measured prompt length
    assert out["per_batch"] == {1: pytest.approx(0.3), 2: pytest.approx(0.25)} and out["best_batch"] == 2
    assert cost.row_costs([], prompt_tokens=1, answer_tokens=1, usd_per_hour=1) == {}
    with pytest.raises(ValueError):
        cost.batch_seconds(1, 0, 1, 1)
    for entry in [cost.prices()["gpu_default"], cost.prices()["cpu_default"], *cost.prices()["hosted"]]:
        assert entry["source"].startswith("https://") and entry["as_published"]


def test_plan_takes_precisions_per_backend():
    spec = Spec(backends=["fast", "transformers"], precisions=["bf16", "fast:int4", "fast:nf4"])
    assert plan(spec, "cuda") == [("transformers", "bf16"), ("fast", "bf16"), ("fast", "int4"), ("fast", "nf4")]
    assert plan(Spec(backends=["llamacpp", "transformers"]), "cpu") == [("transformers", "auto"), ("llamacpp", "auto")]


@pytest.mark.parametrize("args, needle", [
    (["--batches", "0,8"], "--batches must be positive"),
    (["--batches", "x"], "--batches takes comma-separated integers"),
    (["--backends", "vllm"], "unknown backend 'vllm'"),
    (["--max-tokens", "1"], "--max-tokens must be at least 2"),
    (["--precisions", "fast:fp8"], "unknown precision 'fast:fp8'"),
    (["--gpu-price-per-hour", "-1"], "prices per hour must be >= 0"),
    (["--fast-compile", "all"], "unknown --fast-compile 'all'"),
])
def test_bad_flags_are_one_line_and_exit_2(args, needle):
    p = subprocess.run([str(SCRIPT), "bench", "--quick", *args], capture_output=True, text=True, timeout=120, env=ENV)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], p.stderr


@pytest.mark.gpu
def test_gpu_matrix_runs_fast_and_hf_generate_side_by_side(tmp_path):
    """On CUDA: the full-shape random Phi-4-mini, HF generate and the fast path at batch 1 and 4."""
    spec = Spec(random_weights=True, quick=True, backends=["transformers", "fast"], batches=[1, 4],
                prompt_lengths=[128], max_tokens=16, runs=1)
    report = run(spec, argv=["phikit", "bench"])
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"transformers-bf16", "fast-bf16"}, report["skipped"]
    assert all(r["device"] == "cuda" and r["memory"] == "GPU allocated" and r["peak_gb"] > 7 for r in rows.values())
    assert all(c["x_hf_tok_s"] > 1 for c in rows["fast-bf16"]["cells"])  # faster than HF generate
