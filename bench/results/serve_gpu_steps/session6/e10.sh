python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-serve/*.whl .xfer3/*.whl 2>&1 | grep -v "already exists" | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl-serve2/*.whl 2>&1 | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site2:/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep "Model name"
s=$(date +%s)
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_fast.py tests/test_fast_slots.py tests/test_fast_model.py tests/test_fast_lora.py -W ignore 2>&1 | tail -6 | tee $OUT/gputests.log
echo "tests wall $(( $(date +%s) - s ))s"
s=$(date +%s)
timeout 390 python3 bench/serve_bench.py --max-tokens 128 --levels 1,4,16,32 --prefix-levels 1,4,16,32 --requests 64 --parallel 32 --backend fast --random-weights /tmp/phi4r --out $OUT/bench-serve-gpu.md --json $OUT/serve_bench_gpu.json 2>&1 | grep "clients\|Error\|wrote"
echo "bench wall $(( $(date +%s) - s ))s"
