"""Requantizing a GGUF file (phikit.export.gguf) and the registry's cached, requantized default model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import GGUFReader, GGUFWriter, quants  # noqa: E402

from phikit.errors import BadRequestError  # noqa: E402
from phikit.export.gguf import requantize  # noqa: E402


def write_q4_1(path: Path, seed: int = 0) -> np.ndarray:
    """A tiny GGUF shaped like the packaged model: Q4_1 matrices, an F32 norm, tokenizer and template KVs."""
    w = GGUFWriter(path, "llama")
    w.add_string("general.name", "tiny")
    w.add_uint32("general.file_type", 3)  # MOSTLY_Q4_1
    w.add_uint32("llama.context_length", 8192)
    w.add_float32("llama.rope.freq_base", 100000.0)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b", "café"])
    w.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1])
    w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}")
    x = np.random.default_rng(seed).standard_normal((8, 64)).astype(np.float32)
    w.add_tensor("blk.0.attn_q.weight", quants.quantize(x, Q.Q4_1), raw_dtype=Q.Q4_1)
    w.add_tensor("blk.0.ffn_odd.weight", x[:, :48].copy())  # F32, rows of 48: not a whole number of blocks
    w.add_tensor("blk.0.attn_norm.weight", np.linspace(0.5, 1.5, 64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return quants.dequantize(quants.quantize(x, Q.Q4_1), Q.Q4_1)


def fields(path: Path) -> dict:
    return {k: (f.types, f.contents()) for k, f in GGUFReader(path).fields.items() if not k.startswith("GGUF.")}


@pytest.mark.parametrize("qtype, matrix_type, ftype, tol", [("q8_0", Q.Q8_0, 7, 0.01), ("f16", Q.F16, 1, 1e-3)])
def test_requantize_keeps_metadata_and_weights(tmp_path, qtype, matrix_type, ftype, tol):
    src, out = tmp_path / "src.gguf", tmp_path / "sub" / "out.gguf"
    weights = write_q4_1(src)
    assert requantize(src, out, qtype, progress=False) == out
    before, after = fields(src), fields(out)
    assert after.pop("general.file_type")[1] == ftype
    before.pop("general.file_type")
    assert after == before  # every other key, tokenizer and chat template included, with its type
    tensors = {t.name: t for t in GGUFReader(out).tensors}
    q, odd, norm = tensors["blk.0.attn_q.weight"], tensors["blk.0.ffn_odd.weight"], tensors["blk.0.attn_norm.weight"]
    assert q.tensor_type == matrix_type
    assert odd.tensor_type == Q.F16  # Q8_0 needs rows of whole 32-value blocks; F16 holds the rest
    assert norm.tensor_type == Q.F32 and np.array_equal(norm.data, np.linspace(0.5, 1.5, 64, dtype=np.float32))
    got = quants.dequantize(q.data, q.tensor_type).reshape(8, 64)
    assert np.abs(got - weights).max() <= tol * np.abs(weights).max()
    assert [p.name for p in out.parent.iterdir()] == ["out.gguf"]  # no temporary file left behind


def test_requantize_is_atomic_when_interrupted(tmp_path, monkeypatch):
    src, out = tmp_path / "src.gguf", tmp_path / "out.gguf"
    write_q4_1(src)
    requantize(src, out, "q8_0", progress=False)
    good = out.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(quants, "quantize", boom)
    with pytest.raises(Exception, match="disk full"):
        requantize(src, out, "q8_0", progress=False)
    assert out.read_bytes() == good  # the old file stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf", "src.gguf"]


def test_requantize_rejects_unknown_type(tmp_path):
    with pytest.raises(BadRequestError, match="unknown GGUF type 'q2_k'"):
        requantize(tmp_path / "x.gguf", tmp_path / "y.gguf", "q2_k")


def test_default_model_is_built_once_into_the_cache(tmp_path, monkeypatch, capsys):
    """A missing cached artifact is written (with a note) on first use, keyed by the source's sha256."""
    from phikit import models
    from phikit.cache import file_sha256

    src = tmp_path / "pkg" / "model.Q4_1.gguf"
    src.parent.mkdir()
    write_q4_1(src)
    monkeypatch.setenv("PHIKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_packaged_gguf", lambda package: src)
    ref = models.resolve(models.EMBEDDED)
    target = Path(ref.source)
    assert target == tmp_path / "cache" / "requantized" / f"{file_sha256(src)[:24]}-{models.DEFAULT_QUANT}.gguf"
    assert target.is_file() and "note: writing smollm2-135m" in capsys.readouterr().err
    stamp = target.stat().st_mtime_ns
    assert models.prepare(models.EMBEDDED).source == str(target)  # cached: not written again
    assert target.stat().st_mtime_ns == stamp and capsys.readouterr().err == ""
    assert models.resolve("smollm2-135m-q4_1").source == str(src)  # the raw Q4_1 stays reachable
