python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep "Model name"
python3 -c "import torch,transformers,torchao,triton;print(torch.__version__,transformers.__version__,torchao.__version__,triton.__version__)"
b() { # tag gemv(1/0) backends batches
  s=$(date +%s); PHIKIT_FAST_GEMV=$2 timeout 200 python3 -m phikit bench --random-weights --backends $3 --precisions bf16 --batches $4 --prompt-lengths 512 --max-tokens 128 --runs 3 --out $OUT/$1 > $OUT/$1.log 2>&1
  echo "$1 rc=$? wall=$(( $(date +%s) - s ))s"; grep -E "^\| (fast|transformers)" $OUT/$1/*.md 2>/dev/null | head -4; tail -n 3 $OUT/$1.log | grep -i error
}
b gemv_on 1 transformers,fast 1,32
b gemv_off 0 fast 1
b gemv_on2 1 fast 1
s=$(date +%s); timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_fast.py tests/test_fast_slots.py tests/test_fast_model.py tests/test_fast_lora.py -W ignore > $OUT/gputests.log 2>&1; echo "tests rc=$? $(( $(date +%s) - s ))s"; tail -n 4 $OUT/gputests.log
python3 -c "from phikit.stand_in import save_random_phi4_mini as s; s('/tmp/phi4r', device='cuda')" > /dev/null 2>&1
s=$(date +%s); timeout 80 python3 .devrun/with.py "import phikit.tune.packing as P; P.chunked_lm_loss.__kwdefaults__['chunk'] = 256" bench/qlora_memory.py --model-dir /tmp/phi4r --data .devrun/train_e34d18a.jsonl --pack-tokens 2048 --steps 4 --json $OUT/mem_chunk256.json > $OUT/mem_chunk256.log 2>&1; echo "mem256 rc=$? $(( $(date +%s) - s ))s"; grep -A8 "^prep=" $OUT/mem_chunk256.log
s=$(date +%s); timeout 80 python3 .devrun/with.py "import phikit.tune.packing as P; P.chunked_lm_loss.__kwdefaults__['chunk'] = 256" bench/lora_qlora.py --model-dir /tmp/phi4r --data .devrun/train_e34d18a.jsonl --only phikit --pack-tokens 2048 --warmup --steps 8 --json $OUT/qlora_chunk256.json > $OUT/qlora_chunk256.log 2>&1; echo "qlora256 rc=$? $(( $(date +%s) - s ))s"; grep -o '"peak_memory_mb": [0-9.]*\|"tokens_per_s": [0-9.]*' $OUT/qlora_chunk256.json
