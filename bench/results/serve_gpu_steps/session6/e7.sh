python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl-test/*.whl .whl-serve/*.whl .xfer3/*.whl 2>&1 | grep -v "already exists" | tail -2
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl-serve2/*.whl 2>&1 | tail -2
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site2:/tmp/site:$PWD/src
nvidia-smi --query-gpu=name --format=csv,noheader; nproc; python3 -c "import torch,transformers;print(torch.__version__,transformers.__version__)"
s=$(date +%s)
timeout 200 python3 bench/batcher_bench.py --random-weights /tmp/phi4r --emit-every 1,2,4 --mode events,tokens --json $OUT/batcher.json 2>&1 | grep -v Warning | tail -8
echo "batcher wall $(( $(date +%s) - s ))s"
run() { # tag args
  tag=$1; shift; s=$(date +%s)
  timeout 150 python3 bench/serve_bench.py --max-tokens 128 --levels 32,32 --requests 128 --parallel 32 --backend fast --random-weights /tmp/phi4r --modes batched --out /tmp/$tag.md --json $OUT/$tag.json "$@" 2>&1 | grep "clients\|Error" | sed "s/^/$tag /"
  echo "$tag wall $(( $(date +%s) - s ))s"
}
run e1_cp1
run e2_cp1 --emit-every 2
run e1_cp4 --client-processes 4
run e2_cp4 --client-processes 4 --emit-every 2
