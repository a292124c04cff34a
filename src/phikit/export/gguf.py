"""Requantize a GGUF file with the ``gguf`` library: dequantize each weight, write it as F16 or Q8_0.

The packaged SmolLM2-135M is Q4_1, and a 135M model at 4 bits is fragile: its greedy answers depend on
which SIMD kernels llama.cpp was built with (docs/benchmarks.md). Re-encoding the same weights at 8 or 16
bits removes that dependence without new weights: Q4_1 values (``d * q + m`` per block of 32) are held
almost exactly by F16 and closely by Q8_0, which uses the same 32-value blocks.

Every metadata key (architecture, hyperparameters, tokenizer, chat template) is copied; only
``general.file_type`` is updated. 1-D tensors (norms) stay as they are, as llama.cpp's own converter
keeps them. The file is written beside ``out_path`` under a temporary name and renamed into place, so a
reader never sees a half-written model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import BadRequestError, PhikitError

TYPES = ("q8_0", "f16")
K_QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}  # llama.cpp's llama_ftype values (LLAMA_FTYPE_MOSTLY_*)


def _target_types():
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType as F

    return {"q8_0": (Q.Q8_0, F.MOSTLY_Q8_0), "f16": (Q.F16, F.MOSTLY_F16)}


def _plan(tensor, qtype):
    """The type a source tensor is written as: ``qtype`` for weight matrices, unchanged for 1-D tensors,
    F16 where a row does not fit Q8_0's 32-value blocks."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    if len(tensor.shape) < 2 or tensor.tensor_type == qtype:
        return tensor.tensor_type
    block = GGML_QUANT_SIZES[qtype][0]
    return qtype if int(tensor.shape[0]) % block == 0 else Q.F16


def _converted(tensor, to):
    """The tensor's data encoded as ``to`` (numpy; bytes for block types)."""
    from gguf import quants

    if to == tensor.tensor_type:
        return tensor.data
    shape = tuple(reversed([int(n) for n in tensor.shape]))  # GGUF lists ne0 first; numpy wants it last
    weights = quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    return quants.quantize(weights, to)


def requantize(src_path: str | Path, out_path: str | Path, type: str = "q8_0", *, progress: bool = True) -> Path:
    """Write ``src_path``'s model to ``out_path`` with its weight matrices as ``type``.

    Args:
        src_path: a GGUF file (any tensor types the ``gguf`` library can dequantize: Q4_0/1, Q5_x, Q8_0,
            K-quants, F16, BF16, F32).
        out_path: the new file; replaced atomically if it exists.
        type: ``"q8_0"`` (about 1.06 bytes per weight) or ``"f16"`` (2 bytes per weight).
        progress: draw a progress bar (bytes written) on stderr when it is a terminal.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        BadRequestError: an unknown ``type``.
        PhikitError: the source cannot be read or the output cannot be written.
    """
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGUFReader, GGUFValueType, GGUFWriter, Keys
    from tqdm.auto import tqdm

    if type not in TYPES:
        raise BadRequestError(f"unknown GGUF type {type!r}; use one of {', '.join(TYPES)}")
    qtype, ftype = _target_types()[type]
    src, out = Path(src_path), Path(out_path)
    try:
        reader = GGUFReader(src)
    except (OSError, ValueError) as exc:
        raise PhikitError(f"could not read GGUF file {src}: {exc}") from None
    arch = reader.get_field(Keys.General.ARCHITECTURE).contents()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make a shared cache unreadable to others
    writer = GGUFWriter(tmp, arch)
    try:
        for field in reader.fields.values():
            if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue  # the writer adds the architecture; GGUF.* are the reader's own header fields
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            value = int(ftype) if field.name == Keys.General.FILE_TYPE else field.contents()
            writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
        if (align := reader.get_field(Keys.General.ALIGNMENT)) is not None:
            writer.data_alignment = int(align.contents())
        plan = [(t, _plan(t, qtype)) for t in reader.tensors]
        total = 0
        for t, to in plan:
            shape = tuple(reversed([int(n) for n in t.shape]))
            block, size = GGML_QUANT_SIZES[to]
            nbytes = int(np.prod(shape[:-1], dtype=np.int64)) * (shape[-1] // block) * size
            writer.add_tensor_info(t.name, shape, np.float32, nbytes, raw_dtype=to)
            total += nbytes
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        # disable=None: a bar on a terminal, nothing in logs and pipes
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"{type} {out.name}",
                  disable=None if progress else True, leave=False) as bar:
            for t, to in plan:
                data = _converted(t, to)
                writer.write_tensor_data(data)
                bar.update(data.nbytes)
        writer.close()
        os.replace(tmp, out)
    except OSError as exc:
        raise PhikitError(f"could not write {out}: {exc}") from None
    finally:
        writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def quantize_k(src_path: str | Path, out_path: str | Path, type: str = "q4_k_m", *, threads: int = 0,
               progress: bool = True) -> Path:
    """Write ``src_path``'s model to ``out_path`` as a llama.cpp k-quant, with llama.cpp's own quantizer
    (``llama_model_quantize`` from llama-cpp-python's low-level bindings, what ``llama-quantize`` runs).

    k-quants mix types per tensor (Q4_K_M keeps some attention/FFN tensors at Q6_K), which only llama.cpp
    decides, so they are not written by :func:`requantize`. A source that is not F16/F32 is first written
    as F16 (:func:`requantize`), so the k-quant is made from full-precision values, never re-quantized from
    4 bits. Written under a temporary name beside ``out_path`` and renamed into place.

    Args:
        src_path: a GGUF file llama.cpp can load.
        out_path: the new file; replaced atomically if it exists.
        type: ``"q4_k_m"`` (about 4.8 bits per weight), ``"q5_k_m"`` or ``"q6_k"``.
        threads: quantizer threads; 0 lets llama.cpp use every core.
        progress: passed to :func:`requantize` when an F16 intermediate is needed.

    Raises:
        BadRequestError: an unknown ``type``.
        PhikitError: llama.cpp could not read the source or write the output.
    """
    import llama_cpp
    from gguf import GGUFReader, Keys, LlamaFileType

    if type not in K_QUANTS:
        raise BadRequestError(f"unknown k-quant {type!r}; use one of {', '.join(K_QUANTS)}")
    src, out = Path(src_path), Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    f16 = None
    try:
        try:
            ftype = GGUFReader(src).get_field(Keys.General.FILE_TYPE)
        except (OSError, ValueError) as exc:
            raise PhikitError(f"could not read GGUF file {src}: {exc}") from None
        if ftype is None or int(ftype.contents()) not in (LlamaFileType.ALL_F32, LlamaFileType.MOSTLY_F16):
            f16 = Path(tmp + ".f16")
            requantize(src, f16, "f16", progress=progress)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = K_QUANTS[type]
        params.nthread = threads
        from llama_cpp._utils import suppress_stdout_stderr  # llama.cpp logs every tensor on stderr

        with suppress_stdout_stderr(disable=False):
            rc = llama_cpp.llama_model_quantize(str(f16 or src).encode(), tmp.encode(), params)
        if rc != 0:
            raise PhikitError(f"llama.cpp could not quantize {src} to {type} (llama_model_quantize returned {rc})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        for leftover in (tmp, f16):
            if leftover and os.path.exists(leftover):
                os.unlink(leftover)
    return out


def write_gguf(src_path: str | Path, out_path: str | Path, type: str, **kw) -> Path:
    """:func:`requantize` for ``f16``/``q8_0``, :func:`quantize_k` for k-quants (``q4_k_m``, ...).

    Raises:
        BadRequestError: an unknown ``type``.
        PhikitError: as the two writers.
    """
    if type in TYPES:
        return requantize(src_path, out_path, type, progress=kw.get("progress", True))
    if type in K_QUANTS:
        return quantize_k(src_path, out_path, type, **kw)
    raise BadRequestError(f"unknown GGUF type {type!r}; use one of {', '.join((*TYPES, *K_QUANTS))}")
