"""Build an onnxruntime-genai model directory from a transformers checkpoint with onnxruntime-genai's own
model builder (``onnxruntime_genai.models.builder``, shipped in its wheel).

The builder handles ``LlamaForCausalLM`` (SmolLM2) and ``Phi3ForCausalLM`` (Phi-4-mini, LongRoPE included),
writes ``model.onnx`` + ``model.onnx.data``, ``genai_config.json`` and the tokenizer files, and quantizes
weight matrices to 4 bits with ``MatMulNBits`` for ``int4``. It runs in a child process: it puts its own
folder on ``sys.path`` and prints per-tensor progress, neither of which should leak into phikit.

Only the builder's CPU combinations are offered (its own list: FP32 CPU, INT8 CPU, INT4 CPU); fp16 is for
GPU execution providers and is refused here with a one-line reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import BadRequestError, PhikitError

PRECISIONS = ("fp32", "int4", "fp16")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "phi3": "Phi3ForCausalLM"}  # model_type -> the builder's class


def _stage(checkpoint: Path, into: Path) -> Path:
    """A view of ``checkpoint`` the builder accepts: every file linked, ``config.json`` with ``architectures``.

    Checkpoints phikit converts from GGUF (``gguf_to_checkpoint``) carry ``architectures: null``, which the
    builder needs to pick its model class; it is filled in from ``model_type``.

    Raises:
        BadRequestError: no ``config.json``, or an architecture the builder does not handle here.
    """
    cfg_path = checkpoint / "config.json"
    if not cfg_path.is_file():
        raise BadRequestError(f"{checkpoint} is not a transformers checkpoint (no config.json)")
    cfg = json.loads(cfg_path.read_text())
    arch = (cfg.get("architectures") or [None])[0] or ARCHITECTURES.get(cfg.get("model_type", ""))
    if arch not in ARCHITECTURES.values():
        raise BadRequestError(
            f"ONNX export handles {', '.join(sorted(ARCHITECTURES.values()))}; {checkpoint} is "
            f"{arch or cfg.get('model_type') or 'of unknown architecture'}"
        )
    cfg["architectures"] = [arch]
    into.mkdir(parents=True)
    for f in checkpoint.iterdir():
        if f.name != "config.json" and f.is_file():
            os.symlink(f.resolve(), into / f.name)
    (into / "config.json").write_text(json.dumps(cfg, indent=2))
    return into


def check_precision(precision: str) -> None:
    """Raise unless ``precision`` is one the builder writes for the CPU.

    Raises:
        BadRequestError: an unknown precision, or fp16 (for GPU execution providers only).
    """
    if precision not in PRECISIONS:
        raise BadRequestError(f"unknown ONNX precision {precision!r}; use fp32 or int4")
    if precision == "fp16":
        raise BadRequestError(
            "fp16 ONNX models are for GPU execution providers (onnxruntime-genai's builder offers FP32, INT8 "
            "and INT4 on the CPU); use --precision fp32 or int4"
        )


def build_onnx(checkpoint: str | Path, out: str | Path, precision: str = "fp32", *, progress: bool = True) -> Path:
    """Write ``checkpoint`` as an onnxruntime-genai model directory ``out`` (atomically: built in a temporary
    directory beside ``out``, then renamed into place; an existing ``out`` is replaced only on success).

    Args:
        checkpoint: a local transformers checkpoint directory (config, tokenizer, safetensors).
        out: the model directory to write.
        precision: ``fp32`` (weights as they are, for parity) or ``int4`` (``MatMulNBits``, block 32,
            the builder's default RTN quantization); ``fp16`` is refused on the CPU.
        progress: show the builder's own output on stderr (else it is kept and shown only on failure).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        BadRequestError: an unknown or CPU-less precision, or a checkpoint the builder cannot take.
        PhikitError: the builder failed (its last lines in the message).
    """
    check_precision(precision)
    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        src = _stage(checkpoint, work / "source")
        built = work / "model"
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(built),
               "-p", precision, "-e", "cpu", "-c", str(work / "cache")]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if progress:
            sys.stderr.write(proc.stdout[-4000:])
        if proc.returncode != 0 or not (built / "genai_config.json").is_file():
            tail = " | ".join(line.strip() for line in proc.stdout.strip().splitlines()[-3:])
            raise PhikitError(f"onnxruntime-genai's model builder failed on {checkpoint}: {tail}")
        old = None
        if out.exists():
            old = work / "old"
            os.replace(out, old)
        os.replace(built, out)
    except OSError as exc:
        raise PhikitError(f"could not write {out}: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
