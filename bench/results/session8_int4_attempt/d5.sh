python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
s=$(date +%s); timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_fast.py tests/test_fast_int4.py -W ignore -x > $OUT/gputests.log 2>&1; echo "tests rc=$? $(( $(date +%s) - s ))s"; grep -E "passed|failed|Error" $OUT/gputests.log | tail -n 5
b() { # tag env compile batches
  s=$(date +%s); env $2 timeout 150 python3 -m phikit bench --random-weights --backends fast --precisions fast:int4 --batches $4 --prompt-lengths 512 --max-tokens 128 --runs 3 --fast-compile $3 --out $OUT/$1 > $OUT/$1.log 2>&1
  echo "$1 rc=$? wall=$(( $(date +%s) - s ))s"; grep -E "^\| fast" $OUT/$1.log | head -4; tail -n 3 $OUT/$1.log | grep -i error
}
b int4_triton PHIKIT_FAST_INT4=triton auto 1,32
b int4_torchao PHIKIT_FAST_INT4=torchao auto 1
b int4_triton_layers PHIKIT_FAST_INT4=triton layers 1
rm -rf $OUT/*/bench.png $OUT/*/bench.json
