python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import torch,transformers,torchao;print(torch.__version__,transformers.__version__,torchao.__version__)"
b() { # tag mode precisions
  s=$(date +%s); timeout 240 python3 -m phikit bench --random-weights --backends fast --precisions $3 --batches 1 --prompt-lengths 512 --max-tokens 128 --runs 3 --fast-compile $2 --out $OUT/$1 > $OUT/$1.log 2>&1
  echo "$1 rc=$? wall=$(( $(date +%s) - s ))s"; grep -E "^\| fast" $OUT/$1/*.md 2>/dev/null | head -4; tail -3 $OUT/$1.log | grep -i error
}
b layers_cold layers bf16,fast:int4
b layers_warm layers bf16
b ops ops bf16
s=$(date +%s); timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_fast.py -k "graph_replay or lora or slots" > $OUT/tests.log 2>&1; echo "tests rc=$? $(( $(date +%s) - s ))s"; tail -3 $OUT/tests.log
