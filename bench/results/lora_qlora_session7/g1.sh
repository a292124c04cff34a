python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
for c in 256 1024; do
  s=$(date +%s)
  timeout 100 python3 .devrun/with.py "import phikit.tune.packing as P; P.chunked_lm_loss.__kwdefaults__['chunk'] = $c" bench/lora_qlora.py --model-dir /tmp/phi4r --data .devrun/train_e34d18a.jsonl --only phikit --pack-tokens 2048 --warmup --steps 8 --json $OUT/qlora_chunk$c.json > $OUT/qlora_chunk$c.log 2>&1
  echo "chunk $c rc=$? wall $(( $(date +%s) - s ))s"; grep -o '"peak_memory_mb": [0-9.]*\|"tokens_per_s": [0-9.]*' $OUT/qlora_chunk$c.json | head -2
done
