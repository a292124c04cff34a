python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import torch,transformers,peft,bitsandbytes;print(torch.__version__,transformers.__version__,peft.__version__,bitsandbytes.__version__)"
for side in phikit plain; do
  s=$(date +%s)
  if [ $side = phikit ]; then A="--pack-tokens 2048"; else A="--batch 4"; fi
  timeout 125 python3 bench/lora_qlora.py --model-dir /tmp/phi4r --data .devrun/train_e34d18a.jsonl --only $side $A --warmup --steps 12 --json $OUT/qlora_$side.json > $OUT/qlora_$side.log 2>&1
  echo "$side rc=$? wall $(( $(date +%s) - s ))s"; tail -2 $OUT/qlora_$side.log
done
