python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "from phikit.stand_in import save_random_phi4_mini as s; s('/tmp/phi4r', device='cuda')" > /dev/null 2>&1
q() { # tag setup side
  s=$(date +%s); timeout 90 python3 .devrun/with.py "$2" bench/lora_qlora.py --model-dir /tmp/phi4r --data .devrun/train_e34d18a.jsonl --only $3 --pack-tokens 2048 --batch 4 --warmup --steps 8 --json $OUT/qlora_$1.json > $OUT/qlora_$1.log 2>&1
  echo "qlora $1 rc=$? $(( $(date +%s) - s ))s"; grep -o '"peak_memory_mb": [0-9.]*\|"tokens_per_s": [0-9.]*\|"step_ms": [0-9.]*' $OUT/qlora_$1.json | tr '\n' ' '; echo
}
q phikit "pass" phikit
q plain "pass" plain
q phikit_chunk1024 "import phikit.tune.packing as P; P.chunked_lm_loss.__kwdefaults__['chunk'] = 1024" phikit
q phikit_again "pass" phikit
s=$(date +%s); timeout 80 python3 bench/qlora_memory.py --model-dir /tmp/phi4r --data .devrun/train_e34d18a.jsonl --pack-tokens 2048 --steps 4 --json $OUT/mem_default.json > $OUT/mem_default.log 2>&1; echo "mem rc=$? $(( $(date +%s) - s ))s"; grep -A10 "^prep=" $OUT/mem_default.log
