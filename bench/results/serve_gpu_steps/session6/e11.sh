python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-serve/*.whl .xfer3/*.whl 2>&1 | grep -v "already exists" | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl-serve2/*.whl 2>&1 | tail -2
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; lscpu | grep "Model name"
s=$(date +%s)
PYTHONPATH=/tmp/site2:/tmp/site:$PWD/src timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_fast.py tests/test_fast_slots.py tests/test_fast_lora.py -W ignore 2>&1 | tail -6 | tee $OUT/gputests.log
echo "tests wall $(( $(date +%s) - s ))s"
S="--max-tokens 128 --levels 32,32 --requests 128 --parallel 32 --backend fast --random-weights /tmp/phi4r --modes batched"
for v in new old new2; do
  case $v in old) P=$PWD/.devrun/old6/src;; *) P=$PWD/src;; esac
  s=$(date +%s)
  PYTHONPATH=/tmp/site2:/tmp/site:$P timeout 100 python3 bench/serve_bench.py $S --out /tmp/$v.md --json $OUT/serve_$v.json 2>&1 | grep "clients\|Error" | sed "s/^/$v /"
  echo "$v wall $(( $(date +%s) - s ))s"
done
