python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-fast/*.whl 2>&1 | grep -v "already exists" | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader
s=$(date +%s); timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_fast.py tests/test_fast_slots.py tests/test_fast_model.py tests/test_fast_lora.py -W ignore > $OUT/gputests.log 2>&1; echo "tests rc=$? $(( $(date +%s) - s ))s"; tail -4 $OUT/gputests.log
s=$(date +%s); timeout 200 python3 -m phikit bench --random-weights --backends transformers,fast --precisions bf16,fast:int4 --batches 1,32 --prompt-lengths 512 --max-tokens 128 --runs 2 --out $OUT/default > $OUT/default.log 2>&1
echo "bench rc=$? wall=$(( $(date +%s) - s ))s"; grep -E "^\| (fast|transformers)" $OUT/default/*.md | head -10; tail -3 $OUT/default.log | grep -i error
