python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
b() { s=$(date +%s); timeout 100 python3 -m phikit bench --random-weights --backends fast --precisions bf16 --batches 1 --prompt-lengths 512 --max-tokens 128 --runs 3 --out $OUT/$1 > $OUT/$1.log 2>&1; echo "$1 rc=$? wall=$(( $(date +%s) - s ))s"; grep -E "^\| fast" $OUT/$1.log | head -2; tail -n 3 $OUT/$1.log | grep -i error; }
b cold
b warm
s=$(date +%s); timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_fast.py tests/test_fast_model.py tests/test_fast_slots.py tests/test_fast_lora.py -W ignore > $OUT/gputests.log 2>&1; echo "tests rc=$? $(( $(date +%s) - s ))s"; grep -E "passed|failed|^E " $OUT/gputests.log | tail -n 5
rm -rf $OUT/*/bench.png $OUT/*/bench.json
