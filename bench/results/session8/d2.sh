python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; python3 -c "import torch,triton;print(torch.__version__,triton.__version__)"
s=$(date +%s); python3 -c "from phikit.stand_in import save_random_phi4_mini as s; s('/tmp/phi4r', device='cuda')" > /dev/null 2>&1; echo "stand-in $(( $(date +%s) - s ))s"
for prep in phikit peft; do
  for st in "" "--no-stacks"; do
    s=$(date +%s); timeout 100 python3 bench/qlora_memory.py --model-dir /tmp/phi4r --data .devrun/train_e34d18a.jsonl --pack-tokens 2048 --steps 4 --prep $prep $st --json $OUT/mem_$prep.json > $OUT/mem_$prep.log 2>&1
    rc=$?; echo "mem $prep $st rc=$rc $(( $(date +%s) - s ))s"; grep -A16 "^prep=" $OUT/mem_$prep.log; [ $rc = 0 ] && break; tail -n 2 $OUT/mem_$prep.log
  done
done
for side in phikit plain; do
  s=$(date +%s); timeout 120 python3 bench/lora_qlora.py --model-dir /tmp/phi4r --data .devrun/train_e34d18a.jsonl --only $side --pack-tokens 2048 --batch 4 --warmup --steps 8 --json $OUT/qlora_$side.json > $OUT/qlora_$side.log 2>&1
  echo "qlora $side rc=$? $(( $(date +%s) - s ))s"; grep -o '"peak_memory_mb": [0-9.]*\|"tokens_per_s": [0-9.]*\|"step_ms": [0-9.]*' $OUT/qlora_$side.json; tail -n 2 $OUT/qlora_$side.log | grep -i error
done
s=$(date +%s); timeout 230 python3 bench/gemv_probe.py --json $OUT/gemv.json > $OUT/gemv.log 2>&1; echo "gemv rc=$? $(( $(date +%s) - s ))s"; cat $OUT/gemv.log | grep -v Warn | tail -n 8
