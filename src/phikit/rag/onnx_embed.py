"""Query embeddings without torch: the sentence-transformers model exported once to ONNX, run with
onnxruntime and the ``tokenizers`` library.

Importing torch and sentence-transformers takes 5-10 s on a busy 2-core machine, far more than embedding
one query (~10 ms). ``kb add`` loads torch anyway, so it exports the embedder once
(:func:`export_onnx`, checked against sentence-transformers before it is kept) under phikit's cache dir,
keyed by the weights' sha256 and written atomically; ``kb search`` and ``ask --kb`` then embed queries with
:func:`load_query_embedder`, which never imports torch when the export exists.

Only the transformer runs in ONNX; pooling (mean or CLS, from ``1_Pooling/config.json``) and L2
normalization are numpy, as sentence-transformers does them.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import numpy as np

MIN_COSINE = 0.999  # an export must match sentence-transformers this closely to be used
_CHECK_TEXTS = ["How long is the warranty on the thermostat?",
                "Refunds are paid within 5 business days after the warehouse receives the return."]


def _weights(source: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (source / name).is_file():
            return source / name
    return None


def _pooling(source: Path) -> str | None:
    """``mean`` or ``cls`` from the model's pooling config (None: a pooling this module cannot do)."""
    try:
        cfg = json.loads((source / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return "mean"
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
    return {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(modes[0]) if len(modes) == 1 else None


def _max_tokens(source: Path) -> int:
    try:
        return int(json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError):
        return 256


def onnx_path(source: str | Path) -> Path | None:
    """Where the export of the sentence-transformers folder ``source`` lives (None: not exportable: no
    local weights, no ``tokenizer.json`` or an unsupported pooling)."""
    from ..cache import cache_root, cached_sha256

    source = Path(source)
    weights = _weights(source) if source.is_dir() else None
    if weights is None or not (source / "tokenizer.json").is_file() or _pooling(source) is None:
        return None
    return cache_root() / "onnx" / f"{source.name}-{cached_sha256(weights)[:16]}.onnx"


class OnnxEmbedder:
    """The same ``embed(texts) -> [n, dim]`` (float32, unit rows) as :class:`~.embed.Embedder`, on onnxruntime."""

    def __init__(self, name: str, source: Path, path: Path, threads: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.name, self.source = name, str(source)
        self.max_tokens = _max_tokens(source)
        self.pooling = _pooling(source)
        self.tok = Tokenizer.from_file(str(source / "tokenizer.json"))
        self.tok.enable_truncation(max_length=self.max_tokens)
        pad = self.tok.token_to_id("[PAD]")
        self.tok.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("PHIKIT_EMBED_THREADS", 0)) or threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def embed(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [self._batch(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def _batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(list(texts))
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
        hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]  # [b, t, dim]
        if self.pooling == "cls":
            vecs = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)  # [b, t, 1]
            vecs = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        return vecs / np.clip(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12, None)


def export_onnx(embedder) -> Path | None:
    """Export a loaded sentence-transformers :class:`~.embed.Embedder` once (torch is loaded anyway).

    The file is written to a temp name, checked against sentence-transformers on a few texts (cosine
    >= :data:`MIN_COSINE`) and only then renamed into place; an export that fails or does not match is
    dropped, and queries keep using sentence-transformers.

    Returns:
        The ONNX path, or None when the model cannot be exported.
    """
    path = onnx_path(embedder.source)
    if path is None or path.exists():
        return path
    try:
        import onnx  # noqa: F401 - torch's exporter writes the file with it
        import onnxruntime  # noqa: F401 - without it an export is useless
        import torch
    except ImportError:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        model = embedder.model[0].auto_model.eval()
        enc = embedder.model.tokenizer(["a b c", "one"], padding=True, return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
        axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"hidden": {0: "batch", 1: "tokens"}}

        class Hidden(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                return self.inner(**dict(zip(names, args))).last_hidden_state

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about constant branches; the check below decides
            torch.onnx.export(Hidden(model), tuple(enc[n] for n in names), str(tmp), input_names=names,
                              output_names=["hidden"], dynamic_axes=axes, opset_version=17, dynamo=False)
        got = OnnxEmbedder(embedder.name, Path(embedder.source), tmp).embed(_CHECK_TEXTS)
        want = embedder.embed(_CHECK_TEXTS)
        if float((got * want).sum(1).min()) < MIN_COSINE:
            return None
        os.replace(tmp, path)
        return path
    except Exception:  # noqa: BLE001 - an export is an optimization: any failure keeps the torch path
        return None
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=4)
def _load_onnx(name: str, source: str, path: str) -> OnnxEmbedder:
    return OnnxEmbedder(name, Path(source), Path(path))


def load_query_embedder(name_or_path: str | None = None):
    """An embedder for queries: the ONNX export when there is one (no torch import), else
    sentence-transformers (:func:`~.embed.load_embedder`), which is then exported for next time.

    ``$PHIKIT_EMBED_ONNX=0`` always uses sentence-transformers.

    Raises:
        PhikitError: the model cannot be found or loaded.
    """
    from .embed import load_embedder, resolve_model

    name, source = resolve_model(name_or_path)
    if os.environ.get("PHIKIT_EMBED_ONNX", "1") != "0":
        try:
            path = onnx_path(source)
            if path is not None and path.exists():
                return _load_onnx(name, source, str(path))
        except Exception:  # noqa: BLE001 - no onnxruntime or a damaged export: fall back to torch
            pass
    emb = load_embedder(name_or_path)
    if os.environ.get("PHIKIT_EMBED_ONNX", "1") != "0":
        export_onnx(emb)
    return emb
