#!/usr/bin/env bash
# Issue 15: does a LoRA adapter keep its held-out recall through export, on each runtime?
#   bash bench/export_adapter_recall.sh ADAPTER_DIR [OUT_DIR]
# Scores examples/zorblax/heldout.jsonl (30 held-out paraphrases) with the adapter on transformers (peft),
# on llama.cpp (the default F16 GGUF + the adapter converted to a GGUF LoRA), and on an ONNX fp32 export
# with the adapter merged (onnxruntime-genai). Writes one JSON per runtime to OUT_DIR.
set -euo pipefail
adapter=${1:?usage: bash bench/export_adapter_recall.sh ADAPTER_DIR [OUT_DIR]}
out=${2:-bench/results/export_adapter_recall}
facts=examples/zorblax/heldout.jsonl
phikit=${PHIKIT:-.venv/bin/phikit}
mkdir -p "$out"
work=$(mktemp -d)
cp -r "$adapter" "$work/adapter"   # eval knowledge appends its checks to the adapter's manifest: work on a copy
for backend in ${BACKENDS:-llamacpp transformers}; do
  $phikit eval knowledge "$facts" --adapter "$work/adapter" --backend $backend --json > "$out/$backend.json" || true
done
$phikit export onnx --adapter "$work/adapter" --precision fp32 --out "$work/onnx" --no-parity
$phikit eval knowledge "$facts" --model "$work/onnx" --backend onnx --json > "$out/onnx-merged.json" || true
python3 - "$out" <<'PY'
import json, sys, pathlib
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text() or "{}")
    print(f.stem, {k: r.get(k) for k in ("recall_before", "recall_after", "recall", "before", "after") if k in r} or r)
PY
